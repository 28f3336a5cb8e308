import copy
import importlib.util
import struct
import sys
from pathlib import Path

import numpy
import pytest
import torch
from matplotlib import colormaps
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from nn_prune_ext import InputError, SparseArgs, bake_model, get_layout, optimize_model, patch_model
from nn_prune_ext import plots
from nn_prune_ext.flops import kept_layer_shapes, layer_shapes
from nn_prune_ext.importance import collect_mask_gradients, taylor_importance
from nn_prune_ext.plots import (
    DENSE_COLOR,
    DPI,
    FIGURE_SIZE,
    HEADS_COLOR,
    KEPT_PER_LAYER_PICTURE,
    MASK_DENSITY_PICTURE,
    NO_HEAD_COLOR,
    REMOVED_COLOR,
    UNITS_COLOR,
    RunResult,
    as_slim,
    dense_layer_shapes,
    load_runs,
    matrix_densities,
    pareto_frontier,
    plot_frontier,
    plot_head_importance,
    plot_kept_per_layer,
    plot_mask_density,
)
from nn_prune_ext.scores import MaskScores
from nn_prune_ext.slim import kept_head_indices
from nn_prune_ext.slim.layers import dense_num_layers, kept_layer_indices

from conftest import GQA_TYPES, HEADS, INTERMEDIATE, tiny_batch, tiny_model
from slim_helpers import HEAD_AND_UNIT_ARGS, masked_model

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


# ----- checking what a picture shows -----------------------------------------------------------
class Drawn:
    """Records the figures the plots draw (and still writes them)."""

    def __init__(self, monkeypatch):
        self.figures = []
        self._save = plots._save
        monkeypatch.setattr(plots, "_save", self.save)

    def save(self, figure, path):
        self.figures.append(figure)
        return self._save(figure, path)


def rendered(path) -> numpy.ndarray:
    """The pixels of a written PNG (RGB, 0 to 1), after checking its size and that it is not blank."""
    assert png_size(path) == EXPECTED_SIZE
    pixels = imread(path)[..., :3]
    assert pixels.shape == (EXPECTED_SIZE[1], EXPECTED_SIZE[0], 3)
    assert pixels.std() > 0.05 and len(numpy.unique(pixels.reshape(-1, 3), axis=0)) > 20
    return pixels


def colour_at(pixels: numpy.ndarray, axes, x: float, y: float) -> tuple[float, float, float]:
    """The colour of the rendered picture at data point (x, y) of `axes` (the figure as saved)."""
    column, row = axes.transData.transform((x, y))
    return tuple(float(value) for value in pixels[int(pixels.shape[0] - row), int(column)])


def assert_legends_off_the_data(figure) -> None:
    """The figure has a legend, wholly inside the picture, and it overlaps no axes (data area or colour bar)."""
    renderer = figure.canvas.get_renderer()
    legends = list(figure.legends) + [axes.get_legend() for axes in figure.axes if axes.get_legend() is not None]
    assert legends
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert figure.bbox.x0 <= box.x0 and box.x1 <= figure.bbox.x1 and figure.bbox.y0 <= box.y0 and box.y1 <= figure.bbox.y1
        for axes in figure.axes:
            assert not box.overlaps(axes.get_window_extent(renderer)), (legend, axes)


def mask_fractions(model) -> dict[str, list[float]]:
    """What a patched head-and-unit model keeps, read from its raw scores (kept when > 0)."""
    result = {}
    for layer in get_layout(model).iter_layers(model):
        for name, projection in layer.projections.items():
            result.setdefault(name, []).append(float((projection.module.source.scores > 0).float().mean()))
    return result


def check_mask_density(figure, path, densities: dict[str, list[float]]) -> None:
    """The heat map of `figure` (written to `path`) shows `densities`, cell by cell, in the file too."""
    axes = figure.axes[0]
    values = numpy.array(list(densities.values()), dtype=float).T  # layers x matrices
    assert axes.images[0].get_array().filled(numpy.nan) == pytest.approx(values)
    assert [label.get_text() for label in axes.get_xticklabels()] == list(densities)
    assert figure.axes[1].get_ylabel() == "share of the matrix's weights the masks keep"  # the colour bar
    pixels = rendered(path)
    for (row, column), value in numpy.ndenumerate(values):
        # Off the cell's centre, where its number is written.
        expected = to_rgb(colormaps["viridis"](value))
        assert colour_at(pixels, axes, column - 0.4, row - 0.4) == pytest.approx(expected, abs=0.02)


