"""`nn-prune heal`: post-training pruning, then healing by distillation, from JSON-lines files."""

from __future__ import annotations

import json

import pytest

from nn_prune_ext import load_slim, model_flops
from nn_prune_ext.cli import main
from nn_prune_ext.commands.heal import RECORD_NAME

from conftest import tiny_model
from test_commands_report import save_tokenizer, write_examples


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "dense"
    tiny_model("bert").save_pretrained(path)
    save_tokenizer(path)
    write_examples(tmp_path / "data.jsonl", 24)
    return path


def _argv(checkpoint, tmp_path, *extra: str) -> list[str]:
    data = str(tmp_path / "data.jsonl")
    return ["heal", str(checkpoint), str(tmp_path / "slim"), "--flops-budget", "0.5", "--data", data, "--train-data",
            data, "--eval-data", data, "--text-column", "sentence", "--label-column", "gold", "--batch-size", "8",
            "--learning-rate", "1e-3", *extra]


def test_heal_writes_a_healed_slim_checkpoint_and_its_record(checkpoint, tmp_path, capsys):
    main(_argv(checkpoint, tmp_path, "--rounds", "2"))
    printed = capsys.readouterr().out
    assert "round 2: kept 0.707 of its input's cost" in printed
    record = json.loads((tmp_path / "slim" / RECORD_NAME).read_text())
    assert [step["budget"] for step in record["rounds"]] == [pytest.approx(0.5 ** 0.5)] * 2
    # Round 2 prunes round 1's slim model: its cost is stated against both (issue 15).
    first, second = record["rounds"]
    assert second["input_cost"] == first["cost"]
    assert (f"({second['cost'] / second['input_cost']:.1%} of the input model, "
            f"{second['cost'] / first['input_cost']:.1%} of the dense model)") in printed.split("last round's search: ")[1]
    for step in record["rounds"]:
        assert step["eval_after"]["eval_loss"] != step["eval_before"]["eval_loss"]  # healing trained it
        assert step["train"]["train_loss"] > 0
    slim = load_slim(tmp_path / "slim")
    assert model_flops(slim, 8) <= 0.5 * model_flops(tiny_model("bert"), 8) * 1.05
    assert (tmp_path / "slim" / "tokenizer_config.json").exists()
    assert (tmp_path / "slim-healing" / "round-1").is_dir()
    assert "measured speedup x" in printed and "| measured speedup, batch " in (tmp_path / "slim" / "README.md").read_text()


def test_heal_refuses_a_missing_training_file(checkpoint, tmp_path, capsys):
    argv = _argv(checkpoint, tmp_path)
    argv[argv.index("--train-data") + 1] = str(tmp_path / "missing.jsonl")
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and "--train-data" in capsys.readouterr().err
