"""Mask search under FLOPs and latency budgets."""

from __future__ import annotations

import itertools

import pytest
import torch

from nn_prune_ext import StructureMasks, collect_mask_gradients, model_flops, prune_with_masks
from nn_prune_ext.flops import LayerShape
from nn_prune_ext.posttrain.costs import FlopsCost, LatencyCost, PiecewiseLinear
from nn_prune_ext.posttrain.search import SearchResult, masks_cost, search_masks
from nn_prune_ext.posttrain.units import PruningUnits, UnitGradients
from nn_prune_ext.validation import InputError, NonFiniteError

from conftest import GQA_TYPES, labelled_batches, tiny_model

SEQ = 12


def _fisher(model, granularity="head"):
    structure = PruningUnits.for_model(model, granularity)
    batches = labelled_batches(model_type=model.config.model_type)
    gradients = UnitGradients.from_gradients(collect_mask_gradients(model, batches), structure)
    heads, units = gradients.fisher()
    return structure, heads, units


@pytest.mark.parametrize("granularity", ["head", "group"])
def test_flops_budget_holds_exactly_on_the_slim_model(model_type, granularity):
    model = tiny_model(model_type)
    structure, heads, units = _fisher(model, granularity)
    cost = FlopsCost(structure.shapes, SEQ)
    for fraction in (0.0, 0.25, 0.6, 1.0):
        budget = fraction * model_flops(model, SEQ)
        result = search_masks(heads, units, structure, cost, budget)
        slim_flops = model_flops(prune_with_masks(model, result.masks), SEQ)
        assert slim_flops == result.cost <= budget
        if sum(result.masks.kept_units()) < sum(u.numel() for u in units):
            # Nothing that fits is left out: the unspent budget is less than one more FFN unit.
            assert budget - result.cost < cost.ffn_unit_cost(0)
        if fraction == 1.0:
            assert result.masks.kept_heads() == [s.num_heads for s in structure.shapes]
        if fraction == 0.0:
            assert result.masks.kept_heads() == [0, 0] and result.masks.kept_units() == [0, 0]
        if granularity == "group" and model_type in GQA_TYPES:
            for mask in result.masks.heads:  # whole key/value groups of 2 query heads
                assert torch.equal(mask[0::2], mask[1::2])


