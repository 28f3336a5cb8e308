"""FLOPs and latency cost models of post-training pruning."""

from __future__ import annotations

import pytest
import torch

from nn_prune_ext import StructureMasks, model_flops, prune_with_masks
from nn_prune_ext.flops import LayerShape, layer_macs
from nn_prune_ext.posttrain.costs import FlopsCost, LatencyCost, PiecewiseLinear
from nn_prune_ext.posttrain.search import dense_cost, masks_cost
from nn_prune_ext.posttrain.units import PruningUnits
from nn_prune_ext.slim.structure import slim_attention_sizes
from nn_prune_ext.validation import InputError, NonFiniteError

from conftest import HEADS, INTERMEDIATE, tiny_model

SEQ = 12


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flops_cost_is_the_slim_models_flops(model_type, seed):
    """Random masks (unequal heads per key/value group under GQA): the cost is exactly what slimming gives."""
    model = tiny_model(model_type)
    generator = torch.Generator().manual_seed(seed)
    masks = StructureMasks(
        heads=[(torch.rand(HEADS, generator=generator) > 0.4).float() for _ in range(2)],
        units=[(torch.rand(INTERMEDIATE, generator=generator) > 0.5).float() for _ in range(2)],
    )
    structure = PruningUnits.for_model(model)
    cost = FlopsCost(shapes=structure.shapes, seq_len=SEQ)
    assert masks_cost(masks, structure, cost) == model_flops(prune_with_masks(model, masks), SEQ)
    assert masks_cost(StructureMasks.ones(model), structure, cost) == model_flops(model, SEQ)


def test_flops_cost_counts_cross_attention_and_a_fixed_ffn_once():
    """A decoder layer's cross-attention (never pruned) belongs to its attention cost alone, a fixed FFN's
    MACs to its FFN cost alone: the dense cost is `model_flops`, and an FFN unit costs the same in every layer.
    (Issue 15: the FFN cost counted the cross-attention too, so an encoder-decoder's budget was a share of
    an inflated dense cost and the slim model kept 72% of the FLOPs at a budget of 0.6.)"""
    encoder = LayerShape(hidden=64, num_heads=4, num_kv_heads=4, head_dim=16, ffn_width=128)
    decoder = LayerShape(hidden=64, num_heads=4, num_kv_heads=4, head_dim=16, ffn_width=128, cross_heads=4,
                         cross_kv_heads=4)
    shapes = (encoder, encoder, decoder, decoder)
    cost = FlopsCost(shapes=shapes, seq_len=SEQ)
    assert dense_cost(PruningUnits(shapes), cost) == model_flops(list(shapes), SEQ) == 2 * (
        2 * layer_macs(encoder, SEQ) + 2 * layer_macs(decoder, SEQ))
    assert cost.ffn(2, 0) == 0.0 and cost.ffn(2, 10) == cost.ffn(0, 10) == 10 * cost.ffn_unit_cost(2)
    assert cost.ffn_unit_cost(2) == cost.ffn_unit_cost(0) == 2.0 * SEQ * 64 * 2
    cross_only = 2.0 * SEQ * (64 * 16 * 16 + 2 * 4 * 16 * SEQ)  # a decoder layer without heads keeps its cross-attention
    assert cost.attention(2, [0, 0, 0, 0]) == cross_only and cost.attention(0, [0, 0, 0, 0]) == 0.0
    experts = LayerShape(hidden=64, num_heads=4, num_kv_heads=4, head_dim=16, ffn_width=0, fixed_ffn_macs=5000)
    fixed = FlopsCost(shapes=(experts,), seq_len=SEQ)
    assert fixed.attention(0, [1, 1, 1, 1]) + fixed.ffn(0, 0) == model_flops([experts], SEQ)
    assert fixed.ffn(0, 0) == 2.0 * SEQ * 5000 and fixed.ffn_unit_cost(0) is None


@pytest.mark.parametrize(
    "kept, expected",
    [([2, 2], (4, 2)), ([1, 0], (1, 1)), ([0, 0], (0, 0)), ([2, 1], (4, 2)), ([3, 1, 1, 1], (6, 6)), ([4, 4, 1], (12, 3))],
)
def test_slim_attention_sizes(kept, expected):
    assert slim_attention_sizes(kept) == expected


def test_piecewise_linear():
    curve = PiecewiseLinear(points=(2, 4), values=(1.0, 3.0))
    assert [curve(n) for n in (0, 1, 2, 3, 4, 6)] == [0.0, 1.0, 1.0, 2.0, 3.0, 5.0]
    assert PiecewiseLinear(points=(1,), values=(2.0,))(7) == 2.0
    with pytest.raises(ValueError, match="increasing"):
        PiecewiseLinear(points=(3, 2), values=(1.0, 2.0))


def test_latency_cost_uses_slim_head_count():
    cost = LatencyCost(PiecewiseLinear((1, 4), (1.0, 4.0)), PiecewiseLinear((1, 10), (0.5, 5.0)))
    assert cost.attention(0, [2, 1]) == 4.0  # padded to 2 groups of 2 heads
    assert cost.attention(0, [0, 0]) == 0.0
    assert cost.ffn(0, 10) == 5.0 and cost.ffn(0, 0) == 0.0
    assert cost.ffn_unit_cost(0) is None


@pytest.mark.parametrize("seq_len", [0, 2.5, True, "12"])
def test_flops_cost_rejects_bad_length(seq_len):
    with pytest.raises(InputError, match=rf"FlopsCost.seq_len must be a whole number >= 1, got {seq_len!r}"):
        FlopsCost(shapes=(), seq_len=seq_len)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_piecewise_linear_refuses_non_finite_values(bad):
    """Issue 13: a NaN cost compared false with every budget, so the search took that size for free."""
    with pytest.raises(NonFiniteError, match=f"values must be finite, got {bad} at count 4"):
        PiecewiseLinear(points=(2, 4), values=(1.0, bad))
    with pytest.raises(InputError, match=r"values must be numbers, got '3' at count 4"):
        PiecewiseLinear(points=(2, 4), values=(1.0, "3"))
    with pytest.raises(InputError, match=r"points \(\(1, 2.5\)\) must be a whole number >= 1, got 2.5"):
        PiecewiseLinear(points=(1, 2.5), values=(1.0, 2.0))
