"""A mixture of experts (Mixtral): attention heads are pruned, the experts stay whole, and the ways in
that would remove FFN units refuse with the reason."""

from __future__ import annotations

import copy
import logging
import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from nn_prune_ext import (
    SparseArgs,
    StructureMasks,
    fold_masks,
    get_layout,
    importance_masks,
    iter_mask_scores,
    masks_from_scores,
    measure_latency_table,
    model_flops,
    optimize_model,
    patch_model,
    post_training_prune,
    prune_by_importance,
    prune_with_masks,
    summary,
)
from nn_prune_ext.flops import layer_shapes

from conftest import HEADS, HIDDEN, INTERMEDIATE, KV_HEADS, LAYERS, labelled_batches, tiny_batch, tiny_config
from slim_helpers import HEAD_AND_UNIT_ARGS, train_half_the_heads_and_units

MODEL_TYPE = "mixtral"


def mixtral(head=AutoModelForSequenceClassification):
    torch.manual_seed(0)
    return head.from_config(tiny_config(MODEL_TYPE)).eval()


def uneven_heads(model) -> StructureMasks:
    """Layer 0 keeps heads 0 and 3 (one of each key/value group), layer 1 none."""
    masks = StructureMasks.ones(model)
    masks.heads[0] = torch.tensor([1.0, 0.0, 0.0, 0.7])
    masks.heads[1] = torch.zeros(HEADS)
    return masks


def test_the_layout_names_no_ffn_projections_and_says_why():
    model = mixtral()
    layout = get_layout(model)
    assert "mixture of experts" in layout.fixed_ffn
    layers = list(layout.iter_layers(model))
    assert [layer.ffn_width for layer in layers] == [0] * LAYERS
    assert all(layer.ffn_projections == {} and layer.fixed_ffn_module() is not None for layer in layers)
    assert [mask.numel() for mask in StructureMasks.ones(model).units] == [0] * LAYERS


def test_flops_count_the_experts_a_token_is_routed_to():
    config = tiny_config(MODEL_TYPE)
    routed, experts = config.num_experts_per_tok, config.num_local_experts
    # Per token: gate and up (2 x INTERMEDIATE x HIDDEN) and down (HIDDEN x INTERMEDIATE) of each routed
    # expert, plus the router (one row per expert).
    expected = routed * 3 * INTERMEDIATE * HIDDEN + experts * HIDDEN
    assert [shape.fixed_ffn_macs for shape in layer_shapes(mixtral())] == [expected] * LAYERS


def test_slim_equals_the_masked_model_keeps_the_experts_and_generates_the_same():
    model = mixtral(AutoModelForCausalLM)
    masks = uneven_heads(model)
    masked = fold_masks(copy.deepcopy(model), masks)
    slim = prune_with_masks(model, masks)
    batch = tiny_batch()
    with torch.no_grad():
        torch.testing.assert_close(slim(**batch).logits, masked(**batch).logits, rtol=0, atol=1e-5)
    report = slim.slim_report.layers
    assert [(r.heads[1], r.kv_heads[1]) for r in report] == [(2, 2), (0, 0)]
    assert not slim.slim_report.dropped_layers  # a layer without heads still runs its experts
    assert all("FFN kept whole" in "; ".join(r.notes) for r in report)
    for layer in get_layout(slim).iter_layers(slim):  # every expert as it was
        experts = layer.fixed_ffn_module().experts
        assert experts.gate_up_proj.shape == (model.config.num_local_experts, 2 * INTERMEDIATE, HIDDEN)
    assert model_flops(slim, 12) < model_flops(model, 12)
    experts_parameters = sum(p.numel() for p in next(get_layout(model).iter_layers(model)).fixed_ffn_module().parameters())
    assert [layer.ffn_parameters for layer in summary(slim).layers] == [experts_parameters] * LAYERS
    prompt = batch["input_ids"][1:2, :6]
    expected = masked.generate(prompt, max_new_tokens=5, do_sample=False)
    assert torch.equal(slim.generate(prompt, max_new_tokens=5, do_sample=False), expected)


