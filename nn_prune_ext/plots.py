"""PNG pictures of a pruned model and of a set of pruning runs.

Each picture has one file name and one meaning wherever it is drawn (`nn-prune report`, the demo,
`analysis/plot_checkpoint.py`):

- `mask_density.png` (`plot_mask_density`): per layer, the share of each prunable matrix's weights
  (query ... FFN down) that a patched model's masks keep. Drawn from masks only: a slim, baked or
  dense model has none, and its matrices' sizes say what slimming kept, which `kept_per_layer.png`
  shows.
- `kept_per_layer.png` (`plot_kept_per_layer`): per layer, the attention heads and FFN units the
  slim model keeps, as a share of the dense model's (for a model that is not slim, what
  `optimize_model` would keep). A slim checkpoint's model card draws the same as `kept_per_layer.svg`.
- `head_importance.png` (`plot_head_importance`): a layers x heads heat map of head importance
  (`nn_prune_ext.importance`); given the model, heads are numbered as in the dense model and those
  slimming removed are drawn in their own colour.
- `frontier.png` (`plot_frontier`): metric against speedup for a results file of runs, with the
  Pareto frontier.

Legends are drawn outside the axes, so they never cover data.

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
from .atomic_files import open_atomically
from .patch import eval_grids, is_patched
from .scores.masked_linear import MaskedLinear
from .slim import is_slim_model, kept_head_indices, optimize_model
from .slim.layers import dropped_layer_indices, kept_layer_indices
from .slim.model_card import PICTURE_TITLE as KEPT_PER_LAYER_TITLE  # the model card's SVG: the same picture
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
    "MASK_DENSITY_PICTURE",
    "KEPT_PER_LAYER_PICTURE",
    "HEAD_IMPORTANCE_PICTURE",
    "FRONTIER_PICTURE",
    "plot_mask_density",
    "plot_kept_per_layer",
    "plot_head_importance",
    "plot_frontier",
]

FIGURE_SIZE = (8.0, 5.0)  # inches
DPI = 100
MATRIX_NAMES = ("query", "key", "value", "output", "ffn_up", "ffn_gate", "ffn_down")
INSTALL_HINT = 'pip install "nn_prune_ext[plots]"'
# Heat maps with more cells than this are left unannotated: the numbers would not be legible.
MAX_ANNOTATED_CELLS = 400
# Bars of kept-per-layer pictures with more layers than this are left unlabelled, for the same reason.
MAX_LABELLED_LAYERS = 24

# The file names the pictures get wherever they are written (the model card's SVG is
# `nn_prune_ext.slim.model_card.PICTURE_NAME`, "kept_per_layer.svg").
MASK_DENSITY_PICTURE = "mask_density.png"
KEPT_PER_LAYER_PICTURE = "kept_per_layer.png"
HEAD_IMPORTANCE_PICTURE = "head_importance.png"
FRONTIER_PICTURE = "frontier.png"

# Colours: attention heads and FFN units as in the model card's SVG; the dense model's size in light grey.
HEADS_COLOR, UNITS_COLOR, DENSE_COLOR = "#4c72b0", "#dd8452", "#e3e3e3"
# A head slimming removed: outside viridis (the importance colour map), so it cannot be read as a score.
REMOVED_COLOR = "#f08080"
NO_HEAD_COLOR = "#e6e6e6"  # a position a layer of the dense model has no head at (layers of different sizes)


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


def _dense_layer_labels(model: nn.Module, count: int) -> list[str]:
    """A label per layer of the dense model `model` was cut from: `_layer_labels`, or an encoder-decoder's
    `encoder layer 0`, ..., `decoder layer 0`, ... (its layers are never dropped)."""
    labels = _layer_labels(count, dropped_layer_indices(model.config))
    for layer in get_layout(model).iter_layers(model):
        if layer.stack:
            labels[layer.index] = layer.name
    return labels


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
            run = cls(
                name=str(record["name"]),
                metric=str(metric),
                value=float(value),
                speedup=float(record["speedup"]),
                params_ratio=_optional_float(record.get("params_ratio")),
                flops_ratio=_optional_float(record.get("flops_ratio")),
            )
        except (TypeError, ValueError, OverflowError) as error:
            raise InputError(f"{where}: the metric value, speedup and ratios must be numbers ({error}).") from error
        # Python's json reads NaN and Infinity: such a run would be drawn nowhere, or break the frontier's
        # ordering, without a word; a speedup <= 0 is no latency ratio.
        numbers = {"value": run.value, "speedup": run.speedup, "params_ratio": run.params_ratio,
                   "flops_ratio": run.flops_ratio}
        for key, number in numbers.items():
            if number is not None and not math.isfinite(number):
                raise InputError(f"{where}: {key} must be a finite number, got {number}.")
        if run.speedup <= 0:
            raise InputError(f"{where}: speedup must be > 0 (dense latency / this run's latency), got {run.speedup}.")
        return run


_EXAMPLE = '{"name": "hybrid", "accuracy": 0.87, "speedup": 2.4, "params_ratio": 0.42}'


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def load_runs(path: str | os.PathLike) -> list[RunResult]:
    """Read a results file: one JSON object per line, blank lines skipped.

    Raises:
        InputError: For a path that is not an existing file, a line that is not JSON, misses a required key
            or holds a value that is not a finite number (or a speedup <= 0); the message names the line.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"load_runs takes the path of a results file (str or os.PathLike), got {type(path).__name__}.")
    if not os.path.isfile(path):
        state = "is a folder" if os.path.isdir(path) else "does not exist"
        raise InputError(f"The results file {os.fspath(path)!r} {state}: give a file of JSON lines, e.g. {_EXAMPLE}.")
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
    # No bbox_inches="tight": it would make the pixel size depend on the content. Written whole or not at
    # all: an interrupted run leaves the previous picture, not half of one.
    with open_atomically(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=DPI)
    return path