def _brute_force(heads, units, structure, cost, budget):
    """The best importance over every head subset, each with the best FFN units that fit."""
    best = -1.0
    head_entries = [(l, i) for l in range(len(heads)) for i in range(heads[l].numel())]
    unit_costs = cost.ffn_unit_cost(0)
    ranked_units = sorted((float(v) for u in units for v in u), reverse=True)
    for keep in itertools.product([False, True], repeat=len(head_entries)):
        kept = [torch.zeros(h.numel(), dtype=torch.bool) for h in heads]
        for flag, (l, i) in zip(keep, head_entries):
            kept[l][i] = flag
        attention = sum(cost.attention(l, structure.kept_per_group(l, kept[l])) for l in range(len(heads)))
        if attention > budget:
            continue
        count = int((budget - attention) // unit_costs)
        value = sum(float(heads[l][i]) for flag, (l, i) in zip(keep, head_entries) if flag) + sum(ranked_units[:count])
        best = max(best, value)
    return best


@pytest.mark.parametrize("seed", range(4))
def test_search_finds_the_best_split_between_heads_and_units(seed):
    """With the FLOPs cost (additive without GQA) the search is exact: compare with brute force."""
    generator = torch.Generator().manual_seed(seed)
    shapes = (LayerShape(hidden=8, num_heads=3, num_kv_heads=3, head_dim=4, ffn_width=10),) * 2
    structure = PruningUnits(shapes=shapes)
    cost = FlopsCost(shapes, seq_len=5)
    heads = [torch.rand(3, generator=generator) * 3 for _ in range(2)]
    units = [torch.rand(10, generator=generator) for _ in range(2)]
    dense = sum(cost.attention(l, [1, 1, 1]) + cost.ffn(l, 10) for l in range(2))
    for fraction in (0.2, 0.45, 0.7):
        result = search_masks(heads, units, structure, cost, fraction * dense)
        assert result.importance == pytest.approx(_brute_force(heads, units, structure, cost, fraction * dense))
        assert masks_cost(result.masks, structure, cost) == result.cost <= fraction * dense


def test_latency_budget_holds():
    shapes = (LayerShape(hidden=8, num_heads=4, num_kv_heads=4, head_dim=2, ffn_width=50),) * 3
    structure = PruningUnits(shapes=shapes)
    # Flat up to 2 heads / 20 units, then linear: the first unit of a layer is the expensive one.
    cost = LatencyCost(PiecewiseLinear((2, 4), (1.0, 2.0)), PiecewiseLinear((20, 50), (0.6, 1.5)))
    generator = torch.Generator().manual_seed(0)
    heads = [torch.rand(4, generator=generator) for _ in range(3)]
    units = [torch.rand(50, generator=generator) / 10 for _ in range(3)]
    dense = masks_cost(
        search_masks(heads, units, structure, cost, 1e9).masks, structure, cost
    )
    assert dense == pytest.approx(3 * (2.0 + 1.5))
    for fraction in (0.3, 0.5, 0.8):
        result = search_masks(heads, units, structure, cost, fraction * dense)
        assert masks_cost(result.masks, structure, cost) == pytest.approx(result.cost)
        assert result.cost <= fraction * dense + 1e-12
        # Within a flat region a unit is free: no layer stops at a width below 20 once it has a unit.
        for width in result.masks.kept_units():
            assert width == 0 or width >= 20


def test_search_errors():
    shapes = (LayerShape(hidden=8, num_heads=2, num_kv_heads=2, head_dim=4, ffn_width=4),)
    structure = PruningUnits(shapes=shapes)
    cost = FlopsCost(shapes, seq_len=3)
    with pytest.raises(InputError, match=r"budget=\.\.\.\) must be a finite real number >= 0, got -1.0"):
        search_masks([torch.ones(2)], [torch.ones(4)], structure, cost, -1.0)
    with pytest.raises(ValueError, match="Layer 0 has 2 attention units but 3 importances"):
        search_masks([torch.ones(3)], [torch.ones(4)], structure, cost, 10.0)
    with pytest.raises(ValueError, match="Layer 0 has 4 FFN units but 5 FFN importances"):
        search_masks([torch.ones(2)], [torch.ones(5)], structure, cost, 10.0)
    with pytest.raises(ValueError, match="granularity='row' is not one of head, group"):
        PruningUnits(shapes=shapes, granularity="row")


def _one_layer():
    shapes = (LayerShape(hidden=8, num_heads=2, num_kv_heads=2, head_dim=4, ffn_width=4),)
    return PruningUnits(shapes=shapes), FlopsCost(shapes, seq_len=3)


@pytest.mark.parametrize("budget", [float("nan"), float("inf"), "100", True])
def test_search_refuses_a_budget_that_is_no_finite_number(budget):
    """Issue 13: a NaN budget compared false with every cost, and the search returned masks anyway."""
    structure, cost = _one_layer()
    with pytest.raises(InputError, match=rf"search_masks\(budget=\.\.\.\) must be a finite real number >= 0, got {budget!r}"):
        search_masks([torch.ones(2)], [torch.ones(4)], structure, cost, budget)


@pytest.mark.parametrize("kind", ["attention", "FFN"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_search_refuses_non_finite_importances(kind, bad):
    """Issue 13: a NaN importance ranked anywhere, an infinite one kept its unit whatever it cost."""
    structure, cost = _one_layer()
    heads, units = [torch.ones(2)], [torch.ones(4)]
    (heads if kind == "attention" else units)[0][1] = bad
    with pytest.raises(NonFiniteError, match=f"Layer 0's {kind} importances hold NaN or infinite values"):
        search_masks(heads, units, structure, cost, 1e6)


class _NanAttentionCost(FlopsCost):
    def attention(self, layer, kept_per_group):
        return float("nan") if sum(kept_per_group) == 1 else super().attention(layer, kept_per_group)


def test_search_refuses_a_non_finite_cost():
    """A NaN cost is never above the budget: the search would take that size for free."""
    structure, cost = _one_layer()
    nan_cost = _NanAttentionCost(cost.shapes, seq_len=3)
    with pytest.raises(NonFiniteError, match="gives nan for the attention keeping the 1 most important units"):
        search_masks([torch.ones(2)], [torch.ones(4)], structure, nan_cost, 1e6)


def test_search_result_states_what_its_share_is_of():
    """Issue 15: the share was printed as "of dense" also when the input was a slim model."""
    masks = StructureMasks(heads=[torch.tensor([1.0, 0.0])], units=[torch.tensor([1.0, 1.0, 0.0])])
    head = "kept heads per layer [1], FFN units per layer [2]; cost 300 of budget 320"
    dense = SearchResult(masks, cost=300.0, budget=320.0, dense_cost=500.0, importance=1.0, dense_model_cost=500.0)
    assert str(dense) == f"{head} (60.0% of the dense model)"
    slim = SearchResult(masks, cost=300.0, budget=320.0, dense_cost=500.0, importance=1.0, dense_model_cost=1200.0)
    assert str(slim) == f"{head} (60.0% of the input model, 25.0% of the dense model)"
    unknown = SearchResult(masks, cost=300.0, budget=320.0, dense_cost=500.0, importance=1.0)
    assert str(unknown) == f"{head} (60.0% of the input model)"
    assert str(SearchResult(masks, cost=0.0, budget=0.0, dense_cost=0.0, importance=0.0)).endswith("of budget 0")
