"""StructureMasks, fold_masks and prune_with_masks on every registered architecture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nn_prune_ext import (
    InputError,
    SparseArgs,
    StructureMasks,
    apply_masks,
    fold_masks,
    iter_mask_scores,
    masks_from_scores,
    optimize_model,
    patch_model,
    prune_with_masks,
)
from nn_prune_ext.arch import get_layout
from nn_prune_ext.flops import kept_layer_shapes

from conftest import GQA_TYPES, HEADS, INTERMEDIATE, LAYERS, tiny_batch, tiny_model
from slim_helpers import HEAD_AND_UNIT_ARGS, masked_model


def _scaled_masks(model) -> StructureMasks:
    generator = torch.Generator().manual_seed(3)
    masks = StructureMasks.ones(model)
    masks.heads[0] = torch.tensor([1.0, 0.0, 0.7, 0.0])
    masks.units[0] = (torch.rand(INTERMEDIATE, generator=generator) > 0.5).float() * 1.3
    masks.heads[1] = torch.zeros(HEADS)
    masks.units[1] = torch.zeros(INTERMEDIATE)
    return masks


@torch.no_grad()
def _masked_logits(model, masks: StructureMasks, batch) -> torch.Tensor:
    with apply_masks(model, masks.heads, masks.units):
        return model(**batch).logits


def test_prune_with_masks_equals_masked_model(model_type):
    model = tiny_model(model_type)
    masks = _scaled_masks(model)
    batch = tiny_batch(model_type)
    expected = _masked_logits(model, masks, batch)
    slim = prune_with_masks(model, masks)
    torch.testing.assert_close(slim(**batch).logits, expected, rtol=0, atol=1e-5)
    shapes = kept_layer_shapes(slim)  # one per dense layer; a dropped layer has zero sizes
    assert shapes[0].num_heads == 2 and shapes[0].ffn_width == int(masks.units[0].count_nonzero())
    assert shapes[-1].num_heads == 0 and shapes[-1].ffn_width == 0
    # The input model is untouched.
    with torch.no_grad():
        assert not torch.equal(model(**batch).logits, expected)


def test_prune_with_masks_plans_from_the_masks_not_the_weights(model_type):
    """A kept head or unit whose weights are zero stays (the masks are the contract); the sizes are the masks'."""
    model = tiny_model(model_type)
    layer = next(get_layout(model).iter_layers(model))
    with torch.no_grad():
        layer.output.weight.view(layer.output.out_features, layer.num_heads, -1)[:, 0] = 0  # head 0: zero columns
        layer.ffn_down.weight[:, :3] = 0  # units 0..2: zero down columns
    masks = _scaled_masks(model)
    masks.heads[0] = torch.tensor([1.0, 0.0, 0.7, 0.0])
    masks.units[0][:3] = 1.0
    batch = tiny_batch(model_type)
    expected = _masked_logits(model, masks, batch)
    by_masks, by_zeros = prune_with_masks(model, masks), optimize_model(model)
    torch.testing.assert_close(by_masks(**batch).logits, expected, rtol=0, atol=1e-5)
    first = by_masks.slim_report.layers[0]
    assert first.ffn_width[1] == int(masks.units[0].count_nonzero())
    assert by_zeros.slim_report.layers[0].ffn_width[1] == INTERMEDIATE - 3  # zeros alone remove the zero units
    if model_type not in GQA_TYPES:
        assert first.heads[1] == 2
        assert by_zeros.slim_report.layers[0].heads[1] == HEADS - 1


def test_fold_masks_is_in_place_and_exact(model_type):
    model = tiny_model(model_type)
    masks = _scaled_masks(model)
    batch = tiny_batch(model_type)
    expected = _masked_logits(model, masks, batch)
    assert fold_masks(model, masks) is model
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, expected, rtol=0, atol=1e-6)


