import copy
import importlib.util
import struct
import sys
from pathlib import Path

import pytest
import torch

from nn_prune_ext import bake_model, get_layout, optimize_model
from nn_prune_ext import plots
from nn_prune_ext.flops import kept_layer_shapes, layer_shapes
from nn_prune_ext.importance import collect_mask_gradients, taylor_importance
from nn_prune_ext.plots import (
    DPI,
    FIGURE_SIZE,
    RunResult,
    as_slim,
    dense_layer_shapes,
    load_runs,
    matrix_densities,
    pareto_frontier,
    plot_density_heatmaps,
    plot_frontier,
    plot_head_importance,
    plot_kept_heads,
)
from nn_prune_ext.scores import MaskScores

from conftest import GQA_TYPES, tiny_batch, tiny_model
from slim_helpers import masked_model

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the PNG signature."""
    data = open(path, "rb").read()
    assert data[:8] == PNG_SIGNATURE
    length, chunk = struct.unpack(">I4s", data[8:16])
    assert (length, chunk) == (13, b"IHDR")
    assert data.endswith(b"IEND\xaeB`\x82")
    return struct.unpack(">II", data[16:24])


EXPECTED_SIZE = (800, 500)


def test_figure_size_is_fixed():
    assert (round(FIGURE_SIZE[0] * DPI), round(FIGURE_SIZE[1] * DPI)) == EXPECTED_SIZE


def mask_fractions(model) -> dict[str, list[float]]:
    """What a patched head-and-unit model keeps, read from its raw scores (kept when > 0)."""
    result = {}
    for layer in get_layout(model).iter_layers(model):
        for name, projection in layer.projections.items():
            result.setdefault(name, []).append(float((projection.module.source.scores > 0).float().mean()))
    return result


def test_matrix_densities_of_patched_baked_and_slim_models(model_type):
    masked = masked_model(model_type)
    densities = matrix_densities(masked)
    expected_names = ["query", "key", "value", "output", "ffn_up"]
    expected_names += ["ffn_gate", "ffn_down"] if get_layout(model_type).ffn_gate else ["ffn_down"]
    assert list(densities) == expected_names
    assert densities == mask_fractions(masked)
    assert densities["query"][-1] == 0.0 and densities["ffn_down"][-1] == 0.0  # the emptied last layer
    assert matrix_densities(bake_model(copy.deepcopy(masked))) == densities
    slim_densities = matrix_densities(optimize_model(masked))
    if model_type in GQA_TYPES:
        # Slimming may pad query heads or repeat key/value heads; the FFN is cut exactly.
        assert slim_densities["ffn_up"] == densities["ffn_up"] and slim_densities["ffn_down"] == densities["ffn_down"]
    else:
        assert slim_densities == densities


def test_as_slim_and_dense_layer_shapes():
    masked = masked_model("llama")
    slim = as_slim(masked)
    assert slim is not masked and type(slim).__name__ == "SlimLlamaForSequenceClassification"
    assert as_slim(slim) is slim
    assert dense_layer_shapes(slim) == layer_shapes(tiny_model("llama"))
    assert slim.slim_report.dropped_layers == [1]  # the emptied last layer of a pre-norm model
    kept_heads = [layer.heads[1] for layer in slim.slim_report.layers]
    assert [shape.num_heads for shape in kept_layer_shapes(slim)] == kept_heads and kept_heads[1] == 0


def llama_without_middle_layer():
    """A 3-layer patched llama whose middle layer loses everything (slimming drops it) and the others not."""
    masked = masked_model("llama", empty_last_layer=False, num_hidden_layers=3)
    middle = get_layout(masked).layer_list(masked)[1]
    with torch.no_grad():
        for scores in (module for module in middle.modules() if isinstance(module, MaskScores)):
            scores.scores.fill_(-1.0)
    return masked


class Drawn:
    """Records the figures the plots draw (and still writes them)."""

    def __init__(self, monkeypatch):
        self.figures = []
        self._save = plots._save
        monkeypatch.setattr(plots, "_save", self.save)

    def save(self, figure, path):
        self.figures.append(figure)
        return self._save(figure, path)


def test_pictures_of_a_model_with_a_dropped_middle_layer(tmp_path, monkeypatch):
    masked = llama_without_middle_layer()
    slim = optimize_model(masked)
    assert slim.slim_report.dropped_layers == [1] and slim.config.num_hidden_layers == 2
    densities, slim_densities = matrix_densities(masked), matrix_densities(slim)
    assert all(len(values) == 3 and values[1] == 0.0 for values in slim_densities.values())
    for name in ("ffn_up", "ffn_gate", "ffn_down"):
        assert slim_densities[name] == densities[name]  # per dense layer, the FFN cut exactly

    drawn = Drawn(monkeypatch)
    assert png_size(plot_kept_heads(slim, tmp_path / "kept.png")) == EXPECTED_SIZE
    kept, dense = kept_layer_shapes(slim), dense_layer_shapes(slim)
    heads_axes, units_axes = drawn.figures[0].axes
    for axes, sizes, dense_sizes in (
        (heads_axes, [s.num_heads for s in kept], [s.num_heads for s in dense]),
        (units_axes, [s.ffn_width for s in kept], [s.ffn_width for s in dense]),
    ):
        dense_bars, kept_bars = axes.containers
        assert [bar.get_height() for bar in dense_bars] == dense_sizes
        assert [bar.get_height() for bar in kept_bars] == sizes and sizes[1] == 0 and min(sizes[::2]) > 0
        assert [text.get_text() for text in axes.texts] == [str(sizes[0]), "dropped", str(sizes[2])]

    assert png_size(plot_density_heatmaps(slim, tmp_path / "density.png")) == EXPECTED_SIZE
    rows = [label.get_text() for label in drawn.figures[1].axes[0].get_yticklabels()]
    assert rows == ["layer 0", "layer 1 (dropped)", "layer 2"]


def test_density_heatmaps_png(tmp_path):
    path = plot_density_heatmaps(masked_model("bert"), tmp_path / "sub" / "density.png")
    assert path == tmp_path / "sub" / "density.png"
    assert png_size(path) == EXPECTED_SIZE
    given = {"query": [1.0, 0.5], "ffn_up": [0.25, 0.0]}
    assert png_size(plot_density_heatmaps(given, tmp_path / "given.png")) == EXPECTED_SIZE
    with pytest.raises(ValueError, match="one density per layer"):
        plot_density_heatmaps({"query": [1.0, 0.5], "ffn_up": [0.25]}, tmp_path / "bad.png")


def test_kept_heads_png(tmp_path):
    assert png_size(plot_kept_heads(masked_model("qwen2"), tmp_path / "kept.png")) == EXPECTED_SIZE


def test_head_importance_png_of_a_slim_model(tmp_path):
    slim = optimize_model(masked_model("distilbert"))
    batch = {**tiny_batch(), "labels": torch.tensor([0, 1, 2, 1])}
    importance = taylor_importance(collect_mask_gradients(slim, [batch]))
    assert png_size(plot_head_importance(importance, tmp_path / "importance.png")) == EXPECTED_SIZE
    assert png_size(plot_head_importance([[0.1, 0.2], [0.3, float("nan")]], tmp_path / "list.png")) == EXPECTED_SIZE
    with pytest.raises(ValueError, match=r"2-d \[layers, heads\]"):
        plot_head_importance(torch.ones(4), tmp_path / "bad.png")


RESULTS = """{"name": "dense", "accuracy": 0.88, "speedup": 1.0, "params_ratio": 1.0}

