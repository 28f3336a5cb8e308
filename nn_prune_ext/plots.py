"""PNG pictures of a pruned model and of a set of pruning runs.

- `plot_density_heatmaps`: per layer, the density of each prunable matrix (query ... FFN down);
- `plot_kept_heads`: per layer, the attention heads and FFN units slimming keeps, against the dense sizes;
- `plot_head_importance`: a layers x heads heat map of head importance (`nn_prune_ext.importance`);
- `plot_frontier`: metric against speedup for a results file of runs, with the Pareto frontier.

matplotlib is optional (`pip install "nn_prune_ext[plots]"`) and imported only when a picture is
drawn. Figures are drawn with the Agg canvas directly (pyplot and its global backend are never
touched) at a fixed size: every PNG is `FIGURE_SIZE` x `DPI` = 800 x 500 pixels.

The results file read by `load_runs` holds one JSON object per line, one per run:

    {"name": "hybrid lambda=10", "accuracy": 0.874, "speedup": 2.41, "params_ratio": 0.42, "flops_ratio": 0.31}
    {"name": "dense", "metric": "f1", "value": 0.885, "speedup": 1.0}

`name` and `speedup` (dense latency / run latency) are required, with either `accuracy` or a
`metric` name and its `value` (higher is better); `params_ratio` and `flops_ratio` (pruned /
dense) are optional; other keys are ignored. A run with speedup 1.0 is the dense baseline.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .flops import LayerShape, dense_layer_shapes, kept_layer_shapes
from .arch import Projection, get_layout
from .patch import eval_grids
from .scores.masked_linear import MaskedLinear
from .slim import is_slim_model, optimize_model
from .slim.layers import dropped_layer_indices, kept_layer_indices
from .validation import InputError

__all__ = [
    "FIGURE_SIZE",
    "DPI",
    "MATRIX_NAMES",
    "RunResult",
    "load_runs",
    "pareto_frontier",
    "as_slim",
    "dense_layer_shapes",  # defined in nn_prune_ext.flops; kept importable from here
    "matrix_densities",
    "plot_density_heatmaps",
    "plot_kept_heads",
    "plot_head_importance",
    "plot_frontier",
]

FIGURE_SIZE = (8.0, 5.0)  # inches
DPI = 100
MATRIX_NAMES = ("query", "key", "value", "output", "ffn_up", "ffn_gate", "ffn_down")
INSTALL_HINT = 'pip install "nn_prune_ext[plots]"'
# Heat maps with more cells than this are left unannotated: the numbers would not be legible.
MAX_ANNOTATED_CELLS = 400


# ----- what the pictures show, read from models ------------------------------------------
def as_slim(model: nn.Module) -> nn.Module:
    """What slimming keeps of `model`: the model itself when it is slim and unpatched, else `optimize_model(model)`.

    Args:
        model: A model of a registered architecture (patched, baked, zero-filled, dense or slim).

    Returns:
        A slim model (a copy, unless `model` was one already).
    """
    if is_slim_model(model):
        return model
    return optimize_model(model)


def _dense_matrix_sizes(shape: LayerShape) -> dict[str, int]:
    attention = shape.num_heads * shape.head_dim * shape.hidden
    key_value = shape.num_kv_heads * shape.head_dim * shape.hidden
    ffn = shape.ffn_width * shape.hidden
    return {
        "query": attention, "key": key_value, "value": key_value, "output": attention,
        "ffn_up": ffn, "ffn_gate": ffn if shape.gated else 0, "ffn_down": ffn,
    }


def _effective_weight(projection: Projection, grids: dict[MaskedLinear, torch.Tensor]) -> torch.Tensor:
    """The weight a projection computes with: masked with its evaluation-mode mask (`eval_grids`) when patched."""
    module = projection.module
    if not isinstance(module, MaskedLinear):
        return projection.weight
    return module.masked_parameters(grids[module])[0]


@torch.no_grad()
def matrix_densities(model: nn.Module) -> dict[str, list[float]]:
    """Per prunable matrix, per layer: the fraction of the dense matrix's weights still in use.

    A weight is in use when it is nonzero after masking (the evaluation-mode masks of a patched
    model). The fraction is taken of the matrix's dense size, so a slim model's matrices count
    what slimming removed as well; under grouped-query attention a slim key/value matrix can
    exceed 1 where slimming repeated key/value heads.

    Args:
        model: A model of a registered architecture (patched, baked, zero-filled, dense or slim).

    Returns:
        `{matrix name: [density of layer 0, layer 1, ...]}` for the names of `MATRIX_NAMES` the
        architecture has (`ffn_gate` only for gated FFNs), with one density per layer of the dense
        model: a layer dropped whole (`nn_prune_ext.slim.layers`) has density 0.0.
    """
    layout = get_layout(model)
    names = [name for name in MATRIX_NAMES if name != "ffn_gate" or layout.ffn_gate]
    dense_shapes = dense_layer_shapes(model)
    result = {name: [0.0] * len(dense_shapes) for name in names}
    grids = eval_grids(model)
    # The model's layers are numbered from 0 after drops; the result follows the dense numbering.
    for layer, index in zip(layout.iter_layers(model), kept_layer_indices(model.config)):
        projections = layer.projections
        sizes = _dense_matrix_sizes(dense_shapes[index])
        for name in names:
            projection = projections.get(name)  # q/k/v are gone from a slim layer without heads
            kept = int(torch.count_nonzero(_effective_weight(projection, grids))) if projection is not None else 0
            result[name][index] = kept / sizes[name] if sizes[name] else 0.0
    return result


def _layer_labels(count: int, dropped: Sequence[int] = ()) -> list[str]:
    """`layer 0`, `layer 1`, ... with `(dropped)` after the layers removed whole."""
    return [f"layer {index}" + (" (dropped)" if index in dropped else "") for index in range(count)]


# ----- results files -------------------------------------------------------------------------
@dataclass(frozen=True)
class RunResult:
    """One pruning run of a results file (format: see the module docstring).

    Args:
        name: What the run is called in the pictures.
        metric: The metric's name (`"accuracy"` for the `accuracy` shorthand); higher is better.
        value: The metric's value.
        speedup: Dense latency / this run's latency.
        params_ratio: Parameters of the pruned model / of the dense one, if known.
        flops_ratio: FLOPs of the pruned model / of the dense one, if known.
    """

    name: str
    metric: str
    value: float
    speedup: float
    params_ratio: float | None = None
    flops_ratio: float | None = None

    @classmethod
    def from_dict(cls, record: Mapping[str, Any], where: str = "a run") -> "RunResult":
        """Read one run from its JSON object; `where` names it in error messages."""
        if not isinstance(record, Mapping):
            raise InputError(f"{where} is not a JSON object: write one object per line, e.g. {_EXAMPLE}.")
        missing = [key for key in ("name", "speedup") if key not in record]
        has_accuracy, has_metric = "accuracy" in record, "metric" in record or "value" in record
        if has_accuracy == has_metric:
            missing.append("either 'accuracy' or 'metric' and 'value'")
        elif has_metric and not {"metric", "value"} <= set(record):
            missing.append("'metric' and 'value' together")
        if missing:
            raise InputError(f"{where} needs {', '.join(missing)}; for example {_EXAMPLE}.")
        metric, value = ("accuracy", record["accuracy"]) if has_accuracy else (record["metric"], record["value"])
        try:
            return cls(
                name=str(record["name"]),
                metric=str(metric),
                value=float(value),
                speedup=float(record["speedup"]),
                params_ratio=_optional_float(record.get("params_ratio")),
                flops_ratio=_optional_float(record.get("flops_ratio")),
            )
        except (TypeError, ValueError) as error:
            raise InputError(f"{where}: the metric value, speedup and ratios must be numbers ({error}).") from error


_EXAMPLE = '{"name": "hybrid", "accuracy": 0.87, "speedup": 2.4, "params_ratio": 0.42}'


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def load_runs(path: str | os.PathLike) -> list[RunResult]:
    """Read a results file: one JSON object per line, blank lines skipped.

    Raises:
        ValueError: For a line that is not JSON or misses a required key; the message names the line.
    """
    runs = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"line {number} of {path}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{where} is not valid JSON ({error.msg}).") from error
            runs.append(RunResult.from_dict(record, where))
    return runs


def pareto_frontier(runs: Sequence[RunResult]) -> list[RunResult]:
    """The runs no other run beats on both speedup and metric, by increasing speedup."""
    frontier = [
        run
        for run in runs
        if not any(
            other.speedup >= run.speedup and other.value >= run.value
            and (other.speedup > run.speedup or other.value > run.value)
            for other in runs
        )
    ]
    return sorted(frontier, key=lambda run: (run.speedup, -run.value))


# ----- drawing -------------------------------------------------------------------------------
def _new_figure():
    """A fixed-size figure on an Agg canvas (no pyplot, no global backend change)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(f"nn_prune_ext's pictures need matplotlib: {INSTALL_HINT}") from error
    figure = Figure(figsize=FIGURE_SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # No bbox_inches="tight": it would make the pixel size depend on the content.
    figure.savefig(path, format="png", dpi=DPI)
    return path


def _heatmap(figure, values, row_labels: Sequence[str], column_labels: Sequence[str], *, vmax: float,
             number_format: str, colorbar_label: str, title: str) -> None:
    """Draw `values` (a 2-d array, NaN for empty cells) as an annotated heat map."""
    from matplotlib import colormaps

    axes = figure.add_subplot()
    colormap = colormaps["viridis"].with_extremes(bad="#e6e6e6")
    image = axes.imshow(values, cmap=colormap, vmin=0.0, vmax=vmax, aspect="auto", interpolation="nearest")
    axes.set_xticks(range(len(column_labels)), labels=column_labels)
    axes.set_yticks(range(len(row_labels)), labels=row_labels)
    axes.set_title(title)
    figure.colorbar(image, ax=axes, label=colorbar_label)
    rows, columns = values.shape
    if rows * columns <= MAX_ANNOTATED_CELLS:
        size = 9 if rows * columns <= 100 else 7 if rows * columns <= 200 else 6
        for row in range(rows):
            for column in range(columns):
                value = float(values[row, column])
                if not math.isnan(value):
                    # Dark text on the light (high) end of viridis, light text on the dark end.
                    color = "black" if value > 0.6 * vmax else "white"
                    axes.text(column, row, format(value, number_format), ha="center", va="center",
                              fontsize=size, color=color)


def plot_density_heatmaps(
    model_or_densities: nn.Module | Mapping[str, Sequence[float]], path: str | os.PathLike, *, title: str | None = None
) -> Path:
    """A layers x matrices heat map of the density of every prunable matrix.

    Args:
        model_or_densities: A model (its densities are read with `matrix_densities`) or such a
            mapping of matrix name to per-layer densities.
        path: Where to write the PNG.
        title: The title; by default "Density of each pruned matrix".

    Returns:
        `path`, as a `Path`.
    """
    figure = _new_figure()  # first: it says how to install matplotlib (and numpy with it)
    import numpy as np

    densities, dropped = model_or_densities, []
    if isinstance(densities, nn.Module):
        dropped = dropped_layer_indices(densities.config)
        densities = matrix_densities(densities)
    lengths = {len(values) for values in densities.values()}
    if len(lengths) != 1:
        raise InputError(
            f"Every matrix needs one density per layer; got {sorted(lengths)} values across "
            f"{list(densities)}. Pass matrix_densities(model) or a mapping of equally long lists."
        )
    values = np.array([list(column) for column in densities.values()], dtype=float).T  # layers x matrices
    _heatmap(
        figure, values, _layer_labels(values.shape[0], dropped), list(densities),
        vmax=max(1.0, float(np.nanmax(values, initial=0.0))), number_format=".0%",
        colorbar_label="fraction of the dense matrix in use", title=title or "Density of each pruned matrix",
    )
    return _save(figure, path)


def plot_kept_heads(model: nn.Module, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Bars of the attention heads and FFN units each layer keeps, over the dense sizes.

    There is one bar per layer of the dense model; a layer dropped whole keeps nothing and its
    bars are labelled "dropped".

    Args:
        model: Any model of a registered architecture; unless it is slim (and unpatched), what
            `optimize_model` would keep of it is shown.
        path: Where to write the PNG.
        title: The figure title; by default "Kept per layer (dense in grey)".

    Returns:
        `path`, as a `Path`.
    """
    slim = as_slim(model)
    kept, dense = kept_layer_shapes(slim), dense_layer_shapes(slim)  # both per layer of the dense model
    dropped = set(dropped_layer_indices(slim.config))
    figure = _new_figure()
    layers = list(range(len(dense)))
    panels = (
        ("attention heads", "#4c72b0", [s.num_heads for s in kept], [s.num_heads for s in dense]),
        ("FFN units", "#dd8452", [s.ffn_width for s in kept], [s.ffn_width for s in dense]),
    )
    for axes, (label, color, kept_sizes, dense_sizes) in zip(figure.subplots(1, 2), panels):
        axes.bar(layers, dense_sizes, color="#d9d9d9", label="dense")
        bars = axes.bar(layers, kept_sizes, color=color, width=0.6, label="kept")
        labels = ["dropped" if index in dropped else str(size) for index, size in zip(layers, kept_sizes)]
        axes.bar_label(bars, labels=labels, fontsize=8)
        axes.set_xticks(layers)
        axes.yaxis.get_major_locator().set_params(integer=True)  # no "2.5 heads" ticks
        axes.set_xlabel("layer")
        axes.set_title(label)
        axes.legend(loc="lower right", fontsize=8)
    figure.suptitle(title or "Kept per layer (dense in grey)")
    return _save(figure, path)


def plot_head_importance(
    importance: Any,
    path: str | os.PathLike,
    *,
    title: str = "Head importance",
    layer_indices: Sequence[int] | None = None,
) -> Path:
    """A layers x heads heat map of head importance relative to the largest score, annotated.

    Args:
        importance: A `MaskImportance` (its `heads` are drawn) or a 2-d tensor / array / nested
            list `[layers, heads]`; NaN cells (heads a slim layer does not have) are left grey.
        path: Where to write the PNG.
        title: The figure title.
        layer_indices: The dense-model index of each row, for a model that lost layers
            (`nn_prune_ext.slim.layers.kept_layer_indices(model.config)`); rows are numbered
            0, 1, ... otherwise.

    Returns:
        `path`, as a `Path`.
    """
    figure = _new_figure()
    import numpy as np

    values = getattr(importance, "heads", importance)
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    values = np.asarray(values, dtype=float)
    if values.ndim != 2:
        raise InputError(
            f"Head importance must be 2-d [layers, heads], got shape {values.shape}; pass e.g. "
            "taylor_importance(collect_mask_gradients(model, batches))."
        )
    # Drawn relative to the largest score: short annotations whatever the scale of the loss.
    top = float(np.nanmax(values, initial=0.0))
    indices = list(layer_indices) if layer_indices is not None else list(range(values.shape[0]))
    if len(indices) != values.shape[0]:
        raise InputError(f"layer_indices names {len(indices)} layers, but the importance has {values.shape[0]} rows.")
    _heatmap(
        figure, values / top if top > 0 else values, [f"layer {index}" for index in indices],
        [str(head) for head in range(values.shape[1])], vmax=1.0, number_format=".2f",
        colorbar_label=f"importance / largest ({top:.3g})", title=title,
    )
    figure.axes[0].set_xlabel("head")
    return _save(figure, path)


def plot_frontier(
    runs: Sequence[RunResult | Mapping[str, Any]], path: str | os.PathLike, *, title: str | None = None
) -> Path:
    """Metric against speedup for a set of runs, with their Pareto frontier and the dense baseline.

    Args:
        runs: `RunResult`s (e.g. from `load_runs`) or their JSON objects; one metric for all.
        path: Where to write the PNG.
        title: The figure title; by default "<metric> vs speedup".

    Returns:
        `path`, as a `Path`.

    Raises:
        ValueError: Without runs, or when the runs report different metrics.
    """
    runs = [run if isinstance(run, RunResult) else RunResult.from_dict(run, f"run {i}") for i, run in enumerate(runs)]
    if not runs:
        raise InputError("plot_frontier needs at least one run.")
    metrics = sorted({run.metric for run in runs})
    if len(metrics) > 1:
        raise InputError(f"The runs report different metrics ({', '.join(metrics)}); plot one metric at a time.")
    figure = _new_figure()
    axes = figure.add_subplot()
    axes.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    baseline = [run.value for run in runs if run.speedup == 1.0]
    if baseline:
        axes.axhline(max(baseline), color="grey", linestyle="--", linewidth=1, label="dense baseline")
    frontier = pareto_frontier(runs)
    axes.plot([r.speedup for r in frontier], [r.value for r in frontier], color="#c44e52", marker="o",
              linewidth=1.5, label="Pareto frontier", zorder=2)
    axes.scatter([r.speedup for r in runs], [r.value for r in runs], color="#4c72b0", zorder=3, label="runs")
    for run in runs:
        label = run.name if run.params_ratio is None else f"{run.name} ({run.params_ratio:.0%} params)"
        axes.annotate(label, (run.speedup, run.value), textcoords="offset points", xytext=(5, 4), fontsize=8)
    axes.set_xlabel("speedup over dense (x)")
    axes.set_ylabel(metrics[0])
    axes.set_title(title or f"{metrics[0]} vs speedup")
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    return _save(figure, path)