def kept_sizes(slim) -> list[tuple[int, int, int, int]]:
    """Per layer of the dense model: (heads kept, dense heads, FFN units kept, dense units), read from the
    slim model's modules; a layer dropped whole keeps nothing."""
    sizes = [(0, HEADS, 0, INTERMEDIATE)] * dense_num_layers(slim.config)
    for layer, index in zip(get_layout(slim).iter_layers(slim), kept_layer_indices(slim.config)):
        sizes[index] = (layer.num_heads, HEADS, layer.ffn_down.in_features, INTERMEDIATE)
    return sizes


def check_kept_per_layer(figure, path, sizes: list[tuple[int, int, int, int]], dropped) -> None:
    """The kept-per-layer bars of `figure` (written to `path`) show `sizes` (see `kept_sizes`)."""
    axes = figure.axes[0]
    dense_bars, head_bars, unit_bars = axes.containers
    head_shares = [kept / dense for kept, dense, _, _ in sizes]
    unit_shares = [kept / dense for _, _, kept, dense in sizes]
    assert [bar.get_width() for bar in dense_bars] == [1.0] * len(sizes)
    assert [bar.get_width() for bar in head_bars] == pytest.approx(head_shares)
    assert [bar.get_width() for bar in unit_bars] == pytest.approx(unit_shares)
    labels = [["dropped" if index in dropped else f"{row[first]}/{row[first + 1]}" for index, row in enumerate(sizes)]
              for first in (0, 2)]
    assert [text.get_text() for text in axes.texts] == labels[0] + labels[1]
    assert [text.get_text() for text in figure.legends[0].get_texts()] == [
        "attention heads kept", "FFN units kept", "dense model (100%)"
    ]
    assert_legends_off_the_data(figure)
    pixels = rendered(path)
    for layer, (head_share, unit_share) in enumerate(zip(head_shares, unit_shares)):
        for share, colour, y in ((head_share, HEADS_COLOR, layer - 0.19), (unit_share, UNITS_COLOR, layer + 0.19)):
            if share > 0.05:  # the middle of the bar
                assert colour_at(pixels, axes, share / 2, y) == pytest.approx(to_rgb(colour), abs=0.02)
            if share < 0.75:  # just before 100%, right of the bar and its label: the dense size in grey
                assert colour_at(pixels, axes, 0.98, y) == pytest.approx(to_rgb(DENSE_COLOR), abs=0.02)


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


def test_pictures_of_a_model_with_a_dropped_middle_layer(tmp_path, monkeypatch):
    masked = llama_without_middle_layer()
    slim = optimize_model(masked)
    assert slim.slim_report.dropped_layers == [1] and slim.config.num_hidden_layers == 2
    densities, slim_densities = matrix_densities(masked), matrix_densities(slim)
    assert all(len(values) == 3 and values[1] == 0.0 for values in slim_densities.values())
    for name in ("ffn_up", "ffn_gate", "ffn_down"):
        assert slim_densities[name] == densities[name]  # per dense layer, the FFN cut exactly

    drawn = Drawn(monkeypatch)
    path = plot_kept_per_layer(slim, tmp_path / "kept.png")
    check_kept_per_layer(drawn.figures[-1], path, kept_sizes(slim), dropped=[1])
    assert [label.get_text() for label in drawn.figures[-1].axes[0].get_yticklabels()] == [
        "layer 0", "layer 1 (dropped)", "layer 2"
    ]
    # The masks of the patched model, not the sizes of the slim one: a slim model has no mask density.
    path = plot_mask_density(masked, tmp_path / MASK_DENSITY_PICTURE)
    check_mask_density(drawn.figures[-1], path, mask_fractions(masked))
    with pytest.raises(InputError, match="has none. For what a slim, baked or dense model keeps per layer, use plot_kept"):
        plot_mask_density(slim, tmp_path / "slim.png")


