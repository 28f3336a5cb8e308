import argparse
import json

import pytest

from nn_prune_ext import InputError, bake_model, load_slim, model_flops, optimize_model
from nn_prune_ext.commands import bench, measure
from nn_prune_ext.flops import layer_shapes
from nn_prune_ext.slim import drop_layers
from nn_prune_ext.slim.optimize import count_parameters

from conftest import tiny_model
from slim_helpers import masked_model

FAST = ["--seq-len", "8", "--warmup", "1", "--repeats", "3", "--threads", "1"]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nn-prune")
    bench.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["bench", *argv])


def table_rows(out: str) -> dict[int, list[str]]:
    """The table's data rows by batch size."""
    lines = out.splitlines()
    start = next(index for index, line in enumerate(lines) if line.split()[:1] == ["batch"]) + 2
    rows = {}
    for line in lines[start:]:
        fields = line.split()
        if not fields or not fields[0].isdigit():
            break
        rows[int(fields[0])] = fields
    return rows


def check_rows(out: str, results: dict, batch_sizes: list[int]) -> None:
    rows = table_rows(out)
    assert sorted(rows) == batch_sizes
    assert [row["batch_size"] for row in results["rows"]] == batch_sizes
    for row in results["rows"]:
        dense, slim = row["dense"], row["slim"]
        assert dense["repeats"] == slim["repeats"] == 3 and len(dense["samples_ms"]) == 3
        assert row["speedup"] == dense["median_ms"] / slim["median_ms"]
        assert row["speedup_over_flops"] == row["speedup"] / results["flops_speedup"]
        assert row["speed_limit"] > 0 and row["speedup_over_limit"] == row["speedup"] / row["speed_limit"]
        printed = rows[row["batch_size"]]
        # batch, dense ms, IQR, slim ms, IQR, speedup, FLOPs speedup, speedup/FLOPs, speed limit, speedup/limit
        assert len(printed) == 10
        assert float(printed[1]) == pytest.approx(dense["median_ms"], abs=5e-4)
        assert float(printed[6]) == pytest.approx(results["flops_speedup"], abs=5e-4)
        assert float(printed[8]) == pytest.approx(row["speed_limit"], abs=5e-4)


def test_bench_a_slim_checkpoint(tmp_path, capsys):
    optimize_model(masked_model("llama")).save_pretrained(tmp_path / "slim")
    args = parse([str(tmp_path / "slim"), "--batch-size", "2,1", "--batch-size", "3", *FAST,
                  "--json", str(tmp_path / "out" / "bench.json")])
    results = bench.run(args)
    out = capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "bench.json").read_text()) == results
    check_rows(out, results, [1, 2, 3])
    assert "random weights" in out and "LlamaForSequenceClassification" in out
    # The dense reference has the shapes of the model the slim one was cut from.
    dense, slim = tiny_model("llama"), load_slim(tmp_path / "slim")
    assert results["flops"] == {"dense": model_flops(dense, 8), "slim": model_flops(slim, 8)}
    assert results["flops_speedup"] == model_flops(dense, 8) / model_flops(slim, 8)
    assert results["parameters"] == {"dense": count_parameters(dense), "slim": count_parameters(slim)}
    assert (results["seq_len"], results["threads"], results["repeats"]) == (8, 1, 3)


def test_bench_a_zero_filled_checkpoint(tmp_path, capsys):
    filled = bake_model(masked_model("bert"))
    filled.save_pretrained(tmp_path / "filled")
    results = bench.run(parse([str(tmp_path / "filled"), "--batch-size", "1", *FAST, "--json",
                               str(tmp_path / "bench.json")]))
    check_rows(capsys.readouterr().out, results, [1])
    slim = optimize_model(filled)
    assert results["flops_speedup"] == model_flops(filled, 8) / model_flops(slim, 8)
    assert results["parameters"]["slim"] == count_parameters(slim)
    assert json.loads((tmp_path / "bench.json").read_text())["description"].startswith("baked or zero-filled")


def test_bench_a_checkpoint_that_lost_layers_against_all_the_dense_layers(tmp_path, capsys):
    model = tiny_model("bert", num_hidden_layers=3)
    drop_layers(model, [1]).save_pretrained(tmp_path / "shallower")
    results = bench.run(parse([str(tmp_path / "shallower"), "--batch-size", "1", *FAST]))
    check_rows(capsys.readouterr().out, results, [1])
    assert results["flops"]["dense"] == model_flops(model, 8) and results["flops_speedup"] == pytest.approx(1.5)
    assert results["parameters"]["dense"] == count_parameters(model)
    assert "random weights" in results["description"]


def test_dense_reference_of_a_slim_model_has_the_dense_shapes():
    dense = tiny_model("qwen2")
    slim = optimize_model(masked_model("qwen2"))
    reference = measure.dense_reference(slim)
    assert type(reference) is type(dense)
    assert layer_shapes(reference) == layer_shapes(dense)
    assert reference.dtype == slim.dtype and not reference.training


def test_the_measuring_helpers_still_resolve_from_bench():
    # benchmarks/slim_speedup.py and analysis/posttrain_latency.py import random_inputs from commands.bench.
    from nn_prune_ext.commands.bench import random_inputs

    assert random_inputs is measure.random_inputs
    assert all(getattr(bench, name) is getattr(measure, name) for name in bench._MEASURE_NAMES)
    with pytest.raises(AttributeError, match="module 'nn_prune_ext.commands.bench' has no attribute 'nothing'"):
        bench.nothing


def test_bad_arguments(tmp_path):
    tiny_model("bert").save_pretrained(tmp_path / "dense")
    with pytest.raises(ValueError, match="longer than the model's max_position_embeddings \\(64\\)"):
        bench.run(parse([str(tmp_path / "dense"), "--seq-len", "65", "--repeats", "1"]))
    with pytest.raises(SystemExit):  # argparse: "argument --repeats: must be a whole number >= 1, got 0"
        parse([str(tmp_path / "dense"), "--repeats", "0"])
    with pytest.raises(InputError, match="--device 'cuda:7' is not available on this machine; available: cpu"):
        bench.run(parse([str(tmp_path / "dense"), "--device", "cuda:7"]))
    with pytest.raises(InputError, match="--device 'gpu' is not a device name; use one of cpu"):
        bench.run(parse([str(tmp_path / "dense"), "--device", "gpu"]))
    with pytest.raises(SystemExit):
        parse([str(tmp_path / "dense"), "--batch-size", "1,0"])
