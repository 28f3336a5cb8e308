"""What a pruned layer costs: FLOPs from the slim shapes, or latency from a measured lookup table.

A cost model answers two questions per layer: the cost of its attention when each key/value group
keeps some query heads, and the cost of its FFN at some width. The mask search adds them up, so a
budget is met on exactly the model `optimize_model` will build.
"""

from __future__ import annotations

import bisect
import math
import numbers
from dataclasses import dataclass, replace
from typing import Protocol, Sequence

from ..flops import LayerShape, layer_macs
from ..slim.structure import slim_attention_sizes
from ..validation import InputError, NonFiniteError, check_whole

__all__ = ["CostModel", "FlopsCost", "LatencyCost", "PiecewiseLinear"]


class CostModel(Protocol):
    """The cost of each layer's attention and FFN after pruning."""

    def attention(self, layer: int, kept_per_group: Sequence[int]) -> float:
        """Cost of `layer`'s attention when key/value group `g` keeps `kept_per_group[g]` query heads."""

    def ffn(self, layer: int, width: int) -> float:
        """Cost of `layer`'s FFN with `width` units."""

    def ffn_unit_cost(self, layer: int) -> float | None:
        """The cost of one FFN unit when the FFN cost is `width x` that (no fixed part), else `None`."""


@dataclass(frozen=True)
class FlopsCost:
    """FLOPs of the transformer layers for one sequence, as `flops.model_flops` counts them.

    Args:
        shapes: The dense layers' shapes (`flops.layer_shapes(model)`).
        seq_len: Sequence length the FLOPs are counted at (the data's mean length).
    """

    shapes: tuple[LayerShape, ...]
    seq_len: int

    def __post_init__(self):
        check_whole(self.seq_len, "FlopsCost.seq_len", minimum=1)

    # The layer's cost splits in two parts that add up to `layer_macs`: the attention (self- and, in a
    # decoder layer, cross-attention, whose heads are never pruned) and the FFN (its units, plus the
    # cost of an FFN that is not pruned). Each part zeroes what the other counts, so nothing is counted twice.
    def attention(self, layer: int, kept_per_group: Sequence[int]) -> float:
        heads, kv_heads = slim_attention_sizes(list(kept_per_group))
        shape = replace(self.shapes[layer], num_heads=heads, num_kv_heads=kv_heads, ffn_width=0, fixed_ffn_macs=0)
        return 2.0 * layer_macs(shape, self.seq_len)

    def ffn(self, layer: int, width: int) -> float:
        shape = replace(
            self.shapes[layer], num_heads=0, num_kv_heads=0, cross_heads=0, cross_kv_heads=0, ffn_width=width
        )
        return 2.0 * layer_macs(shape, self.seq_len)

    def ffn_unit_cost(self, layer: int) -> float | None:
        if self.shapes[layer].fixed_ffn_macs:
            return None  # a fixed part: the FFN cost is not `width x` one unit's
        return self.ffn(layer, 1)


@dataclass(frozen=True)
class PiecewiseLinear:
    """A function of a count: 0 at 0, then linear between measured points (clamped at both ends).

    Args:
        points: Counts, strictly increasing, all at least 1.
        values: The function at those counts.
    """

    points: tuple[int, ...]
    values: tuple[float, ...]

    def __post_init__(self):
        if not self.points or len(self.points) != len(self.values):
            raise InputError("PiecewiseLinear needs as many values as points, and at least one point.")
        for point in self.points:
            check_whole(point, f"PiecewiseLinear.points ({self.points})", minimum=1)
        if any(b <= a for a, b in zip(self.points, self.points[1:])):
            raise InputError(f"points must be increasing counts >= 1, got {self.points}.")
        for point, value in zip(self.points, self.values):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise InputError(f"PiecewiseLinear.values must be numbers, got {value!r} at count {point}.")
            if not math.isfinite(value):
                # A NaN cost compares false with every budget: the search would take that size for free.
                raise NonFiniteError(
                    f"PiecewiseLinear.values must be finite, got {value} at count {point}: measure the latencies again."
                )

    def __call__(self, count: int) -> float:
        if count <= 0:
            return 0.0  # nothing left: the module is skipped
        points, values = self.points, self.values
        if count <= points[0]:
            return values[0]
        if count >= points[-1]:
            if len(points) == 1:
                return values[-1]
            slope = (values[-1] - values[-2]) / (points[-1] - points[-2])
            return values[-1] + slope * (count - points[-1])
        right = bisect.bisect_left(points, count)
        left = right - 1
        fraction = (count - points[left]) / (points[right] - points[left])
        return values[left] + fraction * (values[right] - values[left])


@dataclass(frozen=True)
class LatencyCost:
    """Latency of each layer from fitted lookup tables (`posttrain.latency.measure_latency_table`).

    Every layer of a dense model has the same shape, so one table serves all layers. The attention
    table is indexed by the slim layer's query heads (GQA padding included).

    Args:
        attention_latency: Milliseconds of one layer's attention against its query heads.
        ffn_latency: Milliseconds of one layer's FFN against its width.
    """

    attention_latency: PiecewiseLinear
    ffn_latency: PiecewiseLinear

    def attention(self, layer: int, kept_per_group: Sequence[int]) -> float:
        heads, _ = slim_attention_sizes(list(kept_per_group))
        return self.attention_latency(heads)

    def ffn(self, layer: int, width: int) -> float:
        return self.ffn_latency(width)

    def ffn_unit_cost(self, layer: int) -> float | None:
        return None
