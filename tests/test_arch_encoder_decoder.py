"""Encoder-decoders: two stacks of layers, and a cross-attention block in every decoder layer.

Run over every registered encoder-decoder type (`ENCODER_DECODER_TYPES`): the layout resolves both
stacks, masks reach the self- and cross-attention heads, and the slim model (heads and FFN units
removed in either stack, a decoder layer without self-attention heads and one without
cross-attention heads) computes the masked model's logits and greedy generations, also when loaded
where nn_prune_ext cannot be imported.
"""

from __future__ import annotations

import copy
import json
import os

import pytest
import torch
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

from nn_prune_ext import (
    SparseArgs,
    StructureMasks,
    fold_masks,
    get_layout,
    masks_from_scores,
    optimize_model,
    patch_model,
    prune_with_masks,
    summary,
)
from nn_prune_ext.arch import probe_inputs
from nn_prune_ext.scores import MaskScores
from nn_prune_ext.slim import kept_head_indices

from conftest import ENCODER_DECODER_TYPES, HEADS, HIDDEN, INTERMEDIATE, VOCAB
from slim_helpers import HEAD_AND_UNIT_ARGS, train_half_the_heads_and_units

LAYERS = 2  # per stack


@pytest.fixture(params=ENCODER_DECODER_TYPES)
def seq2seq_type(request) -> str:
    return request.param


def seq2seq_config(model_type: str, **overrides):
    """A tiny config of an encoder-decoder: `LAYERS` layers per stack, sized through the layouts' attributes."""
    layout = get_layout(model_type)
    settings = {}
    config = AutoConfig.for_model(model_type)
    for _, stack in layout.stacks:
        settings.update({
            stack.hidden_size_attr: HIDDEN, stack.num_heads_attr: HEADS, stack.intermediate_size_attr: INTERMEDIATE,
        })
        if stack.head_dim_attr and getattr(config, stack.head_dim_attr, None) is not None:
            settings[stack.head_dim_attr] = HIDDEN // HEADS  # T5's d_kv
    for name in ("encoder_layers", "decoder_layers", "num_layers", "num_decoder_layers"):
        if hasattr(config, name):
            settings[name] = LAYERS
    settings.update(vocab_size=VOCAB, max_position_embeddings=64, num_labels=3)
    if getattr(config, "decoder_start_token_id", None) is None:  # T5 starts decoding at its padding token
        settings["decoder_start_token_id"] = config.pad_token_id
    settings.update(overrides)
    return AutoConfig.for_model(model_type, **settings)


def tiny_seq2seq(model_type: str, head=AutoModelForSeq2SeqLM, seed: int = 0):
    torch.manual_seed(seed)
    return head.from_config(seq2seq_config(model_type)).eval()


def uneven_masks(model) -> StructureMasks:
    """Uneven heads everywhere; decoder layer 0 loses its self-attention, decoder layer 1 its cross-attention,
    encoder layer 1 its FFN."""
    masks = StructureMasks.ones(model)
    masks.heads[0][1] = 0
    masks.heads[1][[0, 3]] = 0
    masks.heads[LAYERS].zero_()
    masks.cross_heads[LAYERS][2] = 0
    masks.cross_heads[LAYERS + 1].zero_()
    masks.units[1].zero_()
    masks.units[LAYERS][::3] = 0
    return masks


def test_layout_resolves_both_stacks(seq2seq_type):
    model = tiny_seq2seq(seq2seq_type)
    layout = get_layout(model)
    layers = list(layout.iter_layers(model))
    assert [layer.name for layer in layers] == [f"encoder layer {i}" for i in range(LAYERS)] + [
        f"decoder layer {i}" for i in range(LAYERS)
    ]
    assert [layer.index for layer in layers] == list(range(2 * LAYERS))
    assert [layer.cross is not None for layer in layers] == [False] * LAYERS + [True] * LAYERS
    for layer in layers[LAYERS:]:
        assert (layer.cross.num_heads, layer.cross.head_dim) == (HEADS, HIDDEN // HEADS)
        assert set(layer.projections) >= {"cross_query", "cross_key", "cross_value", "cross_output"}
    assert layout.input_kind == "seq2seq"
    assert set(probe_inputs(model)) == {"input_ids", "attention_mask", "decoder_input_ids"}
    with pytest.raises(ValueError, match="encoder and a decoder stack"):
        layout.layer_list(model)
    masks = StructureMasks.ones(model)
    assert [mask.numel() for mask in masks.cross_heads] == [0] * LAYERS + [HEADS] * LAYERS


def test_slim_equals_the_masked_model_and_generates_the_same(seq2seq_type):
    model = tiny_seq2seq(seq2seq_type)
    masks = uneven_masks(model)
    masked = fold_masks(copy.deepcopy(model), masks)
    slim = prune_with_masks(model, masks)
    report = slim.slim_report
    assert [layer.heads[1] for layer in report.layers] == [HEADS - 1, HEADS - 2, 0, HEADS]
    assert kept_head_indices(slim) == [[0, 2, 3], [1, 2], [], [0, 1, 2, 3]]  # each stack's heads, by dense number
    assert [layer.cross_heads for layer in report.layers] == [None] * LAYERS + [(HEADS, HEADS - 1), (HEADS, 0)]
    assert [layer.ffn_width[1] for layer in report.layers] == [INTERMEDIATE, 0, INTERMEDIATE - 43, INTERMEDIATE]
    inputs = probe_inputs(model, batch_size=2, seq_len=9)
    with torch.no_grad():
        difference = (masked(**inputs).logits - slim(**inputs).logits).abs().max().item()
    assert difference < 1e-5
    # Greedy decoding with the KV cache, through an empty self-attention and an empty cross-attention.
    settings = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, num_beams=1)
    expected = masked.generate(inputs["input_ids"], **settings)
    assert torch.equal(slim.generate(inputs["input_ids"], **settings), expected)
    assert "cross heads" in str(report)
    assert "decoder layer 1" in str(summary(slim))


