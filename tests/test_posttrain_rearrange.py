"""Mask rearrangement: same counts, never a worse Fisher estimate of the loss."""

from __future__ import annotations

import pytest
import torch

from nn_prune_ext import StructureMasks, collect_mask_gradients, model_flops, prune_with_masks
from nn_prune_ext.posttrain.costs import FlopsCost
from nn_prune_ext.posttrain.rearrange import rearrange_layer, rearrange_masks, removal_loss
from nn_prune_ext.posttrain.search import search_masks
from nn_prune_ext.posttrain.units import PruningUnits, UnitGradients
from nn_prune_ext.validation import InputError, NonFiniteError

from conftest import GQA_TYPES, labelled_batches, tiny_model


@pytest.mark.parametrize("seed", range(10))
def test_rearrange_layer_never_raises_the_loss_estimate(seed):
    generator = torch.Generator().manual_seed(seed)
    entries, batches = 9, 5
    gradients = torch.randn(batches, entries, generator=generator)
    removed = torch.zeros(entries, dtype=torch.bool)
    removed[torch.randperm(entries, generator=generator)[: 1 + seed % 7]] = True
    result = rearrange_layer(removed, gradients)
    assert int(result.sum()) == int(removed.sum())
    assert removal_loss(result, gradients) <= removal_loss(removed, gradients) + 1e-12


def test_rearrange_swaps_in_a_cancelling_head():
    """A kept head whose gradient cancels the removed heads' is better removed than one of them."""
    gradients = torch.tensor([[-0.6, 3.0, 0.5, 0.5], [0.0, 3.0, 0.0, 0.0]])
    removed = torch.tensor([False, False, True, True])  # the two smallest by diagonal Fisher
    result = rearrange_layer(removed, gradients)
    assert result.tolist() == [True, False, False, True]
    assert removal_loss(result, gradients) == pytest.approx(0.5 * 0.1**2)
    assert removal_loss(removed, gradients) == pytest.approx(0.5)


def test_partitions_keep_counts_per_partition():
    generator = torch.Generator().manual_seed(0)
    gradients = torch.randn(6, 8, generator=generator)
    removed = torch.tensor([True, False, False, False, True, True, False, False])
    partitions = [[0, 1, 2, 3], [4, 5, 6, 7]]
    result = rearrange_layer(removed, gradients, partitions)
    assert int(result[:4].sum()) == 1 and int(result[4:].sum()) == 2
    assert removal_loss(result, gradients) <= removal_loss(removed, gradients)


@pytest.mark.parametrize("granularity", ["head", "group"])
def test_rearranged_masks_keep_sizes_and_cost(model_type, granularity):
    model = tiny_model(model_type)
    structure = PruningUnits.for_model(model, granularity)
    gradients = UnitGradients.from_gradients(collect_mask_gradients(model, labelled_batches(6, model_type=model_type)), structure)
    heads, units = gradients.fisher()
    cost = FlopsCost(structure.shapes, seq_len=12)
    searched = search_masks(heads, units, structure, cost, 0.5 * model_flops(model, 12)).masks
    rearranged = rearrange_masks(searched, gradients, structure)
    assert rearranged.kept_heads() == searched.kept_heads()
    assert rearranged.kept_units() == searched.kept_units()
    for layer in range(structure.num_layers):
        before = structure.kept_per_group(layer, structure.kept_units(layer, searched.heads[layer]))
        after = structure.kept_per_group(layer, structure.kept_units(layer, rearranged.heads[layer]))
        if granularity == "head" and model_type in GQA_TYPES:
            assert after == before  # heads moved only within their key/value group
        for kind, old, new, grads in (
            ("heads", searched.heads[layer], rearranged.heads[layer], gradients.heads[layer]),
            ("units", searched.units[layer], rearranged.units[layer], gradients.units[layer]),
        ):
            if kind == "heads":
                old = structure.kept_units(layer, old)
                new = structure.kept_units(layer, new)
            assert removal_loss(new == 0, grads) <= removal_loss(old == 0, grads) + 1e-15
    assert model_flops(prune_with_masks(model, rearranged), 12) == model_flops(prune_with_masks(model, searched), 12)