def test_checkpoint_loads_where_nn_prune_ext_is_not_installed(tmp_path):
    from safetensors.torch import save_file

    from test_slim_modeling_slim import load_without_nn_prune_ext

    model = mixtral()
    masks = uneven_heads(model)
    masked = fold_masks(copy.deepcopy(model), masks)
    slim = prune_with_masks(model, masks)
    batch = tiny_batch()
    with torch.no_grad():
        logits = masked(**batch).logits
    folder = str(tmp_path / MODEL_TYPE)
    slim.save_pretrained(folder)
    save_file({**batch, "logits": logits.contiguous()}, os.path.join(folder, "reference.safetensors"))
    result = load_without_nn_prune_ext({MODEL_TYPE: folder})[MODEL_TYPE]
    assert result["difference"] < 1e-5 and result["resaved_difference"] < 1e-5
    assert result["class"].startswith("Slim") and result["stock_error"] is not None


def test_movement_pruning_scores_attention_only_and_slims_exactly(caplog):
    model = mixtral()
    with caplog.at_level(logging.WARNING, logger="nn_prune_ext.patch"):
        patch_model(model, SparseArgs(**HEAD_AND_UNIT_ARGS))  # kept when the score is positive
    assert "is not pruned" in caplog.text and "scores the attention only" in caplog.text
    groups = list(iter_mask_scores(model))
    assert groups and "dense" not in {group.kind for group in groups}
    with torch.no_grad():
        for group in groups:  # keep the even query heads and every key/value head
            keep = torch.arange(group.shape[0]) % 2 == 0 if group.shape[0] == HEADS else torch.ones(group.shape, dtype=torch.bool)
            group.scores.copy_(torch.where(keep, 5.0, -5.0))
    batch = tiny_batch()
    with torch.no_grad():
        expected = model(**batch).logits
    assert masks_from_scores(model).kept_heads() == [HEADS // 2] * LAYERS
    slim = optimize_model(model)
    assert [r.heads[1] for r in slim.slim_report.layers] == [HEADS // 2] * LAYERS
    with torch.no_grad():
        torch.testing.assert_close(slim(**batch).logits, expected, rtol=0, atol=1e-5)


def test_importance_pruning_removes_heads_exactly():
    model = mixtral()
    target = HEADS // KV_HEADS  # one whole key/value group per layer
    slim = prune_by_importance(model, labelled_batches(), target_num_heads=target)
    masks = importance_masks(model, labelled_batches(), target_num_heads=target)
    assert masks.kept_heads() == [target] * LAYERS
    with torch.no_grad():
        from nn_prune_ext import apply_masks

        with apply_masks(model, masks.heads, masks.units):
            expected = model(**tiny_batch()).logits
        torch.testing.assert_close(slim(**tiny_batch()).logits, expected, rtol=0, atol=1e-5)


def test_ways_in_that_would_remove_ffn_units_refuse_and_offer_heads_only():
    model = mixtral()
    with_units = StructureMasks(heads=[torch.ones(HEADS)] * LAYERS, units=[torch.ones(INTERMEDIATE)] * LAYERS)
    with pytest.raises(ValueError, match="FFN of mixtral is not pruned: its FFN is a mixture of experts"):
        prune_with_masks(model, with_units)
    with pytest.raises(ValueError, match="target_ffn_width=64 would remove FFN units.*Prune attention heads only"):
        importance_masks(model, labelled_batches(), target_ffn_width=64)
    with pytest.raises(ValueError, match="post_training_prune .* would remove FFN units"):
        post_training_prune(model, labelled_batches(), flops_budget=0.6)
    with pytest.raises(ValueError, match="measure_latency_table .* would remove FFN units"):
        measure_latency_table(model)


def test_sparse_trainer_prunes_heads_and_the_result_slims_exactly(tmp_path):
    model = mixtral()
    batches = labelled_batches(count=8, batch=4, seq=10)
    columns = ("input_ids", "attention_mask", "labels")
    train_half_the_heads_and_units(
        model, {key: [row.tolist() for batch in batches for row in batch[key]] for key in columns}, str(tmp_path)
    )
    model.eval()
    assert masks_from_scores(model).kept_heads() == [HEADS // 2] * LAYERS
    batch = tiny_batch()
    with torch.no_grad():
        expected = model(**batch).logits
    slim = optimize_model(model)
    with torch.no_grad():
        torch.testing.assert_close(slim(**batch).logits, expected, rtol=0, atol=1e-5)
