"""Attention units and their per-batch gradients (nn_prune_ext.posttrain.units)."""

from __future__ import annotations

import pytest
import torch

from nn_prune_ext.posttrain.units import UnitGradients


def test_fisher_of_large_finite_gradients_is_finite():
    """Issue 13: 1e20 is a finite float32, but its square overflowed to inf in a float32 sum."""
    gradients = UnitGradients(
        heads=[torch.tensor([[1e20, 2.0], [1e20, 1.0]])],
        units=[torch.tensor([[3.0, -1e20, 0.0]])],
    )
    heads, units = gradients.fisher()
    assert heads[0].dtype == torch.float64 and units[0].dtype == torch.float64
    assert heads[0].tolist() == pytest.approx([2e40, 5.0], rel=1e-6)  # 1e20 is not exact in float32
    assert units[0].tolist() == pytest.approx([9.0, 1e40, 0.0], rel=1e-6)
