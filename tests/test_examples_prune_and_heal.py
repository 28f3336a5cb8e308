"""examples/text_classification/run_prune_and_heal.py on a tiny BERT and csv files."""

import pytest
import torch

from nn_prune_ext import load_slim, model_flops
from nn_prune_ext.flops import dense_layer_shapes

from test_examples_text_classification import (  # noqa: F401 (bert_dir is a fixture)
    ROOT, batch_of, bert_dir, load_script, logits, short_run, topic_rows, write_csv,
)

SCRIPT = ROOT / "examples" / "text_classification" / "run_prune_and_heal.py"
run_heal = load_script(SCRIPT, "examples_prune_and_heal_run")


def test_prunes_heals_compares_and_saves_a_slim_model_at_the_budget(bert_dir, tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", topic_rows(24, seed=0))
    validation = write_csv(tmp_path / "validation.csv", topic_rows(12, seed=1))
    output = tmp_path / "out"
    results = run_heal.main(["--model_name_or_path", str(bert_dir), "--train_file", str(train),
                             "--validation_file", str(validation), "--flops_budget", "0.5", "--rounds", "2",
                             "--calibration_examples", "16", *short_run(output, tmp_path / "cache", steps=2)])
    out = capsys.readouterr().out
    assert "input model against the healed slim model:" in out and "round 2: kept 0.707" in out
    assert results["budgets"] == [pytest.approx(0.5 ** 0.5)] * 2
    assert 0 <= results["dense_eval_accuracy"] <= 1 and 0 <= results["slim_eval_accuracy"] <= 1
    slim = load_slim(output / "slim").eval()
    dense_shapes = dense_layer_shapes(slim)
    assert model_flops(slim, 8) <= 0.5 * model_flops(dense_shapes, 8) * 1.05  # both rounds: about half the FLOPs
    assert (output / "round-1").is_dir() and (output / "round-2").is_dir()
    batch = batch_of(output / "slim", ["goal team ball match", "soup bread"])
    assert torch.isfinite(logits(slim, batch)).all()


def test_without_a_budget_flag_the_budget_is_0_4_and_training_is_required(bert_dir, tmp_path):
    parsed = run_heal.parse_arguments(["--model_name_or_path", str(bert_dir), "--dataset_name", "wordnet_nouns",
                                       "--output_dir", str(tmp_path)])
    prune_args = next(args for args in parsed if type(args).__name__ == "PostTrainingArgs")
    assert prune_args.flops_budget == 0.4 and prune_args.latency_budget is None
    with pytest.raises(ValueError, match="pass --do_train"):
        run_heal.main(["--model_name_or_path", str(bert_dir), "--dataset_name", "wordnet_nouns", "--do_eval",
                       "--output_dir", str(tmp_path)])
