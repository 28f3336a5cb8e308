"""analysis/frontier.py: its settings, its table, and a short sweep that resumes."""

import importlib.util
import json
import os

import pytest

from nn_prune_ext.demo import setting_name

_SPEC = importlib.util.spec_from_file_location(
    "frontier", os.path.join(os.path.dirname(__file__), os.pardir, "analysis", "frontier.py")
)
frontier = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(frontier)


@pytest.mark.parametrize("setting, expected", [
    ("posttrain:0.6", dict(method="posttrain", flops_budget=0.6)),
    ("heal:0.4:2", dict(method="heal", flops_budget=0.4, heal_rounds=2)),
    ("movement:10", dict(method="movement", regularization_lambda=10.0, sparse_epochs=1.0)),
    ("movement:20:2", dict(method="movement", regularization_lambda=20.0, sparse_epochs=2.0)),
])
def test_settings_become_demo_arguments(tmp_path, setting, expected):
    arguments = frontier.demo_arguments(setting, str(tmp_path), quick=True)
    assert {name: getattr(arguments, name) for name in expected} == expected
    assert arguments.output_dir == str(tmp_path) and arguments.quick and arguments.dense_model_path is None


def test_a_dense_model_left_by_an_earlier_run_is_reused(tmp_path):
    (tmp_path / "dense").mkdir()
    (tmp_path / "dense" / "config.json").write_text("{}")
    assert frontier.demo_arguments("posttrain:0.5", str(tmp_path), quick=False).dense_model_path == str(tmp_path / "dense")


@pytest.mark.parametrize("setting", ["heal:0.4", "magic:1", "posttrain:half", "movement:1:2:3"])
def test_bad_settings_stop_with_the_accepted_forms(tmp_path, setting):
    with pytest.raises(SystemExit, match="frontier: setting"):
        frontier.demo_arguments(setting, str(tmp_path), quick=True)


def test_table_sorts_by_speedup_and_marks_the_pareto_runs(tmp_path):
    runs = [
        dict(name="dense", accuracy=0.80, speedup=1.0, flops_ratio=1.0),
        dict(name="b", accuracy=0.70, speedup=2.5, flops_ratio=0.4,
             run=dict(agreement=0.75, speed_limit=2.3, pruning_seconds=30.0)),
        dict(name="a", accuracy=0.79, speedup=2.0, flops_ratio=0.5,
             run=dict(agreement=0.9, speed_limit=1.9, pruning_seconds=300.0)),
        dict(name="c", accuracy=0.60, speedup=1.5, flops_ratio=0.6, run=dict(agreement=0.6, speed_limit=None)),
    ]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(run) + "\n" for run in runs))
    lines = frontier.table(str(path), "python analysis/frontier.py").splitlines()
    assert lines[0] == "Made with `python analysis/frontier.py`."
    body = lines[5:]
    assert [line.split("|")[1].strip() for line in body] == ["c", "a", "b"]
    assert body[1] == "| a | 79.00% | -1.0 | 90.0% | 2.00x | 2.00x | 1.90x | 300 | yes |"
    assert body[0].endswith("| n/a | nan |  |")  # c: dominated by a, no speed limit, no time


def test_a_quick_sweep_writes_the_picture_and_table_and_resumes(tmp_path, capsys):
    settings = ["posttrain:0.5", "heal:0.5:1"]
    frontier.main(["--quick", "--output_dir", str(tmp_path), "--settings", *settings])
    runs = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    names = [setting_name(frontier.demo_arguments(setting, str(tmp_path), True)) for setting in settings]
    assert [run["name"] for run in runs] == ["dense", *names]
    # The speedups and speed limits were measured again at the end, all models in one process.
    assert runs[0]["speedup"] == 1.0 and all(run["speedup"] > 0 and run["run"]["speed_limit"] > 0 for run in runs[1:])
    assert (tmp_path / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(name in (tmp_path / "frontier.md").read_text() for name in names)
    # The second setting started from the dense model the first one fine-tuned.
    assert runs[2]["run"]["dense_steps"] == 0 and runs[1]["run"]["dense_steps"] == 6
    capsys.readouterr()
    frontier.main(["--quick", "--output_dir", str(tmp_path), "--settings", *settings])
    assert capsys.readouterr().out.count("in " + str(tmp_path / "results.jsonl") + " already") == 2
