import re

import pytest
import torch
from transformers import HfArgumentParser

from nn_prune_ext import InputError, MaskScores, SparseArgs, SparseTrainer, get_layout, optimize_model

from conftest import LAYERS, tiny_batch, tiny_model


def test_flags_parse_into_sparse_args():
    (parsed,) = HfArgumentParser(SparseArgs).parse_args_into_dataclasses(
        ["--dense_pruning_method", "sigmoied_threshold:1d_alt", "--attention_pruning_method", "sigmoied_threshold",
         "--attention_block_rows", "32", "--attention_block_cols", "32", "--initial_threshold", "0",
         "--final_threshold", "0.1", "--regularization", "l1", "--regularization_final_lambda", "10",
         "--initial_warmup", "0.05", "--final_warmup", "100"]
    )
    assert parsed.dense_pruning_method == "sigmoied_threshold" and parsed.dense_granularity == "unit"
    assert parsed.attention_block_rows == 32 and parsed.regularization_final_lambda == 10
    assert parsed.warmup_steps(1000) == (50, 100)


def test_presets():
    hybrid = SparseArgs.hybrid(20)
    assert (hybrid.attention_block_rows, hybrid.attention_block_cols) == (32, 32)
    assert hybrid.dense_granularity == "unit" and hybrid.attention_granularity == "block"
    assert hybrid.attention_pruning_method == hybrid.dense_pruning_method == "sigmoied_threshold"
    assert (hybrid.regularization, hybrid.regularization_final_lambda) == ("l1", 20)
    assert (hybrid.initial_threshold, hybrid.final_threshold) == (0.0, 0.1)
    struct = SparseArgs.struct(5, final_threshold=0.2)
    assert struct.attention_granularity == "head" and struct.final_threshold == 0.2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dense_pruning_method": "random"}, "Unknown pruning method 'random'"),
        ({"dense_pruning_method": "topK:2d"}, "1d_alt"),
        ({"initial_threshold": 1.5}, r"initial_threshold.*\[0.0, 1.0\].*fraction of structures kept"),
        ({"attention_pruning_method": "sigmoied_threshold", "final_threshold": -0.1}, "final_threshold"),
        ({"attention_block_rows": 0}, "attention_block_rows must be a positive integer"),
        ({"dense_granularity": "heads"}, "dense_granularity='heads' is not one of"),
        ({"regularization": "l2"}, "regularization='l2'"),
        ({"regularization": "l0"}, "does not apply to"),
        ({"initial_warmup": 2.5}, "neither a fraction"),
        ({"attention_output_with_dense": True, "dense_granularity": "unit"}, "no FFN units"),
        ({"distil_temperature": 0}, "distil_temperature"),
    ],
)
def test_bad_arguments_name_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SparseArgs(**kwargs)


def test_filled_preset_turns_pruning_off():
    args = SparseArgs.filled("teacher-folder", distil_temperature=3.0)
    assert (args.prune, args.regularization, args.distil_teacher_name_or_path, args.distil_temperature) == (
        False, "disabled", "teacher-folder", 3.0
    )


def test_auto_slim_preset():
    args = SparseArgs.auto_slim(ffn2_sparsity=0.3, mha_sparsity=0.3, final_warmup=2)
    assert (args.attention_pruning_method, args.dense_pruning_method) == ("topK", "topK")
    assert (args.attention_granularity, args.dense_granularity, args.attention_output_with_dense) == (
        "head", "unit", False
    )
    assert (args.initial_threshold, args.final_threshold, args.regularization, args.final_warmup) == (
        1.0, pytest.approx(0.7), "disabled", 2
    )
    assert args.final_thresholds() == (pytest.approx(0.7), pytest.approx(0.7))
    (parsed,) = HfArgumentParser(SparseArgs).parse_dict(args.to_dict())  # still a plain SparseArgs
    assert parsed == args
    separate = SparseArgs.auto_slim(ffn2_sparsity=0.5, mha_sparsity=None)
    assert separate.final_thresholds() == (1.0, 0.5)  # heads kept whole, half the FFN units


def test_attention_final_threshold_is_checked_with_the_attention_method():
    with pytest.raises(ValueError, match="attention_final_threshold"):
        SparseArgs(attention_pruning_method="topK", attention_final_threshold=1.5)