{"name": "hybrid", "accuracy": 0.87, "speedup": 2.4, "params_ratio": 0.42, "flops_ratio": 0.31, "seed": 3}
{"name": "struct", "accuracy": 0.85, "speedup": 2.0}
{"name": "fast", "accuracy": 0.80, "speedup": 3.5}
"""


def test_load_runs_and_frontier(tmp_path):
    (tmp_path / "runs.jsonl").write_text(RESULTS)
    runs = load_runs(tmp_path / "runs.jsonl")
    assert runs[1] == RunResult("hybrid", "accuracy", 0.87, 2.4, params_ratio=0.42, flops_ratio=0.31)
    assert [run.name for run in runs] == ["dense", "hybrid", "struct", "fast"]
    assert [run.name for run in pareto_frontier(runs)] == ["dense", "hybrid", "fast"]  # struct: hybrid beats it
    assert png_size(plot_frontier(runs, tmp_path / "frontier.png")) == EXPECTED_SIZE
    f1 = {"name": "a", "metric": "f1", "value": 0.9, "speedup": 1.5}
    assert RunResult.from_dict(f1) == RunResult("a", "f1", 0.9, 1.5)
    with pytest.raises(ValueError, match="different metrics"):
        plot_frontier([f1, {"name": "b", "accuracy": 0.8, "speedup": 2.0}], tmp_path / "mixed.png")


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"name": "x", "accuracy": 0.8}', "line 2 of .* needs speedup"),
        ('{"name": "x", "accuracy": 0.8, "metric": "f1", "value": 0.7, "speedup": 2}', "either 'accuracy' or"),
        ('{"name": "x", "metric": "f1", "speedup": 2}', "'metric' and 'value' together"),
        ('{"name": "x", "accuracy": "high", "speedup": 2}', "must be numbers"),
        ("{name: x}", "line 2 of .* is not valid JSON"),
    ],
)
def test_bad_results_lines_are_named(tmp_path, line, message):
    (tmp_path / "runs.jsonl").write_text('{"name": "dense", "accuracy": 0.9, "speedup": 1}\n' + line + "\n")
    with pytest.raises(ValueError, match=message):
        load_runs(tmp_path / "runs.jsonl")


def test_missing_matplotlib_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r'pip install "nn_prune_ext\[plots\]"'):
        plot_frontier([{"name": "a", "accuracy": 0.9, "speedup": 1.0}], tmp_path / "frontier.png")
    assert not (tmp_path / "frontier.png").exists()


def load_script(name: str):
    path = Path(__file__).resolve().parents[1] / "analysis" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"analysis_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_analysis_scripts(tmp_path, capsys):
    (tmp_path / "runs.jsonl").write_text(RESULTS)
    load_script("plot_frontier").main([str(tmp_path / "runs.jsonl"), "-o", str(tmp_path / "frontier.png")])
    assert "Pareto frontier: dense (1.00x, 0.88), hybrid (2.40x, 0.87), fast (3.50x, 0.8)" in capsys.readouterr().out
    assert png_size(tmp_path / "frontier.png") == EXPECTED_SIZE
    optimize_model(masked_model("bert")).save_pretrained(tmp_path / "slim")
    load_script("plot_checkpoint").main([str(tmp_path / "slim"), "-o", str(tmp_path / "pictures")])
    assert [png_size(tmp_path / "pictures" / name) for name in ("density.png", "kept_heads.png")] == [EXPECTED_SIZE] * 2


def test_head_importance_rows_can_carry_dense_layer_indices(tmp_path):
    values = torch.tensor([[1.0, 0.5], [0.25, float("nan")]])
    path = plots.plot_head_importance(values, tmp_path / "importance.png", layer_indices=[0, 2])
    assert path.exists()
    with pytest.raises(ValueError, match="layer_indices names 3 layers, but the importance has 2 rows"):
        plots.plot_head_importance(values, tmp_path / "bad.png", layer_indices=[0, 1, 2])
