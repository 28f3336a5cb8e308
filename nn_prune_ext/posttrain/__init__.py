"""Post-training structured pruning: prune a fine-tuned model without retraining.

Kwon et al. (2022), "A Fast Post-Training Pruning Framework for Transformers": Fisher information
of head and FFN-unit masks, a mask search under a FLOPs or latency budget, mask rearrangement
inside each layer, and mask tuning by least squares; and greedy layer pruning. Every method ends
in `nn_prune_ext.StructureMasks` (or dropped layers) and the same `optimize_model`.
"""

from .costs import CostModel, FlopsCost, LatencyCost, PiecewiseLinear
from .layer_pruning import LayerPruningResult, LayerPruningStep, prune_layers
from .latency import LatencyTable, fit_monotone, measure_latency_table
from .prune import PostTrainingArgs, PostTrainingResult, mean_sequence_length, post_training_prune, with_labels
from .rearrange import rearrange_layer, rearrange_masks, removal_loss
from .search import SearchResult, dense_cost, masks_cost, search_masks
from .tune import SublayerTuning, TuningResult, tune_masks
from .units import PruningUnits, UnitGradients

__all__ = [
    "PostTrainingArgs",
    "PostTrainingResult",
    "post_training_prune",
    "mean_sequence_length",
    "with_labels",
    "PruningUnits",
    "UnitGradients",
    "CostModel",
    "FlopsCost",
    "LatencyCost",
    "PiecewiseLinear",
    "LatencyTable",
    "measure_latency_table",
    "fit_monotone",
    "SearchResult",
    "search_masks",
    "masks_cost",
    "dense_cost",
    "rearrange_masks",
    "rearrange_layer",
    "removal_loss",
    "tune_masks",
    "TuningResult",
    "SublayerTuning",
    "prune_layers",
    "LayerPruningResult",
    "LayerPruningStep",
]
