"""Slimming: physically remove pruned heads and FFN units, and save Hub-ready slim checkpoints."""

from .classes import load_slim, slim_class_for
from .optimize import LayerReport, SlimReport, optimize_model

__all__ = ["optimize_model", "SlimReport", "LayerReport", "load_slim", "slim_class_for"]