def test_mask_density_is_drawn_from_the_masks_only(tmp_path, monkeypatch):
    masked = masked_model("bert")
    drawn = Drawn(monkeypatch)
    path = plot_mask_density(masked, tmp_path / "sub" / MASK_DENSITY_PICTURE)
    assert path == tmp_path / "sub" / "mask_density.png"
    figure = drawn.figures[-1]
    check_mask_density(figure, path, mask_fractions(masked))
    assert figure.get_suptitle() == "Mask density of each prunable matrix (before slimming)"
    for model in (bake_model(copy.deepcopy(masked)), optimize_model(masked), tiny_model("bert")):
        with pytest.raises(InputError, match=f"this {type(model).__name__} has none"):
            plot_mask_density(model, tmp_path / "refused.png")
    given = {"query": [1.0, 0.5], "ffn_up": [0.25, 0.0]}
    path = plot_mask_density(given, tmp_path / "given.png")
    check_mask_density(drawn.figures[-1], path, given)
    with pytest.raises(ValueError, match="one density per layer"):
        plot_mask_density({"query": [1.0, 0.5], "ffn_up": [0.25]}, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="between 0 and 1; got 1.5 for 'key'"):
        plot_mask_density({"query": [1.0, 0.5], "key": [0.25, 1.5]}, tmp_path / "bad.png")


@pytest.mark.parametrize("model_type", ["qwen2", "bert"])
def test_kept_per_layer_of_a_patched_model_shows_what_slimming_keeps(tmp_path, monkeypatch, model_type):
    masked = masked_model(model_type)
    drawn = Drawn(monkeypatch)
    path = plot_kept_per_layer(masked, tmp_path / KEPT_PER_LAYER_PICTURE)
    slim = optimize_model(masked)
    check_kept_per_layer(drawn.figures[-1], path, kept_sizes(slim), dropped=slim.slim_report.dropped_layers)
    assert drawn.figures[-1].get_suptitle() == "Kept per layer, as a share of the dense model"


def keeping_heads(model_type: str, heads: list[list[int]]):
    """A tiny patched model whose layer `i` keeps exactly the heads `heads[i]` (numbered as in the dense
    model) and every FFN unit."""
    model = tiny_model(model_type, num_hidden_layers=len(heads))
    patch_model(model, SparseArgs(**HEAD_AND_UNIT_ARGS))
    with torch.no_grad():
        for layer, kept in zip(get_layout(model).iter_layers(model), heads):
            for name, projection in layer.projections.items():
                scores = projection.module.source.scores
                if name.startswith("ffn"):
                    scores.fill_(1.0)
                else:
                    scores.copy_(torch.tensor([1.0 if head in kept else -1.0 for head in range(HEADS)]))
    return model.eval()


LABELLED = {**tiny_batch(), "labels": torch.tensor([0, 1, 2, 1])}


def test_head_importance_of_a_slim_model_names_the_dense_heads_and_marks_the_removed_ones(tmp_path, monkeypatch):
    heads = [[1, 3], [0, 2, 3]]
    masked = keeping_heads("bert", heads)
    slim = optimize_model(masked)
    assert [layer.num_heads for layer in get_layout(slim).iter_layers(slim)] == [2, 3]
    importance = taylor_importance(collect_mask_gradients(slim, [LABELLED]))
    # Measured on the patched model, heads keep their dense numbers: a kept head scores there what it scores
    # in the slim model, whatever its position in the slim layer.
    dense_numbering = taylor_importance(collect_mask_gradients(masked, [LABELLED])).heads
    expected = torch.full((2, HEADS), float("nan"))
    for layer, kept in enumerate(heads):
        expected[layer, kept] = dense_numbering[layer, kept]
    assert torch.allclose(importance.heads[0, :2], dense_numbering[0, [1, 3]], rtol=1e-4, atol=1e-7)

    drawn = Drawn(monkeypatch)
    path = plot_head_importance(importance, tmp_path / "importance.png", model=slim)
    figure = drawn.figures[-1]
    axes = figure.axes[0]
    top = float(expected.nan_to_num(-1.0).max())
    assert axes.images[0].get_array().filled(float("nan")) == pytest.approx(
        (expected / top).numpy(), nan_ok=True, rel=1e-3
    )
    removed = [[head not in kept for head in range(HEADS)] for kept in heads]
    assert (~axes.images[1].get_array().mask).tolist() == removed  # the "removed" layer covers exactly those
    assert [label.get_text() for label in axes.get_xticklabels()] == ["0", "1", "2", "3"]
    assert axes.get_xlabel() == "head (numbered as in the dense model)"
    assert [text.get_text() for text in figure.legends[0].get_texts()] == ["removed by slimming (no score)"]
    assert_legends_off_the_data(figure)
    pixels = rendered(path)
    for layer in range(2):
        for head in range(HEADS):
            colour = REMOVED_COLOR if removed[layer][head] else colormaps["viridis"](float(expected[layer, head]) / top)
            assert colour_at(pixels, axes, head - 0.35, layer - 0.35) == pytest.approx(to_rgb(colour), abs=0.02)