def _outside_legend(figure, handles: Sequence[Any]) -> None:
    """A legend under the axes: constrained layout gives it its own room, off the data (and off the title)."""
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)


def _heatmap(figure, values, row_labels: Sequence[str], column_labels: Sequence[str], *, vmax: float,
             number_format: str, colorbar_label: str, title: str, removed=None, empty_color: str = NO_HEAD_COLOR):
    """Draw `values` (a 2-d array, NaN for empty cells) as an annotated heat map; returns its axes.

    `removed`, a boolean array of the same shape, paints its cells `REMOVED_COLOR` over the map.
    """
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap
    import numpy as np

    axes = figure.add_subplot()
    colormap = colormaps["viridis"].with_extremes(bad=empty_color)
    image = axes.imshow(values, cmap=colormap, vmin=0.0, vmax=vmax, aspect="auto", interpolation="nearest")
    if removed is not None and removed.any():
        # A second layer, transparent (NaN) except on the removed cells.
        axes.imshow(np.where(removed, 1.0, np.nan), cmap=ListedColormap([REMOVED_COLOR]).with_extremes(bad=(0, 0, 0, 0)),
                    vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    axes.set_xticks(range(len(column_labels)), labels=column_labels)
    axes.set_yticks(range(len(row_labels)), labels=row_labels)
    figure.suptitle(title)
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
    return axes


def plot_mask_density(
    model_or_densities: nn.Module | Mapping[str, Sequence[float]], path: str | os.PathLike, *, title: str | None = None
) -> Path:
    """A layers x matrices heat map of the share of each prunable matrix's weights the masks keep.

    Args:
        model_or_densities: A patched model (`patch_model`, a `SparseTrainer` checkpoint; its masks
            are read at the final threshold with `matrix_densities`), or such a mapping of matrix
            name to per-layer mask densities, each between 0 and 1.
        path: Where to write the PNG (`MASK_DENSITY_PICTURE` by convention).
        title: The title; by default "Mask density of each prunable matrix (before slimming)".

    Returns:
        `path`, as a `Path`.

    Raises:
        ValueError: For a model that is not patched (it has no masks: `plot_kept_per_layer` shows
            what a slim, baked or dense model keeps), or for a mapping of lists of different lengths
            or with values outside [0, 1].
    """
    densities, model = model_or_densities, None
    if isinstance(densities, nn.Module):
        model = densities
        if not is_patched(model):
            raise InputError(
                f"plot_mask_density draws the masks of a patched model, and this {type(model).__name__} has "
                "none. For what a slim, baked or dense model keeps per layer, use plot_kept_per_layer."
            )
        densities = matrix_densities(model)
    lengths = {len(values) for values in densities.values()}
    if len(lengths) != 1:
        raise InputError(
            f"Every matrix needs one density per layer; got {sorted(lengths)} values across "
            f"{list(densities)}. Pass matrix_densities(model) or a mapping of equally long lists."
        )
    outside = [(name, value) for name, values in densities.items() for value in values if not 0.0 <= value <= 1.0]
    if outside:
        raise InputError(
            f"A mask density is a share of a matrix's weights, between 0 and 1; got {outside[0][1]!r} for "
            f"{outside[0][0]!r}. Pass matrix_densities(patched_model)."
        )
    figure = _new_figure()  # it says how to install matplotlib (and numpy with it)
    import numpy as np

    values = np.array([list(column) for column in densities.values()], dtype=float).T  # layers x matrices
    rows = _dense_layer_labels(model, values.shape[0]) if model is not None else _layer_labels(values.shape[0])
    _heatmap(
        figure, values, rows, list(densities), vmax=1.0, number_format=".0%",
        colorbar_label="share of the matrix's weights the masks keep",
        title=title or "Mask density of each prunable matrix (before slimming)",
    )
    return _save(figure, path)


def plot_kept_per_layer(model: nn.Module, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Bars of the share of the dense model's attention heads and FFN units each layer keeps.

    One row per layer of the dense model, a bar for its heads and one for its FFN units over a grey
    bar of the dense size (100%), each labelled kept/dense; a layer dropped whole keeps nothing and is
    labelled "dropped". A slim checkpoint's model card draws the same picture (`kept_per_layer.svg`).
    A layer can exceed 100% of its heads where slimming added zero heads to fill key/value groups.

    Args:
        model: Any model of a registered architecture; unless it is slim (and unpatched), what
            `optimize_model` would keep of it is shown.
        path: Where to write the PNG (`KEPT_PER_LAYER_PICTURE` by convention).
        title: The figure title; by default `KEPT_PER_LAYER_TITLE`, "Kept per layer, as a share of the
            dense model" (the title of the model card's SVG).

    Returns:
        `path`, as a `Path`.
    """
    slim = as_slim(model)
    kept, dense = kept_layer_shapes(slim), dense_layer_shapes(slim)  # both per layer of the dense model
    dropped = set(dropped_layer_indices(slim.config))
    figure = _new_figure()
    from matplotlib.patches import Patch
    from matplotlib.ticker import PercentFormatter

    axes = figure.add_subplot()
    layers = list(range(len(dense)))
    height = 0.38  # of each of a layer's two bars; the grey bar behind spans both
    axes.barh(layers, [1.0] * len(layers), height=2 * height + 0.08, color=DENSE_COLOR)
    widest = 1.0
    for offset, color, kept_sizes, dense_sizes in (
        (-height / 2, HEADS_COLOR, [s.num_heads for s in kept], [s.num_heads for s in dense]),
        (height / 2, UNITS_COLOR, [s.ffn_width for s in kept], [s.ffn_width for s in dense]),
    ):
        fractions = [k / d if d else 0.0 for k, d in zip(kept_sizes, dense_sizes)]
        widest = max(widest, *fractions)
        bars = axes.barh([layer + offset for layer in layers], fractions, height=height, color=color)
        if len(layers) <= MAX_LABELLED_LAYERS:
            labels = ["dropped" if index in dropped else f"{k}/{d}"
                      for index, k, d in zip(layers, kept_sizes, dense_sizes)]
            axes.bar_label(bars, labels=labels, padding=3, fontsize=8 if len(layers) <= 12 else 6)
    axes.set_yticks(layers, labels=_dense_layer_labels(slim, len(layers)))
    axes.invert_yaxis()  # layer 0 on top, as in the model card
    axes.set_xlim(0.0, widest * 1.2)  # room for the labels right of the longest bar
    axes.set_xticks([step / 5 for step in range(int(widest * 5) + 1)])  # no ticks beyond the widest bar
    axes.xaxis.set_major_formatter(PercentFormatter(1.0))
    axes.set_xlabel("kept / dense")
    _outside_legend(figure, [Patch(color=HEADS_COLOR, label="attention heads kept"),
                             Patch(color=UNITS_COLOR, label="FFN units kept"),
                             Patch(color=DENSE_COLOR, label="dense model (100%)")])
    figure.suptitle(title or KEPT_PER_LAYER_TITLE)
    return _save(figure, path)


def _dense_head_grid(values, model: nn.Module):
    """Place importance rows `values` (one per layer of `model`) in a grid of the dense model's layers x heads.

    Returns:
        `(grid, removed, row labels, column labels, x label)`: NaN where a cell has no score;
        `removed` marks the heads (and layers) slimming removed.
    """
    import numpy as np

    layers = list(get_layout(model).iter_layers(model))
    if len(layers) != values.shape[0]:
        raise InputError(
            f"The importance has {values.shape[0]} rows, but the model has {len(layers)} layers: pass the model "
            "the importance was measured on."
        )
    dense = dense_layer_shapes(model)
    dense_heads = max((shape.num_heads for shape in dense), default=0)
    recorded = kept_head_indices(model)
    slim_order = recorded is None and is_slim_model(model)
    grid = np.full((len(dense), dense_heads), np.nan)
    removed = np.zeros(grid.shape, dtype=bool)
    for index, shape in enumerate(dense):
        removed[index, : shape.num_heads] = True  # until a kept head fills the cell
    for row, (layer, index) in enumerate(zip(layers, kept_layer_indices(model.config))):
        if values.shape[1] < layer.num_heads or np.isnan(values[row, : layer.num_heads]).any():
            raise InputError(
                f"{layer.name} has {layer.num_heads} heads, but row {row} of the importance has "
                f"{int(np.isfinite(values[row]).sum())} scores: pass the model the importance was measured on."
            )
        heads = recorded[row] if recorded is not None else list(range(layer.num_heads))
        for position, head in enumerate(heads):
            if head is None:
                continue  # a zero head slimming added to fill a key/value group: no head of the dense model
            grid[index, head] = values[row, position]
            removed[index, head] = False
    if slim_order:
        x_label = "head, in the slim layer's order (this checkpoint does not record the dense model's head numbers)"
    else:
        x_label = "head (numbered as in the dense model)"
    return grid, removed, _dense_layer_labels(model, len(dense)), [str(head) for head in range(dense_heads)], x_label


def plot_head_importance(
    importance: Any,
    path: str | os.PathLike,
    *,
    title: str = "Head importance",
    model: nn.Module | None = None,
    layer_indices: Sequence[int] | None = None,
) -> Path:
    """A layers x heads heat map of head importance relative to the largest score, annotated.

    Args:
        importance: A `MaskImportance` (its `heads` are drawn) or a 2-d tensor / array / nested
            list `[layers, heads]`, NaN beyond a layer's heads.
        path: Where to write the PNG (`HEAD_IMPORTANCE_PICTURE` by convention).
        title: The figure title.
        model: The model the importance was measured on. Given, there is a row per layer of the
            dense model and a column per head of the dense model: a slim model's heads are placed
            at the dense head they were cut from (`nn_prune_ext.slim.kept_head_indices`), and the
            heads and layers slimming removed are drawn in `REMOVED_COLOR` ("removed" in the
            legend). A slim checkpoint saved before heads were recorded keeps its slim order (the
            axis says so). Without it, rows and columns are the importance's own.
        layer_indices: Without `model`: the dense-model index of each row, for a model that lost
            layers (`nn_prune_ext.slim.layers.kept_layer_indices(model.config)`); rows are numbered
            0, 1, ... otherwise.

    Returns:
        `path`, as a `Path`.

    Raises:
        ValueError: For importance that is not 2-d, or that does not fit `model` or `layer_indices`.
    """
    figure = _new_figure()
    import numpy as np
    from matplotlib.patches import Patch

    values = getattr(importance, "heads", importance)
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    values = np.asarray(values, dtype=float)
    if values.ndim != 2:
        raise InputError(
            f"Head importance must be 2-d [layers, heads], got shape {values.shape}; pass e.g. "
            "taylor_importance(collect_mask_gradients(model, batches))."
        )
    removed = None
    if model is not None:
        if layer_indices is not None:
            raise InputError("Pass model or layer_indices, not both: the model's config says which layers it kept.")
        values, removed, row_labels, column_labels, x_label = _dense_head_grid(values, model)
    else:
        indices = list(layer_indices) if layer_indices is not None else list(range(values.shape[0]))
        if len(indices) != values.shape[0]:
            raise InputError(
                f"layer_indices names {len(indices)} layers, but the importance has {values.shape[0]} rows."
            )
        row_labels = [f"layer {index}" for index in indices]
        column_labels = [str(head) for head in range(values.shape[1])]
        x_label = "head"
    # Drawn relative to the largest score: short annotations whatever the scale of the loss.
    top = float(np.nanmax(values, initial=0.0))
    axes = _heatmap(
        figure, values / top if top > 0 else values, row_labels, column_labels, vmax=1.0, number_format=".2f",
        colorbar_label=f"importance / largest ({top:.3g})", title=title, removed=removed,
    )
    axes.set_xlabel(x_label)
    handles = []
    if removed is not None and removed.any():
        handles.append(Patch(color=REMOVED_COLOR, label="removed by slimming (no score)"))
    if np.isnan(values).any() and (removed is None or (np.isnan(values) & ~removed).any()):
        handles.append(Patch(color=NO_HEAD_COLOR, label="no such head in this layer"))
    if handles:
        _outside_legend(figure, handles)
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
    figure.suptitle(title or f"{metrics[0]} vs speedup")
    axes.grid(alpha=0.3)
    _outside_legend(figure, axes.get_legend_handles_labels()[0])
    return _save(figure, path)