def test_movement_pruning_scores_cross_attention_and_slims_exactly(seq2seq_type):
    model = tiny_seq2seq(seq2seq_type, head=AutoModelForSequenceClassification)
    patch_model(model, SparseArgs(**HEAD_AND_UNIT_ARGS))
    names = [name for name, module in model.named_modules() if isinstance(module, MaskScores)]
    cross_module = get_layout(model).decoder.cross_attention
    assert any(cross_module in name for name in names), names
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for scores in (module for module in model.modules() if isinstance(module, MaskScores)):
            values = torch.rand(scores.shape, generator=generator) - 0.4
            values[0] = 1.0
            scores.scores.copy_(values)
    # A few training steps: gradients reach the scores of both attention blocks.
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    model.train()
    inputs = probe_inputs(model, batch_size=4, seq_len=8)
    for _ in range(2):
        loss = model(**inputs, labels=torch.tensor([0, 1, 2, 1])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    cross_scores = [module for name, module in model.named_modules() if isinstance(module, MaskScores) and cross_module in name]
    model.eval()
    masks = masks_from_scores(model)
    assert masks.cross_heads is not None and sum(masks.kept_cross_heads()) < LAYERS * HEADS
    assert cross_scores and all(s.scores.grad is None or torch.isfinite(s.scores.grad).all() for s in cross_scores)
    with torch.no_grad():
        expected = model(**inputs).logits
    from_masks = prune_with_masks(model, masks)
    direct = optimize_model(model)
    with torch.no_grad():
        assert (from_masks(**inputs).logits - expected).abs().max().item() < 1e-5
        assert (direct(**inputs).logits - expected).abs().max().item() < 1e-5
    assert [layer.cross_heads for layer in direct.slim_report.layers] == [
        layer.cross_heads for layer in from_masks.slim_report.layers
    ]


def test_checkpoint_loads_where_nn_prune_ext_is_not_installed(seq2seq_type, tmp_path):
    from safetensors.torch import save_file

    from test_slim_modeling_slim import load_without_nn_prune_ext

    model = tiny_seq2seq(seq2seq_type, head=AutoModelForSequenceClassification)
    masks = uneven_masks(model)
    masked = fold_masks(copy.deepcopy(model), masks)
    slim = prune_with_masks(model, masks)
    inputs = probe_inputs(model, batch_size=2, seq_len=9)
    with torch.no_grad():
        logits = masked(**inputs).logits
    folder = str(tmp_path / seq2seq_type)
    slim.save_pretrained(folder)
    save_file({**inputs, "logits": logits.contiguous()}, os.path.join(folder, "reference.safetensors"))
    config = json.load(open(os.path.join(folder, "config.json")))
    assert [stack["name"] for stack in config["nn_prune_slim"]["stacks"]] == ["encoder", "decoder"]
    result = load_without_nn_prune_ext({seq2seq_type: folder})[seq2seq_type]
    assert result["difference"] < 1e-5 and result["resaved_difference"] < 1e-5
    assert result["class"].startswith("Slim") and result["base_class"].startswith("Slim")
    assert result["stock_error"] is not None  # the stock class cannot build the slim model


def calibration_batches(model, count: int = 3) -> list[dict[str, torch.Tensor]]:
    batches = []
    for index in range(count):
        batch = probe_inputs(model, batch_size=4, seq_len=10, seed=index)
        batch["labels"] = torch.randint(0, 3, (4,), generator=torch.Generator().manual_seed(index))
        batches.append(batch)
    return batches


def test_post_training_search_and_importance_pruning_slim_both_stacks_exactly(seq2seq_type):
    """The Fisher search and importance pruning cut the self-attention heads and FFN units of both stacks;
    the cross-attention heads stay. Mask tuning runs one stack and refuses an encoder-decoder."""
    from nn_prune_ext import model_flops, post_training_prune, prune_by_importance

    model = tiny_seq2seq(seq2seq_type, head=AutoModelForSequenceClassification)
    batches = calibration_batches(model)
    with pytest.raises(ValueError, match="encoder and a decoder.*pass tune=False"):
        post_training_prune(model, batches, flops_budget=0.6)
    result = post_training_prune(model, batches, flops_budget=0.6, tune=False)
    # The budget is a share of the dense FLOPs, cross-attention counted once (issue 15: 72% before).
    assert result.search.dense_cost == model_flops(model, result.seq_len)
    assert model_flops(result.model, result.seq_len) == result.search.cost <= 0.6 * model_flops(model, result.seq_len)
    by_importance = prune_by_importance(model, batches, target_num_heads=2, target_ffn_width=64)
    for slim, masks in ((result.model, result.masks), (by_importance, None)):
        kept_heads = [layer.heads[1] for layer in slim.slim_report.layers]
        assert len(kept_heads) == 2 * LAYERS
        assert [layer.cross_heads for layer in slim.slim_report.layers[LAYERS:]] == [(HEADS, HEADS)] * LAYERS
        if masks is not None:
            assert kept_heads == masks.kept_heads()
            masked = fold_masks(copy.deepcopy(model), masks)
            with torch.no_grad():
                for batch in batches:
                    inputs = {k: v for k, v in batch.items() if k != "labels"}
                    assert (masked(**inputs).logits - slim(**inputs).logits).abs().max().item() < 1e-5
    assert [layer.heads[1] for layer in by_importance.slim_report.layers] == [2] * (2 * LAYERS)
    assert [layer.ffn_width[1] for layer in by_importance.slim_report.layers] == [64] * (2 * LAYERS)


def test_single_stack_methods_refuse_an_encoder_decoder_with_the_reason(seq2seq_type):
    from nn_prune_ext import measure_latency_table, prune_layers
    from nn_prune_ext.posttrain.tune import tune_masks

    model = tiny_seq2seq(seq2seq_type, head=AutoModelForSequenceClassification)
    batches = calibration_batches(model, count=1)
    with pytest.raises(ValueError, match="measure_latency_table .*encoder and a decoder.*use a FLOPs budget"):
        measure_latency_table(model)
    with pytest.raises(ValueError, match="tune_masks .*encoder and a decoder"):
        tune_masks(model, StructureMasks.ones(model), batches)
    with pytest.raises(ValueError, match="encoder and a decoder stack"):
        prune_layers(model, batches, num_layers=1)


def test_sparse_trainer_prunes_both_stacks_and_the_result_slims_exactly(seq2seq_type, tmp_path):
    """A few SparseTrainer steps with head and unit scores; the masks it ends with slim exactly."""
    model = tiny_seq2seq(seq2seq_type, head=AutoModelForSequenceClassification)
    rows = [probe_inputs(model, batch_size=1, seq_len=10, seed=seed) for seed in range(32)]
    train_half_the_heads_and_units(model, {
        "input_ids": [row["input_ids"][0].tolist() for row in rows],
        "attention_mask": [row["attention_mask"][0].tolist() for row in rows],
        "labels": [int(row["input_ids"][0, 0]) % 3 for row in rows],
    }, str(tmp_path))
    model.eval()
    masks = masks_from_scores(model)
    assert masks.kept_cross_heads()[LAYERS:] == [HEADS // 2] * LAYERS
    assert masks.kept_heads() == [HEADS // 2] * (2 * LAYERS)
    inputs = probe_inputs(model, batch_size=2, seq_len=9)
    with torch.no_grad():
        expected = model(**inputs).logits
    slim = optimize_model(model)
    with torch.no_grad():
        assert (slim(**inputs).logits - expected).abs().max().item() < 1e-5


def test_t5_v1_1_gets_the_gated_layout_by_its_config_and_slims_exactly():
    torch.manual_seed(0)
    model = AutoModelForSeq2SeqLM.from_config(seq2seq_config("t5", feed_forward_proj="gated-gelu")).eval()
    layout = get_layout(model)
    assert layout.ffn_gate == "layer.1.DenseReluDense.wi_0" and layout.decoder.ffn_gate == "layer.2.DenseReluDense.wi_0"
    assert get_layout("t5").ffn_gate is None  # by name alone: the original T5's ReLU FFN
    masks = uneven_masks(model)
    masked = fold_masks(copy.deepcopy(model), masks)
    slim = prune_with_masks(model, masks)
    inputs = probe_inputs(model, batch_size=2, seq_len=9)
    with torch.no_grad():
        assert (masked(**inputs).logits - slim(**inputs).logits).abs().max().item() < 1e-5
    # Every slim layer with heads computes the relative position bias of its own heads.
    for layer in get_layout(slim).iter_layers(slim):
        embedding = layer.position_bias_embedding()
        assert (embedding is None) == (layer.num_heads == 0)
        assert embedding is None or embedding.embedding_dim == layer.num_heads