def test_from_kept_and_counts(model_type):
    model = tiny_model(model_type)
    masks = StructureMasks.from_kept(model, heads=[[0, 3], []], units=[range(0, INTERMEDIATE, 2), [5]])
    assert masks.kept_heads() == [2, 0]
    assert masks.kept_units() == [INTERMEDIATE // 2, 1]
    assert masks.heads[0].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert StructureMasks.from_dict(masks.to_dict()).to_dict() == masks.to_dict()


def test_binary_drops_scales():
    masks = StructureMasks(heads=[torch.tensor([0.0, 2.5])], units=[torch.tensor([-0.5, 0.0, 1.0])])
    binary = masks.binary()
    assert binary.heads[0].tolist() == [0.0, 1.0] and binary.units[0].tolist() == [1.0, 0.0, 1.0]


def test_errors_name_the_problem():
    model = tiny_model("bert")
    with pytest.raises(ValueError, match="head index 4 is out of range"):
        StructureMasks.from_kept(model, heads=[[4], []], units=[[], []])
    with pytest.raises(ValueError, match=f"cover 1 layers but the model has {LAYERS}"):
        fold_masks(model, StructureMasks(heads=[torch.ones(HEADS)], units=[torch.ones(INTERMEDIATE)]))
    bad = StructureMasks.ones(model)
    bad.units[1] = torch.ones(3)
    with pytest.raises(ValueError, match="FFN unit mask of layer 1 has 3 entries"):
        prune_with_masks(model, bad)
    with pytest.raises(ValueError, match="2 head masks and 1 FFN-unit masks"):
        StructureMasks(heads=[torch.ones(2), torch.ones(2)], units=[torch.ones(2)])


def test_bad_mask_values_are_refused():
    with pytest.raises(ValueError, match="head mask of layer 0 holds NaN"):
        StructureMasks(heads=[torch.tensor([1.0, float("nan")])], units=[torch.ones(2)])
    with pytest.raises(ValueError, match=r"FFN-unit mask of layer 0 has shape \(2, 2\): pass a 1-d mask"):
        StructureMasks(heads=[torch.ones(2)], units=[torch.ones(2, 2)])
    with pytest.raises(ValueError, match=r"missing \['heads'\]"):
        StructureMasks.from_dict({"head": [], "units": []})


def test_fold_masks_refuses_a_patched_model():
    model = patch_model(tiny_model("bert"), SparseArgs.struct())
    with pytest.raises(ValueError, match="fold_masks.*bake_model"):
        fold_masks(model, StructureMasks.ones(model))


@pytest.mark.parametrize("preset", ["heads_and_units", "hybrid"])
def test_masks_from_scores_slim_to_the_patched_model(model_type, preset):
    """The masks a patched model's scores give are the contract: slimming by them computes what optimize_model's result does."""
    if preset == "heads_and_units":
        model = masked_model(model_type)
    else:  # 16x16 attention blocks, FFN units, random scores at threshold 0
        model = tiny_model(model_type)
        patch_model(model, SparseArgs(**{**HEAD_AND_UNIT_ARGS, "attention_granularity": "block",
                                         "attention_block_rows": 16, "attention_block_cols": 16}))
        generator = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for scores in iter_mask_scores(model):
                scores.scores.copy_(torch.randn(scores.shape, generator=generator) - 1.0)
    masks = masks_from_scores(model)
    by_masks = prune_with_masks(model, masks)
    by_zeros = optimize_model(model)
    batch = tiny_batch(model_type)
    with torch.no_grad():
        torch.testing.assert_close(by_masks(**batch).logits, by_zeros(**batch).logits, rtol=0, atol=1e-5)
    heads = lambda slim: [r.heads[1] for r in slim.slim_report.layers]  # noqa: E731
    units = lambda slim: [r.ffn_width[1] for r in slim.slim_report.layers]  # noqa: E731
    assert masks.kept_units() == units(by_masks) == units(by_zeros)  # FFN units are scored whole in both presets
    if model_type not in GQA_TYPES:  # (grouped-query slimming may add zero padding heads)
        assert heads(by_masks) == masks.kept_heads()  # slimming by masks cuts exactly what they remove
        if preset == "heads_and_units":  # whole heads: the masks say all there is
            assert heads(by_zeros) == masks.kept_heads()
        else:  # blocks: zeros may remove more (a head whose value rows are all pruned)
            assert all(kept >= after for kept, after in zip(masks.kept_heads(), heads(by_zeros)))
            assert masks.kept_heads() != [HEADS] * LAYERS  # the random scores did remove heads


def test_masks_from_scores_needs_a_patched_model():
    with pytest.raises(ValueError, match="needs a model patched for movement pruning"):
        masks_from_scores(tiny_model("bert"))


FULL = [1.0] * HEADS


@pytest.mark.parametrize(
    ("heads", "message"),
    [
        ([FULL, [1.0]], f"head mask of layer 1 has 1 entries, but the layer has {HEADS} heads"),
        ([[1.0, [0.0, 1.0]] + FULL[2:], FULL], "head mask of layer 0 cannot be read as numbers"),
        (["1101", FULL], r"head mask of layer 0 is text \('1101'\)"),
        ([[float("nan")] + FULL[1:], FULL], "head mask of layer 0 holds NaN or infinite values"),
        ("11", "StructureMasks.heads must be a list with one mask per layer, got str"),
    ],
    ids=["ragged_layers", "ragged_inside", "text", "nan", "not_a_list"],
)
def test_masks_that_are_not_numbers_per_layer_are_input_errors(heads, message):
    units = [[1.0] * INTERMEDIATE] * LAYERS
    with pytest.raises(InputError, match=message):
        StructureMasks(heads=heads, units=units if isinstance(heads, list) else units[:1]).check(tiny_model("bert"))


@pytest.mark.parametrize(
    ("heads", "message"),
    [
        ([[0, 1.7], [0]], r"kept layer 0 heads hold 1\.7 \(float\): indices are whole numbers 0\.\.3"),
        ([[float("nan")], [0]], r"kept layer 0 heads hold nan \(float\)"),
        ([[True], [0]], r"kept layer 0 heads hold True \(bool\)"),
        ([[0], 2], r"kept layer 1 heads must be a list of indices such as \[0, 2\], got 2 \(int\)"),
        ("01", r"from_kept: heads must be a list with one list of indices per layer.*got str"),
        (torch.tensor([0, 1]), r"from_kept: heads must be a list with one list of indices per layer.*got Tensor"),
    ],
    ids=["fraction", "nan", "bool", "not_a_list", "text", "flat_tensor"],
)
def test_from_kept_refuses_indices_that_are_not_whole_numbers(heads, message):
    # Before: 1.7 was truncated to head 1 and True taken as head 1 without a word; "01" kept heads 0 and 1.
    with pytest.raises(InputError, match=message):
        StructureMasks.from_kept(tiny_model("bert"), heads=heads, units=[[0], [0]])


def test_from_kept_takes_numpy_and_tensor_indices():
    model = tiny_model("bert")
    masks = StructureMasks.from_kept(model, heads=torch.tensor([[0, 2], [1, 3]]), units=[np.array([0, 5]), [1]])
    assert masks.heads[0].tolist() == [1.0, 0.0, 1.0, 0.0] and masks.heads[1].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert masks.kept_units() == [2, 1] and masks.units[0][5] == 1.0


def test_complex_masks_are_refused_not_cast_to_their_real_part():
    with pytest.raises(InputError, match=r"head mask of layer 0 holds complex numbers \(torch\.complex64\)"):
        StructureMasks(heads=[torch.ones(HEADS, dtype=torch.complex64)], units=[torch.ones(INTERMEDIATE)])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: StructureMasks.ones("bert"), r"StructureMasks\.ones: model must be a torch\.nn\.Module.*'bert' \(str\)"),
        (lambda: StructureMasks.from_kept("bert", [[0]] * LAYERS, [[0]] * LAYERS), r"StructureMasks\.from_kept: model must be"),
        (lambda: StructureMasks.ones(tiny_model("bert")).check("bert"), r"StructureMasks\.check: model must be"),
        (lambda: fold_masks("bert", None), r"fold_masks: model must be a torch\.nn\.Module"),
        (lambda: fold_masks(tiny_model("bert"), {"heads": []}), r"fold_masks: masks must be a StructureMasks, got dict"),
        (lambda: masks_from_scores("bert"), r"masks_from_scores: model must be a torch\.nn\.Module"),
    ],
    ids=["ones", "from_kept", "check", "fold_model", "fold_masks", "masks_from_scores"],
)
def test_a_model_that_is_not_a_module_is_refused_naming_the_call(call, message):
    # Before: an AttributeError about str ('str' object has no attribute 'config').
    with pytest.raises(InputError, match=message):
        call()