def test_head_importance_of_a_slim_model_with_a_dropped_layer(tmp_path, monkeypatch):
    slim = optimize_model(masked_model("llama"))  # the emptied last layer is dropped
    importance = taylor_importance(collect_mask_gradients(slim, [LABELLED]))
    assert importance.heads.shape[0] == 1
    drawn = Drawn(monkeypatch)
    plot_head_importance(importance, tmp_path / "importance.png", model=slim)
    axes = drawn.figures[-1].axes[0]
    assert [label.get_text() for label in axes.get_yticklabels()] == ["layer 0", "layer 1 (dropped)"]
    drawn_values = axes.images[0].get_array().filled(float("nan"))
    assert drawn_values.shape == (2, HEADS) and numpy.isnan(drawn_values[1]).all()
    assert (~axes.images[1].get_array().mask)[1].all()  # every head of the dropped layer is removed


def test_head_importance_of_a_slim_checkpoint_that_does_not_record_its_heads(tmp_path, monkeypatch):
    slim = optimize_model(keeping_heads("bert", [[1, 3], [0, 2, 3]]))
    del slim.config.nn_prune_slim["kept_heads"]  # as checkpoints saved before every stack recorded its heads
    assert kept_head_indices(slim) is None
    importance = taylor_importance(collect_mask_gradients(slim, [LABELLED]))
    drawn = Drawn(monkeypatch)
    plot_head_importance(importance, tmp_path / "importance.png", model=slim)
    axes = drawn.figures[-1].axes[0]
    assert axes.get_xlabel().startswith("head, in the slim layer's order (this checkpoint does not record")
    top = float(importance.heads.nan_to_num(-1.0).max())
    expected = torch.full((2, HEADS), float("nan"))
    expected[:, :3] = importance.heads / top  # the slim layers have 2 and 3 heads, in their own order
    assert axes.images[0].get_array().filled(float("nan")) == pytest.approx(expected.numpy(), nan_ok=True, rel=1e-3)
    assert (~axes.images[1].get_array().mask).tolist() == [[False, False, True, True], [False, False, False, True]]


def test_head_importance_without_a_model(tmp_path, monkeypatch):
    drawn = Drawn(monkeypatch)
    values = [[0.1, 0.2], [0.4, float("nan")]]
    path = plot_head_importance(values, tmp_path / "list.png", layer_indices=[0, 2])
    axes = drawn.figures[-1].axes[0]
    expected = numpy.array([[0.25, 0.5], [1.0, numpy.nan]])  # relative to the largest score
    assert axes.images[0].get_array().filled(numpy.nan) == pytest.approx(expected, nan_ok=True)
    assert len(axes.images) == 1  # nothing is marked removed without the model
    assert [label.get_text() for label in axes.get_yticklabels()] == ["layer 0", "layer 2"]
    assert [text.get_text() for text in drawn.figures[-1].legends[0].get_texts()] == ["no such head in this layer"]
    assert_legends_off_the_data(drawn.figures[-1])
    assert colour_at(rendered(path), axes, 1.35, 1.35) == pytest.approx(to_rgb(NO_HEAD_COLOR), abs=0.02)
    with pytest.raises(ValueError, match=r"2-d \[layers, heads\]"):
        plot_head_importance(torch.ones(4), tmp_path / "bad.png")
    with pytest.raises(ValueError, match="layer_indices names 3 layers, but the importance has 2 rows"):
        plot_head_importance(values, tmp_path / "bad.png", layer_indices=[0, 1, 2])
    slim = optimize_model(masked_model("bert"))
    with pytest.raises(ValueError, match="Pass model or layer_indices, not both"):
        plot_head_importance(values, tmp_path / "bad.png", model=slim, layer_indices=[0, 1])
    with pytest.raises(ValueError, match="has 3 rows, but the model has 2 layers"):
        plot_head_importance([[0.1, 0.2]] * 3, tmp_path / "bad.png", model=slim)


