"""nn_prune_ext: structured pruning of Hugging Face transformers while fine-tuning.

The public names are imported on first use (PEP 562 `__getattr__`): `import nn_prune_ext` loads
neither torch nor transformers, which takes seconds, so that `nn-prune --help` and a mistyped flag
answer at once. `from nn_prune_ext import SparseTrainer`, `nn_prune_ext.SparseTrainer`, `import *`
and `dir(nn_prune_ext)` work as with an eager package; an error inside a submodule surfaces, with
its traceback, where the first name it defines is used.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import TYPE_CHECKING, Any

from .dependencies import check_installed as _check_installed

# Reads the installed releases' metadata, not torch itself: an unsupported release gets one clear
# message at import, before anything uses torch or transformers.
_check_installed()

__version__ = "0.1.0"

# Submodule -> the public names it defines. `__getattr__` imports a submodule when one of its names
# is first used; the `TYPE_CHECKING` imports below say the same for type checkers and editors.
_SUBMODULE_EXPORTS: dict[str, tuple[str, ...]] = {
    "args": ("SparseArgs",),
    "flops": ("model_flops",),
    "heal": ("HealResult", "HealRound", "prune_and_heal"),
    "importance": (
        "MaskGradients",
        "MaskImportance",
        "apply_masks",
        "collect_mask_gradients",
        "fisher_importance",
        "magnitude_importance",
        "taylor_importance",
    ),
    "inference": ("CapturedModel", "CaptureError", "CaptureMismatchError", "capture_for_inference"),
    "importance_pruning": ("ImportancePruningArgs", "importance_masks", "prune_by_importance"),
    "arch": (
        "ArchitectureLayout",
        "UnsupportedArchitectureError",
        "get_layout",
        "register_layout",
        "supported_model_types",
    ),
    "masks": ("StructureMasks", "fold_masks", "masks_from_scores"),
    "optim": ("ScoreOptimizer",),
    "patch": ("bake_model", "densities", "is_patched", "iter_mask_scores", "patch_model", "set_thresholds"),
    "posttrain": (
        "LatencyTable",
        "LayerPruningResult",
        "PostTrainingArgs",
        "PostTrainingResult",
        "measure_latency_table",
        "post_training_prune",
        "prune_layers",
    ),
    "schedule": ("SparsitySchedule",),
    "speed": ("SpeedModel", "calibrate_speed_model"),
    "scores": ("MaskedLinear", "MaskScores"),
    "slim": ("SlimMismatchError", "SlimReport", "drop_layers", "load_slim", "optimize_model", "prune_with_masks"),
    "summary": ("LayerSummary", "ModelSummary", "summary"),
    "timing": ("LatencyComparison", "LatencyStats", "compare_latency", "inference_time"),
    "trainer": ("SparseTrainer", "SparsityController"),
    "validation": ("InputError", "NonFiniteError"),
    "work": ("LayerWork", "model_work"),
}
_EXPORTS: dict[str, str] = {name: module for module, names in _SUBMODULE_EXPORTS.items() for name in names}

if TYPE_CHECKING:
    from .args import SparseArgs
    from .arch import (
        ArchitectureLayout,
        UnsupportedArchitectureError,
        get_layout,
        register_layout,
        supported_model_types,
    )
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
    from .importance_pruning import ImportancePruningArgs, importance_masks, prune_by_importance
    from .inference import CapturedModel, CaptureError, CaptureMismatchError, capture_for_inference
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
    from .scores import MaskedLinear, MaskScores
    from .slim import SlimMismatchError, SlimReport, drop_layers, load_slim, optimize_model, prune_with_masks
    from .speed import SpeedModel, calibrate_speed_model
    from .summary import LayerSummary, ModelSummary, summary
    from .timing import LatencyComparison, LatencyStats, compare_latency, inference_time
    from .trainer import SparseTrainer, SparsityController
    from .validation import InputError, NonFiniteError
    from .work import LayerWork, model_work

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


def __getattr__(name: str) -> Any:
    """Import the submodule that defines public name `name` and return the name (PEP 562).

    Also imports a submodule asked for by attribute (`nn_prune_ext.trainer`), which the eager
    package had imported. Exceptions raised while the submodule is imported propagate unchanged.

    Raises:
        AttributeError: For a name that is neither public nor a submodule.
    """
    module_name = _EXPORTS.get(name)
    if module_name is not None:
        value = getattr(importlib.import_module(f".{module_name}", __name__), name)
        globals()[name] = value  # resolved once: later uses do not come back here
        return value
    # `isidentifier`: find_spec of "a.b" would import a parent `a`, and getattr(package, "a.b", None) must not raise.
    if name.isidentifier() and not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """The package's module type: importing a submodule never hides the public name it shares.

    The import system sets `nn_prune_ext.summary` to the submodule `nn_prune_ext.summary` once that
    is imported (by `nn-prune report`, say). The package exports the function `summary` under that
    name, as the eager package did, so the function is stored instead of the submodule.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if (
            isinstance(value, types.ModuleType)
            and _EXPORTS.get(name) == name
            and value.__name__ == f"{self.__name__}.{name}"
        ):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