def test_rearrange_masks_of_a_slim_model_with_a_layer_without_heads_or_units(model_type):
    """A slim model whose layer 0 lost every head and layer 1 every FFN unit (issue 15: `~kept` raised a
    TypeError, because `kept_units` of a layer without heads was an empty float tensor)."""
    dense = tiny_model(model_type)
    cut = StructureMasks.ones(dense)
    cut.heads[0].zero_()
    cut.units[1].zero_()
    slim = prune_with_masks(dense, cut)
    structure = PruningUnits.for_model(slim)
    assert [shape.num_heads for shape in structure.shapes][0] == 0
    assert [shape.ffn_width for shape in structure.shapes][1] == 0
    kept = structure.kept_units(0, torch.zeros(0))
    assert kept.dtype == torch.bool and kept.shape == (0,)
    assert structure.kept_units(1, torch.tensor([0.0, 1.0, 0.0, 1.0])).dtype == torch.bool
    gradients = UnitGradients.from_gradients(
        collect_mask_gradients(slim, labelled_batches(3, model_type=model_type)), structure
    )
    heads, units = gradients.fisher()
    searched = search_masks(heads, units, structure, FlopsCost(structure.shapes, seq_len=12),
                            0.6 * model_flops(slim, 12)).masks
    rearranged = rearrange_masks(searched, gradients, structure)
    assert rearranged.kept_heads() == searched.kept_heads() and rearranged.kept_heads()[0] == 0
    assert rearranged.kept_units() == searched.kept_units() and rearranged.kept_units()[1] == 0
    assert rearranged.heads[0].shape == (0,) and rearranged.units[1].shape == (0,)
    for layer in range(structure.num_layers):
        old = structure.kept_units(layer, searched.heads[layer])
        new = structure.kept_units(layer, rearranged.heads[layer])
        assert removal_loss(~new, gradients.heads[layer]) <= removal_loss(~old, gradients.heads[layer]) + 1e-15
    assert model_flops(prune_with_masks(slim, rearranged), 12) == model_flops(prune_with_masks(slim, searched), 12)


def _one_layer_arguments():
    from nn_prune_ext.flops import LayerShape

    structure = PruningUnits(shapes=(LayerShape(hidden=8, num_heads=2, num_kv_heads=2, head_dim=4, ffn_width=3),))
    masks = StructureMasks(heads=[torch.tensor([1.0, 0.0])], units=[torch.tensor([1.0, 0.0, 1.0])])
    gradients = UnitGradients(heads=[torch.ones(4, 2)], units=[torch.ones(4, 3)])
    return masks, gradients, structure


def test_rearrange_masks_refuses_arguments_that_do_not_fit():
    """Issue 13: these were an IndexError or AttributeError deep inside the greedy swaps."""
    masks, gradients, structure = _one_layer_arguments()
    with pytest.raises(InputError, match="rearrange_masks: gradients must be a UnitGradients, got tuple"):
        rearrange_masks(masks, (gradients.heads, gradients.units), structure)
    two_layers = StructureMasks(heads=masks.heads * 2, units=masks.units * 2)
    with pytest.raises(InputError, match="the model has 1 layers, the masks 2 and the gradients 1"):
        rearrange_masks(two_layers, gradients, structure)
    with pytest.raises(InputError, match="layer 0 has 2 heads in 2 attention units, but 2 head masks and gradients for 3"):
        rearrange_masks(masks, UnitGradients(heads=[torch.ones(4, 3)], units=gradients.units), structure)
    with pytest.raises(InputError, match="layer 0 has 3 FFN-unit masks but gradients for 5"):
        rearrange_masks(masks, UnitGradients(heads=gradients.heads, units=[torch.ones(4, 5)]), structure)


@pytest.mark.parametrize("kind", ["attention-unit", "FFN-unit"])
def test_rearrange_masks_refuses_non_finite_gradients(kind):
    """A NaN gradient made every swap compare NaN losses: masks that look rearranged but are arbitrary."""
    masks, gradients, structure = _one_layer_arguments()
    (gradients.heads if kind == "attention-unit" else gradients.units)[0][2, 1] = float("nan")
    with pytest.raises(NonFiniteError, match=f"layer 0's {kind} gradients hold NaN or infinite values"):
        rearrange_masks(masks, gradients, structure)
