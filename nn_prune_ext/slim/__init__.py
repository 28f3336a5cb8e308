"""Slimming: physically remove pruned heads, FFN units and layers, and save Hub-ready slim checkpoints."""

from . import modeling_slim
from .classes import load_slim, slim_class_for
from .layers import drop_layers
from .model_card import record_measured_speedup, write_model_card
from .optimize import LayerReport, SlimReport, is_slim_model, kept_head_indices, optimize_model, prune_with_masks
from .verify import SlimMismatchError

if write_model_card not in modeling_slim.SAVE_HOOKS:
    modeling_slim.SAVE_HOOKS.append(write_model_card)

__all__ = [
    "optimize_model",
    "prune_with_masks",
    "SlimReport",
    "LayerReport",
    "SlimMismatchError",
    "drop_layers",
    "is_slim_model",
    "kept_head_indices",
    "load_slim",
    "slim_class_for",
    "write_model_card",
    "record_measured_speedup",
]
