"""Scores, pruning methods and masked linears."""

from .masked_linear import MaskedLinear, MaskScores, apply_grid_mask, masked_linear
from .methods import PRUNING_METHODS, PruningMethod, get_pruning_method

__all__ = [
    "MaskedLinear",
    "MaskScores",
    "apply_grid_mask",
    "masked_linear",
    "PRUNING_METHODS",
    "PruningMethod",
    "get_pruning_method",
]
