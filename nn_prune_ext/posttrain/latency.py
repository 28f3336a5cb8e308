"""Latency lookup tables measured on the current device, for the latency-budget mask search.

Kwon et al. (2022) observe that on a GPU a layer's latency is flat for few heads or FFN units
(the device is not saturated) and grows linearly beyond; on a CPU it grows from the start, and
faster than linearly near the full width (measured on all-MiniLM-L6-v2, see docs/slimming.md).
`measure_latency_table` times a one-layer copy of the model, slimmed to every head count and a
grid of FFN widths, side by side in alternating rounds; `fit_monotone` fits each curve
piecewise-linearly, non-decreasing, whatever its shape.

```python
table = measure_latency_table(model, batch_size=8, seq_len=128)
print(table)                 # the measured points and the fitted curves
cost = table.cost_model()    # for search_masks(..., cost=cost)
```
"""

from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass

import torch
from torch import nn

from ..arch import get_layout, probe_inputs
from ..masks import StructureMasks
from ..slim import prune_with_masks
from ..slim.classes import stock_class
from ..slim.modeling_slim import dense_config, is_slim_config
from ..timing import compare_latency
from ..transformers_internals import build_model
from ..slim.structure import slim_attention_sizes
from .costs import LatencyCost, PiecewiseLinear
from ..validation import InputError, NonFiniteError, check_whole

__all__ = ["LatencyTable", "fit_monotone", "measure_latency_table"]