RESULTS = """{"name": "dense", "accuracy": 0.88, "speedup": 1.0, "params_ratio": 1.0}

{"name": "hybrid", "accuracy": 0.87, "speedup": 2.4, "params_ratio": 0.42, "flops_ratio": 0.31, "seed": 3}
{"name": "struct", "accuracy": 0.85, "speedup": 2.0}
{"name": "fast", "accuracy": 0.80, "speedup": 3.5}
"""


def test_load_runs_and_frontier(tmp_path, monkeypatch):
    (tmp_path / "runs.jsonl").write_text(RESULTS)
    runs = load_runs(tmp_path / "runs.jsonl")
    assert runs[1] == RunResult("hybrid", "accuracy", 0.87, 2.4, params_ratio=0.42, flops_ratio=0.31)
    assert [run.name for run in runs] == ["dense", "hybrid", "struct", "fast"]
    assert [run.name for run in pareto_frontier(runs)] == ["dense", "hybrid", "fast"]  # struct: hybrid beats it
    drawn = Drawn(monkeypatch)
    path = plot_frontier(runs, tmp_path / "frontier.png")
    figure = drawn.figures[-1]
    axes = figure.axes[0]
    points = [[1.0, 0.88], [2.4, 0.87], [2.0, 0.85], [3.5, 0.80]]
    assert axes.collections[0].get_offsets().tolist() == points
    lines = {line.get_label(): line.get_xydata().tolist() for line in axes.lines}
    assert lines["Pareto frontier"] == [points[index] for index in (0, 1, 3)]
    assert lines["dense baseline"] == [[0.0, 0.88], [1.0, 0.88]]  # axhline: axes x from 0 to 1 at the dense accuracy
    assert [text.get_text() for text in axes.texts] == [
        "dense (100% params)", "hybrid (42% params)", "struct", "fast"
    ]
    assert figure.get_suptitle() == "accuracy vs speedup"
    assert [text.get_text() for text in figure.legends[0].get_texts()] == ["dense baseline", "Pareto frontier", "runs"]
    assert_legends_off_the_data(figure)
    pixels = rendered(path)
    assert colour_at(pixels, axes, 2.0, 0.85) == pytest.approx(to_rgb("#4c72b0"), abs=0.02)  # struct's point
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
    # A slim checkpoint has no masks: what each layer kept, and no mask density.
    assert sorted(path.name for path in (tmp_path / "pictures").iterdir()) == ["kept_per_layer.png"]
    assert capsys.readouterr().out == f"written {tmp_path / 'pictures' / 'kept_per_layer.png'}\n"
    rendered(tmp_path / "pictures" / "kept_per_layer.png")


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"name": "a", "accuracy": NaN, "speedup": 2.0}', r"line 1 of .*: value must be a finite number, got nan"),
        ('{"name": "a", "accuracy": 0.5, "speedup": Infinity}', r"line 1 of .*: speedup must be a finite number, got inf"),
        ('{"name": "a", "accuracy": 0.5, "speedup": 2.0, "flops_ratio": NaN}', r"flops_ratio must be a finite number"),
        ('{"name": "a", "accuracy": 0.5, "speedup": -2.0}', r"line 1 of .*: speedup must be > 0 .*got -2\.0"),
        ('{"name": "a", "accuracy": 0.5, "speedup": 1e400}', r"speedup must be a finite number, got inf"),
    ],
    ids=["nan_value", "infinite_speedup", "nan_ratio", "negative_speedup", "overflowing_speedup"],
)
def test_load_runs_refuses_values_that_are_not_finite_naming_the_line(tmp_path, line, message):
    # Before: json read NaN and Infinity, and the run was drawn nowhere (or broke the frontier) without a word.
    (tmp_path / "runs.jsonl").write_text(line + "\n")
    with pytest.raises(InputError, match=message):
        load_runs(tmp_path / "runs.jsonl")


def test_load_runs_refuses_a_path_that_is_not_a_file(tmp_path):
    with pytest.raises(InputError, match=r"The results file '.*missing\.jsonl' does not exist"):
        load_runs(tmp_path / "missing.jsonl")
    with pytest.raises(InputError, match=r"The results file '.*' is a folder"):
        load_runs(tmp_path)
    with pytest.raises(InputError, match=r"load_runs takes the path of a results file .*got NoneType"):
        load_runs(None)
