"""nn_prune_ext: structured pruning of Hugging Face transformers while fine-tuning."""

from .dependencies import check_installed as _check_installed

_check_installed()  # before torch and transformers are used: an unsupported release gets one clear message

from .args import SparseArgs
from .flops import model_flops
from .heal import HealResult, HealRound, prune_and_heal
from .importance import (
    MaskGradients,
    MaskImportance,
    apply_masks,
    collect_mask_gradients,
    fisher_importance,
    magnitude_importance,
    taylor_importance,
)
from .inference import CapturedModel, CaptureError, CaptureMismatchError, capture_for_inference
from .importance_pruning import ImportancePruningArgs, importance_masks, prune_by_importance
from .arch import (
    ArchitectureLayout,
    UnsupportedArchitectureError,
    get_layout,
    register_layout,
    supported_model_types,
)
from .masks import StructureMasks, fold_masks, masks_from_scores
from .optim import ScoreOptimizer
from .patch import bake_model, densities, is_patched, iter_mask_scores, patch_model, set_thresholds
from .posttrain import (
    LatencyTable,
    LayerPruningResult,
    PostTrainingArgs,
    PostTrainingResult,
    measure_latency_table,
    post_training_prune,
    prune_layers,
)
from .schedule import SparsitySchedule
from .speed import SpeedModel, calibrate_speed_model
from .scores import MaskedLinear, MaskScores
from .slim import SlimMismatchError, SlimReport, drop_layers, load_slim, optimize_model, prune_with_masks
from .summary import LayerSummary, ModelSummary, summary
from .timing import LatencyComparison, LatencyStats, compare_latency, inference_time
from .trainer import SparseTrainer, SparsityController
from .validation import InputError, NonFiniteError
from .work import LayerWork, model_work

__version__ = "0.1.0"

__all__ = [
    "SparseArgs",
    "InputError",
    "prune_and_heal",
    "HealResult",
    "HealRound",
    "NonFiniteError",
    "SparseTrainer",
    "SparsityController",
    "SparsitySchedule",
    "ScoreOptimizer",
    "ArchitectureLayout",
    "UnsupportedArchitectureError",
    "register_layout",
    "get_layout",
    "supported_model_types",
    "patch_model",
    "bake_model",
    "is_patched",
    "densities",
    "set_thresholds",
    "iter_mask_scores",
    "MaskedLinear",
    "MaskScores",
    "optimize_model",
    "SlimReport",
    "SlimMismatchError",
    "load_slim",
    "model_flops",
    "model_work",
    "LayerWork",
    "SpeedModel",
    "calibrate_speed_model",
    "apply_masks",
    "collect_mask_gradients",
    "taylor_importance",
    "fisher_importance",
    "MaskGradients",
    "MaskImportance",
    "inference_time",
    "capture_for_inference",
    "CapturedModel",
    "CaptureError",
    "CaptureMismatchError",
    "compare_latency",
    "LatencyStats",
    "LatencyComparison",
    "StructureMasks",
    "fold_masks",
    "masks_from_scores",
    "prune_with_masks",
    "magnitude_importance",
    "PostTrainingArgs",
    "PostTrainingResult",
    "post_training_prune",
    "LatencyTable",
    "measure_latency_table",
    "ImportancePruningArgs",
    "importance_masks",
    "prune_by_importance",
    "prune_layers",
    "LayerPruningResult",
    "drop_layers",
    "summary",
    "ModelSummary",
    "LayerSummary",
]