def fit_monotone(counts: list[int], latencies: list[float]) -> PiecewiseLinear:
    """Fit a non-decreasing piecewise-linear curve through measured latencies.

    Timing noise can make a larger layer look faster than a smaller one, which a search would
    exploit. The measurements are first made non-decreasing by isotonic regression (pool adjacent
    violators: a run of points that decreases is replaced by its mean), then joined by straight
    lines. This keeps whatever shape the device has: flat then linear on a GPU that is not yet
    saturated (Kwon et al. 2022), roughly linear or convex on a CPU.

    Args:
        counts: Measured counts (increasing, at least 1).
        latencies: The latency at each count.

    Returns:
        The fitted curve as a `PiecewiseLinear` (0 at a count of 0, never negative).

    Raises:
        InputError: For lengths that differ, no counts, or a latency that is not a number.
        NonFiniteError: For a NaN or infinite latency (pooling would spread it to its neighbours).
    """
    if len(counts) != len(latencies) or not counts:
        raise InputError("fit_monotone needs one latency per count, and at least one count.")
    for count, value in zip(counts, latencies):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise InputError(f"The latency at count {count} must be a number of milliseconds, got {value!r}.")
        # `max(nan, 0.0)` is nan: it would pass into the curve and make that size free for the search.
        if not math.isfinite(value):
            raise NonFiniteError(f"The latency at count {count} is {value}: measure the latency table again.")
    blocks: list[list[float]] = []  # [sum, size] of pooled runs
    for value in latencies:
        blocks.append([max(float(value), 0.0), 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, size = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += size
    fitted: list[float] = []
    for total, size in blocks:
        fitted += [total / size] * int(size)
    return PiecewiseLinear(points=tuple(counts), values=tuple(fitted))


@dataclass(frozen=True)
class LatencyTable:
    """Measured latencies of one layer's attention and FFN, and the curves fitted to them.

    Args:
        head_counts: Query heads of the slim layers measured (under GQA only the sizes a slim layer
            can have; the key/value heads that come with them are not a dimension of the table).
        attention_ms: Attention latency at each head count (the empty layer's time subtracted).
        ffn_widths: FFN widths measured.
        ffn_ms: FFN latency at each width.
        batch_size: Batch size of the timed inputs.
        seq_len: Sequence length of the timed inputs.
    """

    head_counts: tuple[int, ...]
    attention_ms: tuple[float, ...]
    ffn_widths: tuple[int, ...]
    ffn_ms: tuple[float, ...]
    batch_size: int
    seq_len: int

    @property
    def attention_curve(self) -> PiecewiseLinear:
        return fit_monotone(list(self.head_counts), list(self.attention_ms))

    @property
    def ffn_curve(self) -> PiecewiseLinear:
        return fit_monotone(list(self.ffn_widths), list(self.ffn_ms))

    def cost_model(self) -> LatencyCost:
        """The fitted curves as a cost model for `search_masks`."""
        if max(self.attention_ms + self.ffn_ms, default=0.0) <= 0:
            raise InputError("This latency table has no positive latency: a latency budget cannot use it.")
        return LatencyCost(attention_latency=self.attention_curve, ffn_latency=self.ffn_curve)

    def __str__(self) -> str:
        attention, ffn = self.attention_curve, self.ffn_curve
        rows = [f"latency of one layer, batch {self.batch_size} x {self.seq_len} tokens (ms, measured / fitted)"]
        rows += [f"  {h:>5} heads  {ms:8.3f} / {attention(h):8.3f}" for h, ms in zip(self.head_counts, self.attention_ms)]
        rows += [f"  {w:>5} units  {ms:8.3f} / {ffn(w):8.3f}" for w, ms in zip(self.ffn_widths, self.ffn_ms)]
        return "\n".join(rows)


def stock_copy(model: nn.Module, layers: int = 1) -> nn.Module:
    """A randomly initialised dense copy of `model`'s architecture with `layers` layers (timing needs no weights).

    A slim model's copy has its dense sizes; the copy is on the model's device and in its dtype, in eval mode.
    """
    config = dense_config(model.config) if is_slim_config(model.config) else copy.deepcopy(model.config)
    config.num_hidden_layers = layers
    if getattr(config, "layer_types", None):
        config.layer_types = list(config.layer_types)[:layers]
    parameter = next(model.parameters())
    return build_model(stock_class(type(model)), config).to(device=parameter.device, dtype=parameter.dtype).eval()


def _sliced(model: nn.Module, heads: int, width: int) -> nn.Module:
    # The first heads: whole key/value groups under GQA, as a group-wise search keeps them.
    masks = StructureMasks.from_kept(model, heads=[range(heads)], units=[range(width)])
    return prune_with_masks(model, masks)


def _grid(maximum: int, points: int) -> list[int]:
    """About `points` counts from 1 to `maximum`, denser at the small end where the curve bends."""
    if maximum <= points:
        return list(range(1, maximum + 1))
    values = {1, maximum}
    for index in range(1, points - 1):
        values.add(max(1, round(maximum * (index / (points - 1)) ** 1.5)))
    return sorted(values)


@torch.no_grad()
def measure_latency_table(
    model: nn.Module,
    *,
    batch_size: int = 8,
    seq_len: int = 128,
    ffn_points: int = 16,
    warmup: int = 2,
    repeats: int = 7,
    threads: int | None = None,
) -> LatencyTable:
    """Time one layer of `model`'s architecture at every head count and at a grid of FFN widths.

    One-layer models are built from the config (random weights) and slimmed with
    `prune_with_masks` to each size, then timed side by side with `timing.compare_latency`
    (alternating rounds; each size's fastest repeat). A layer without heads and without FFN units
    is timed too and subtracted, so embeddings and the task head do not count.

    Args:
        model: A model of a registered architecture (its dense shape is used).
        batch_size: Sequences per timed forward.
        seq_len: Tokens per sequence.
        ffn_points: About how many FFN widths to time (1 and the full width included).
        warmup: Untimed rounds.
        repeats: Timed rounds.
        threads: Intra-op threads while timing (`None`: torch's setting).

    Returns:
        The `LatencyTable`.

    Raises:
        InputError: For `batch_size`, `seq_len` or `ffn_points` not a whole number >= 1 (checked before any
            model is built), or if every measured latency is 0 (nothing for a latency budget to divide).
    """
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len), ("ffn_points", ffn_points)):
        check_whole(value, f"measure_latency_table({name}=...)", minimum=1)
    get_layout(model).require_single_stack("measure_latency_table (it times one-layer models)", "use a FLOPs budget")
    get_layout(model).require_prunable_ffn("measure_latency_table (it times FFN widths)")
    one = stock_copy(model)
    layer = next(get_layout(one).iter_layers(one))
    group = layer.num_heads // max(layer.num_kv_heads, 1)
    # Keeping the first h heads fills whole key/value groups; under GQA the slim layer may then
    # have more query heads than h (padding), so each variant is labelled by its slim size.
    kept_first = {}
    for h in range(1, layer.num_heads + 1):
        per_group = [min(group, max(0, h - g * group)) for g in range(layer.num_kv_heads)]
        kept_first.setdefault(slim_attention_sizes(per_group)[0], h)
    head_counts = sorted(kept_first)
    widths = _grid(layer.ffn_down.in_features, ffn_points)
    variants = {"empty": _sliced(one, 0, 0)}
    variants.update({f"heads={h}": _sliced(one, kept_first[h], 0) for h in head_counts})
    variants.update({f"units={w}": _sliced(one, 0, w) for w in widths})
    inputs = probe_inputs(one, batch_size=batch_size, seq_len=seq_len)
    stats = compare_latency(variants, inputs, warmup=warmup, repeats=repeats, threads=threads).results
    # The fastest repeat: the least disturbed by other work on the machine (medians of single
    # layers of a few milliseconds swing by tens of percent on a shared CPU).
    base = stats["empty"].min_ms
    attention = [max(stats[f"heads={h}"].min_ms - base, 0.0) for h in head_counts]
    ffn = [max(stats[f"units={w}"].min_ms - base, 0.0) for w in widths]
    if max(attention) <= 0 and max(ffn) <= 0:
        raise InputError(
            "Every measured layer latency was 0 (below the timer's resolution or the machine's noise): measure "
            "at a larger batch_size or seq_len."
        )
    return LatencyTable(
        head_counts=tuple(head_counts),
        attention_ms=tuple(attention),
        ffn_widths=tuple(widths),
        ffn_ms=tuple(ffn),
        batch_size=batch_size,
        seq_len=seq_len,
    )
