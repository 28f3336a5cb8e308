import pytest
from transformers import HfArgumentParser

from nn_prune_ext import SparseArgs


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
