"""`nn-prune posttrain`: post-training pruning of a checkpoint from a JSON-lines file."""

from __future__ import annotations

import json
import re

import pytest
import torch

from nn_prune_ext import StructureMasks, apply_masks, load_slim, model_flops, prune_with_masks
from nn_prune_ext.cli import main
from nn_prune_ext.commands.posttrain import RECORD_NAME

from conftest import tiny_batch, tiny_model
from test_commands_report import save_tokenizer, write_examples


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "dense"
    tiny_model("bert").save_pretrained(path)
    save_tokenizer(path)
    write_examples(tmp_path / "calibration.jsonl", 40)
    return path


def test_posttrain_writes_a_slim_checkpoint_within_budget(checkpoint, tmp_path, capsys):
    out = tmp_path / "slim"
    main([
        "posttrain", str(checkpoint), str(out), "--flops-budget", "0.5", "--data", str(tmp_path / "calibration.jsonl"),
        "--text-column", "sentence", "--label-column", "gold", "--batch-size", "8",
    ])
    printed = capsys.readouterr().out
    assert "seconds per stage" in printed and f"slim checkpoint written to {out}" in printed
    # The speedup measured side by side on the first calibration batch (8 examples) is in the card.
    speedup = re.search(r"measured speedup x(\d+\.\d\d) against the dense model on a calibration batch of 8 x (\d+) tokens", printed)
    assert speedup is not None
    assert f"| measured speedup, batch 8 x {speedup.group(2)} tokens | 1 | x{speedup.group(1)} |" in (
        out / "README.md").read_text()
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["calibration"]["batches"] == 5 and record["arguments"]["flops_budget"] == 0.5
    assert record["cost"] <= record["budget"] == pytest.approx(0.5 * record["dense_cost"])
    assert record["dense_model_cost"] == record["dense_cost"]  # the input is the dense model
    assert f"of budget {record['budget']:.6g} ({record['cost'] / record['dense_cost']:.1%} of the dense model)" in printed
    assert (out / "tokenizer_config.json").exists()
    slim = load_slim(out)
    dense = tiny_model("bert")
    seq_len = record["calibration"]["seq_len"]
    assert model_flops(slim, seq_len) == record["cost"]
    # The slim checkpoint computes what the dense model computes under the recorded masks.
    masks = StructureMasks.from_dict(record["masks"])
    batch = tiny_batch()
    with torch.no_grad(), apply_masks(dense, masks.heads, masks.units):
        expected = dense(**batch).logits
    with torch.no_grad():
        torch.testing.assert_close(slim(**batch).logits, expected, rtol=0, atol=1e-5)


def test_posttrain_prunes_a_slim_checkpoint_with_a_layer_without_heads(tmp_path, capsys):
    """Issue 15: a slim input whose layer 0 has no heads raised a TypeError in rearrangement, and the cost was
    printed as "of dense" though it was a share of the (slim) input."""
    dense = tiny_model("bert")
    cut = StructureMasks.ones(dense)
    cut.heads[0].zero_()
    prune_with_masks(dense, cut).save_pretrained(tmp_path / "slim-in")
    save_tokenizer(tmp_path / "slim-in")
    write_examples(tmp_path / "calibration.jsonl", 24)
    out = tmp_path / "slim-out"
    main([
        "posttrain", str(tmp_path / "slim-in"), str(out), "--flops-budget", "0.6", "--data",
        str(tmp_path / "calibration.jsonl"), "--text-column", "sentence", "--label-column", "gold", "--batch-size", "8",
    ])
    printed = capsys.readouterr().out
    record = json.loads((out / RECORD_NAME).read_text())
    slim_in, slim_out = load_slim(tmp_path / "slim-in"), load_slim(out)
    seq_len = record["calibration"]["seq_len"]
    assert record["dense_cost"] == model_flops(slim_in, seq_len)
    assert record["dense_model_cost"] == model_flops(dense, seq_len) > record["dense_cost"]
    assert record["cost"] == model_flops(slim_out, seq_len) <= record["budget"]
    of_input, of_dense = record["cost"] / record["dense_cost"], record["cost"] / record["dense_model_cost"]
    line = (f"cost {record['cost']:.6g} of budget {record['budget']:.6g} ({of_input:.1%} of the input model, "
            f"{of_dense:.1%} of the dense model)")
    assert line in printed and "of dense)" not in printed
    # The card's speedup and FLOPs limit are against the dense model the input was cut from, not the slim input.
    measured = re.search(r"measured speedup x(\d+\.\d\d) against the dense model it was cut from \(rebuilt from its "
                         r"config\) on a calibration batch of 8 x (\d+) tokens, side by side \(FLOPs limit x(\d+\.\d\d)\)",
                         printed)
    assert measured is not None
    assert float(measured.group(3)) == pytest.approx(model_flops(dense, int(measured.group(2)))
                                                     / model_flops(slim_out, int(measured.group(2))), abs=0.006)
    assert f"| 1 | x{measured.group(1)} |" in (out / "README.md").read_text()
    masks = StructureMasks.from_dict(record["masks"])
    assert masks.kept_heads()[0] == 0 and masks.heads[0].shape == (0,)
    batch = tiny_batch()
    with torch.no_grad(), apply_masks(slim_in, masks.heads, masks.units):
        expected = slim_in(**batch).logits
    with torch.no_grad():
        torch.testing.assert_close(slim_out(**batch).logits, expected, rtol=0, atol=1e-5)


def test_posttrain_on_unlabelled_data(checkpoint, tmp_path):
    out = tmp_path / "slim"
    main([
        "posttrain", str(checkpoint), str(out), "--flops-budget", "0.7", "--data", str(tmp_path / "calibration.jsonl"),
        "--text-column", "sentence", "--label-column", "", "--no-tune", "--no-rearrange",
    ])
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["tuning"] is None and list(record["stage_seconds"]) == ["gradients", "cost model", "search", "slim"]


def test_posttrain_latency_budget_counted_with_the_speed_model(checkpoint, tmp_path, capsys):
    out = tmp_path / "slim"
    main([
        "posttrain", str(checkpoint), str(out), "--latency-budget", "0.6", "--latency-model", "work",
        "--data", str(tmp_path / "calibration.jsonl"), "--text-column", "sentence", "--label-column", "gold",
        "--no-tune", "--no-rearrange",
    ])
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["arguments"]["latency_model"] == "work" and record["arguments"]["latency_budget"] == 0.6
    assert record["cost"] <= record["budget"] == pytest.approx(0.6 * record["dense_cost"])


def test_posttrain_needs_one_budget(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["posttrain", str(checkpoint), str(tmp_path / "o"), "--data", str(tmp_path / "calibration.jsonl")])
    assert "one of the arguments --flops-budget --latency-budget is required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as error:
        main(["posttrain", str(checkpoint), str(tmp_path / "o"), "--flops-budget", "1.5",
              "--data", str(tmp_path / "calibration.jsonl"), "--text-column", "sentence", "--label-column", "gold"])
    assert error.value.code == 2 and "--flops-budget: must be a finite number in (0, 1], got '1.5'" in capsys.readouterr().err
