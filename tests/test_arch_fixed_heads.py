"""A family whose heads cannot be removed exactly (OLMo 2: q/k norms over all heads): FFN units only, and clear refusals."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from nn_prune_ext import (
    SparseArgs,
    apply_masks,
    StructureMasks,
    get_layout,
    importance_masks,
    iter_mask_scores,
    optimize_model,
    patch_model,
    post_training_prune,
    prune_with_masks,
)

from conftest import HEADS, INTERMEDIATE, LAYERS, labelled_batches, tiny_batch, tiny_config
from slim_helpers import HEAD_AND_UNIT_ARGS

MODEL_TYPE = "olmo2"


def olmo2():
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(tiny_config(MODEL_TYPE)).eval()


def test_olmo2_heads_are_fixed_and_say_why():
    layout = get_layout(MODEL_TYPE)
    assert layout.fixed_heads and "all heads together" in layout.fixed_heads


def test_movement_pruning_scores_ffn_units_only_and_slims_exactly(caplog):
    model = olmo2()
    with caplog.at_level(logging.WARNING, logger="nn_prune_ext.patch"):
        patch_model(model, SparseArgs(**HEAD_AND_UNIT_ARGS))  # kept when the score is positive
    assert "cannot be removed exactly" in caplog.text and "FFN units only" in caplog.text
    groups = list(iter_mask_scores(model))
    assert groups and {group.kind for group in groups} == {"dense"}
    with torch.no_grad():
        for group in groups:  # keep the even units
            group.scores.copy_(torch.where(torch.arange(group.shape[0]) % 2 == 0, 5.0, -5.0))
    batch = tiny_batch()
    with torch.no_grad():
        expected = model(**batch).logits
    slim = optimize_model(model)
    assert [(r.heads[1], r.ffn_width[1]) for r in slim.slim_report.layers] == [(HEADS, INTERMEDIATE // 2)] * LAYERS
    with torch.no_grad():
        torch.testing.assert_close(slim(**batch).logits, expected, rtol=0, atol=1e-5)


def test_zeroed_heads_of_a_checkpoint_are_kept_and_computed_as_zeros():
    model = olmo2()
    layout = get_layout(model)
    with torch.no_grad():
        next(layout.iter_layers(model)).output.weight[:, :16] = 0  # head 0 of layer 0: zero output columns
        expected = model(**tiny_batch()).logits
    slim = optimize_model(model)
    report = slim.slim_report.layers[0]
    assert report.heads == (HEADS, HEADS) and "kept 1 zero head(s)" in "; ".join(report.notes)
    with torch.no_grad():
        torch.testing.assert_close(slim(**tiny_batch()).logits, expected, rtol=0, atol=1e-5)


def test_ways_in_that_would_remove_heads_refuse_and_offer_ffn_only():
    model = olmo2()
    heads_removed = StructureMasks.from_kept(model, heads=[[0, 1, 2], range(HEADS)], units=[range(INTERMEDIATE)] * 2)
    with pytest.raises(ValueError, match="cannot be removed exactly: its q and k norms .* Prune FFN units only"):
        prune_with_masks(model, heads_removed)
    with pytest.raises(ValueError, match="target_num_heads=4 would remove attention heads"):
        importance_masks(model, labelled_batches(), target_num_heads=4)
    with pytest.raises(ValueError, match="post_training_prune .* would remove attention heads"):
        post_training_prune(model, labelled_batches(), flops_budget=0.6)
    # FFN-only masks and importance pruning work, exactly.
    ffn_only = StructureMasks.from_kept(model, heads=[range(HEADS)] * 2, units=[range(0, INTERMEDIATE, 2)] * 2)
    with torch.no_grad():
        with apply_masks(model, ffn_only.heads, ffn_only.units):
            expected = model(**tiny_batch()).logits
    slim = prune_with_masks(model, ffn_only)
    with torch.no_grad():
        torch.testing.assert_close(slim(**tiny_batch()).logits, expected, rtol=0, atol=1e-5)
    masks = importance_masks(model, labelled_batches(), target_ffn_width=INTERMEDIATE // 2)
    assert masks.kept_heads() == [HEADS] * LAYERS and masks.kept_units() == [INTERMEDIATE // 2] * LAYERS