@pytest.mark.parametrize(
    "ffn2, mha, message",
    [
        (1.0, 1.0, r"ffn2_sparsity=1.0 is not a fraction in \[0, 1\): it is the share of FFN units"),
        (0.5, -0.1, r"mha_sparsity=-0.1 is not a fraction in \[0, 1\): it is the share of attention heads"),
        (None, None, "no sparsity to prune to"),
        (0.0, 0.0, "no sparsity to prune to"),
    ],
)
def test_auto_slim_refuses_what_it_cannot_express(ffn2, mha, message):
    with pytest.raises(ValueError, match=message):
        SparseArgs.auto_slim(ffn2_sparsity=ffn2, mha_sparsity=mha)


@pytest.mark.parametrize("model_type, mha", [("bert", 0.25), ("bert", None), ("llama", 0.3)])
def test_auto_slim_trains_then_slims_to_the_topk_sizes(model_type, mha, tmp_path):
    from test_trainer import tiny_dataset, training_args

    trainer = SparseTrainer(
        model=tiny_model(model_type), args=training_args(tmp_path, max_steps=8), train_dataset=tiny_dataset(32, model_type=model_type),
        sparse_args=SparseArgs.auto_slim(ffn2_sparsity=0.3, mha_sparsity=mha, initial_warmup=1, final_warmup=2),
    )
    trainer.train()
    masked = trainer.model.eval()
    slim = optimize_model(masked)
    sizes = [(layer.num_heads, layer.num_kv_heads, layer.ffn_down.in_features)
             for layer in get_layout(slim).iter_layers(slim)]
    # topK keeps floor(0.7 * n): 2 of 4 heads, 89 of 128 units.
    if model_type == "llama":
        # Query heads (2 of 4) and key/value heads (1 of 2) are ranked separately; the kept query
        # heads of the removed key/value head go too.
        expected = []
        for layer in get_layout(masked).layer_list(masked):
            masks = {scores.shape: scores.method.mask(scores.importance(), scores.threshold, training=False)
                     for scores in layer.modules() if isinstance(scores, MaskScores) and scores.kind == "attention"}
            query, key_value = masks[(4,)], masks[(2,)]
            assert (int(query.sum()), int(key_value.sum())) == (2, 1)
            heads = int((query.view(2, 2) * key_value[:, None]).sum())
            expected.append((heads, min(heads, 1), 89))
        assert sizes == expected
    else:
        heads = 4 if mha is None else 3  # floor(0.75 * 4) with mha 0.25
        assert sizes == [(heads, heads, 89)] * LAYERS
    batch = tiny_batch(model_type)
    with torch.no_grad():
        torch.testing.assert_close(slim(**batch).logits, masked(**batch).logits, atol=1e-5, rtol=1e-4)


def test_thresholds_whose_distance_overflows_a_float_are_refused():
    # Each is finite (the raw-score threshold takes any), but the schedule's interpolation gave NaN thresholds.
    with pytest.raises(InputError, match=r"final_threshold=1e\+308 and initial_threshold=-1e\+308 are too far apart"):
        SparseArgs(attention_pruning_method="threshold", dense_pruning_method="threshold",
                   initial_threshold=-1e308, final_threshold=1e308)


@pytest.mark.parametrize("total_steps", [0, 10.5, "100", None], ids=["zero", "fraction", "text", "none"])
def test_warmup_steps_refuse_a_run_length_that_is_not_a_whole_number_of_steps(total_steps):
    # 0 gave (0, 0) and 10.5 gave fractional arithmetic without a word; text was a TypeError inside.
    with pytest.raises(InputError, match=rf"warmup_steps\(total_steps=\.\.\.\) must be a whole number >= 1, got {re.escape(repr(total_steps))}"):
        SparseArgs(initial_warmup=0.1, final_warmup=0.2).warmup_steps(total_steps)
    assert SparseArgs(initial_warmup=0.1, final_warmup=0.2).warmup_steps(100) == (10, 20)


@pytest.mark.parametrize("value", ["0.5", float("nan")], ids=["text", "nan"])
def test_auto_slim_refuses_a_sparsity_that_is_not_a_finite_number(value):
    with pytest.raises(InputError, match=rf"auto_slim\(ffn2_sparsity=\.\.\.\) must be a finite real number or None, got {re.escape(repr(value))}"):
        SparseArgs.auto_slim(ffn2_sparsity=value, mha_sparsity=0.5)
