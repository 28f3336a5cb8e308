"""The speed-true limit of a slim model: milliseconds predicted from its work, with rates fitted on this device.

A FLOPs ratio says how much faster a slim model could be if time were proportional to the matrix
products. `SpeedModel` predicts time from all of a forward's work (`nn_prune_ext.work`):

    ms = ms_per_gmac * matmul_macs / 1e9 + ms_per_gflop * vector_flops / 1e9
         + ms_per_attention_block * attention_blocks + ms_per_ffn_block * ffn_blocks
         + ms_per_layer * layers + ms_outside_layers

`calibrate_speed_model` fits the six rates (non-negative least squares) to the measured latency of
randomly initialised copies of the architecture, sliced to a spread of sizes and with one and two
layers, at the batch size and sequence length it is asked for: a rate holds for the device, the
thread count and the input size it was fitted at. `SpeedModel.speedup(dense, slim)` is then the
speedup the slim model's work allows on this device, fixed costs included, to put beside the
FLOPs ratio and the measured speedup.

```python
speed = calibrate_speed_model(dense, batch_size=32, seq_len=128)
print(speed.speedup(dense, slim), model_flops(dense, 128) / model_flops(slim, 128))
```
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from .arch import get_layout, probe_inputs
from .flops import dense_layer_shapes
from .masks import StructureMasks
from .posttrain.costs import LatencyCost, PiecewiseLinear
from .posttrain.latency import stock_copy
from .slim.optimize import prune_with_masks
from .timing import compare_latency
from .validation import InputError
from .work import ModelWork, layer_work, model_work

__all__ = ["SpeedModel", "calibrate_speed_model", "can_calibrate"]

RATE_NAMES = (
    "ms_per_gmac", "ms_per_gflop", "ms_per_attention_block", "ms_per_ffn_block", "ms_per_layer", "ms_outside_layers",
)


@dataclass(frozen=True)
class SpeedModel:
    """Milliseconds of a forward pass from its work, at one batch size and sequence length on one device.

    Args:
        ms_per_gmac: Per billion multiply-accumulates of matrix products.
        ms_per_gflop: Per billion FLOPs of vector work (softmax, activation, norms, sums).
        ms_per_attention_block: Fixed cost of an attention block that has heads.
        ms_per_ffn_block: Fixed cost of an FFN that has units.
        ms_per_layer: Fixed cost of a layer (its norms and sums as operator calls).
        ms_outside_layers: Embeddings, the task head and the calls around the layers.
        batch_size: Sequences per forward the rates were fitted at.
        seq_len: Tokens per sequence the rates were fitted at.
    """

    ms_per_gmac: float
    ms_per_gflop: float
    ms_per_attention_block: float
    ms_per_ffn_block: float
    ms_per_layer: float
    ms_outside_layers: float
    batch_size: int
    seq_len: int

    def predict_ms(self, work: ModelWork) -> float:
        """The predicted milliseconds of a forward that does `work`."""
        return (
            self.ms_per_gmac * work.matmul_macs / 1e9
            + self.ms_per_gflop * work.vector_flops / 1e9
            + self.ms_per_attention_block * work.attention_blocks
            + self.ms_per_ffn_block * work.ffn_blocks
            + self.ms_per_layer * work.layers
            + self.ms_outside_layers
        )

    def model_ms(self, model: nn.Module) -> float:
        """The predicted milliseconds of `model` at the batch size and sequence length of the rates."""
        return self.predict_ms(model_work(model, self.seq_len, self.batch_size))

    def speedup(self, dense: nn.Module, slim: nn.Module) -> float:
        """The speedup of `slim` over `dense` that their work allows on this device (the speed-true limit)."""
        return self.model_ms(dense) / self.model_ms(slim)

    def fixed_share(self, model: nn.Module) -> float:
        """The share of `model`'s predicted time that does not shrink with its sizes (calls and fixed work)."""
        work = model_work(model, self.seq_len, self.batch_size)
        fixed = (self.ms_per_attention_block * work.attention_blocks + self.ms_per_ffn_block * work.ffn_blocks
                 + self.ms_per_layer * work.layers + self.ms_outside_layers)
        return fixed / self.predict_ms(work)

    def block_ms(self, work: ModelWork) -> float:
        """The predicted milliseconds of `work` without the fixed cost of its layers and of what lies outside them."""
        return self.predict_ms(work) - self.ms_per_layer * work.layers - self.ms_outside_layers

    def layer_cost_model(self, model: nn.Module) -> LatencyCost:
        """These rates as the per-layer cost a latency budget of the mask search adds up (`post_training_prune`).

        Every layer of the dense model has the same shape: one layer's attention cost is tabulated at
        every head count (key/value heads in proportion under GQA) and its FFN cost at one unit and at
        the full width (it is affine in the width). Both are 0 when nothing is kept, so removing a
        whole block saves its fixed cost too.
        """
        shape = dense_layer_shapes(model)[0]
        head_counts = tuple(range(1, shape.num_heads + 1))
        attention = []
        for heads in head_counts:
            kv_heads = max(1, round(heads * shape.num_kv_heads / shape.num_heads))
            only_attention = replace(shape, num_heads=heads, num_kv_heads=kv_heads, ffn_width=0, fixed_ffn_macs=0,
                                     cross_heads=0, cross_kv_heads=0)
            attention.append(self.block_ms(layer_work(only_attention, self.seq_len, self.batch_size, sublayers=0,
                                                      norms=0)))
        widths = (1, shape.ffn_width) if shape.ffn_width > 1 else (1,)
        ffn = [self.block_ms(layer_work(replace(shape, num_heads=0, num_kv_heads=0, ffn_width=width, cross_heads=0,
                                                cross_kv_heads=0), self.seq_len, self.batch_size, sublayers=0, norms=0))
               for width in widths]
        return LatencyCost(attention_latency=PiecewiseLinear(head_counts, tuple(attention)),
                           ffn_latency=PiecewiseLinear(widths, tuple(ffn)))

    def __str__(self) -> str:
        return (
            f"speed model, batch {self.batch_size} x {self.seq_len} tokens: {self.ms_per_gmac:.3f} ms/GMAC, "
            f"{self.ms_per_gflop:.3f} ms/GFLOP of vector work, {self.ms_per_attention_block:.3f} ms per attention "
            f"block, {self.ms_per_ffn_block:.3f} ms per FFN, {self.ms_per_layer:.3f} ms per layer, "
            f"{self.ms_outside_layers:.3f} ms outside the layers"
        )


def _calibration_sizes(heads: int, width: int) -> list[tuple[int, int, int]]:
    """(layers, heads, FFN width) of the calibration variants: every rate moves in some of them."""
    half_heads, quarter_heads = max(1, heads // 2), max(1, heads // 4)
    one_layer = [(0, 0), (heads, 0), (0, width), (heads, width), (half_heads, width // 2),
                 (1, max(1, width // 8)), (quarter_heads, max(1, width // 4))]
    two_layers = [(0, 0), (heads, width), (half_heads, max(1, width // 4))]
    return [(1, h, w) for h, w in one_layer] + [(2, h, w) for h, w in two_layers]


def _require_calibratable(model: nn.Module) -> None:
    """Raise `InputError` unless copies of `model` can be timed: one stack of layers, FFNs that are pruned."""
    layout = get_layout(model)
    layout.require_single_stack("calibrate_speed_model (it times copies with one and two layers)", "compare FLOPs")
    layout.require_prunable_ffn("calibrate_speed_model (it times FFN widths)")


def can_calibrate(model: nn.Module) -> bool:
    """Whether `calibrate_speed_model` can time copies of `model` (the layout's own checks, asked without raising)."""
    try:
        _require_calibratable(model)
    except InputError:
        return False
    return True


@torch.no_grad()
def calibrate_speed_model(
    model: nn.Module,
    *,
    batch_size: int = 8,
    seq_len: int = 128,
    warmup: int = 2,
    repeats: int = 7,
    threads: int | None = None,
) -> SpeedModel:
    """Fit a `SpeedModel` to timed copies of `model`'s architecture on the current device.

    Ten variants (one and two layers; no heads or units, full, and sizes between) are built from
    the dense config with random weights, slimmed with `prune_with_masks`, and timed side by side
    (`timing.compare_latency`, median of alternating rounds). The rates are their non-negative
    least-squares fit.

    Args:
        model: A model of a registered architecture with one stack of layers (dense or slim; its dense shape is used).
        batch_size: Sequences per timed forward: predictions hold at this batch size.
        seq_len: Tokens per sequence: predictions hold at this length.
        warmup: Untimed rounds.
        repeats: Timed rounds.
        threads: Intra-op threads while timing (`None`: torch's setting).

    Returns:
        The fitted `SpeedModel`.
    """
    from scipy.optimize import nnls  # scipy is a dependency; imported here, as only calibration needs it

    _require_calibratable(model)
    layout = get_layout(model)
    if batch_size < 1 or seq_len < 1:
        raise InputError(f"batch_size and seq_len must be at least 1, got {batch_size} and {seq_len}.")
    stocks = {layers: stock_copy(model, layers) for layers in (1, 2)}
    first = next(layout.iter_layers(stocks[1]))
    variants = {}
    for layers, heads, width in _calibration_sizes(first.num_heads, first.ffn_width):
        masks = StructureMasks.from_kept(stocks[layers], heads=[range(heads)] * layers, units=[range(width)] * layers)
        variants[f"{layers} layers, {heads} heads, {width} units"] = prune_with_masks(stocks[layers], masks).eval()
    inputs = probe_inputs(stocks[1], batch_size=batch_size, seq_len=seq_len)
    timed = compare_latency(variants, inputs, warmup=warmup, repeats=repeats, threads=threads).results
    rows, milliseconds = [], []
    for name, variant in variants.items():
        work = model_work(variant, seq_len, batch_size)
        rows.append([work.matmul_macs / 1e9, work.vector_flops / 1e9, work.attention_blocks, work.ffn_blocks,
                     work.layers, 1.0])
        milliseconds.append(timed[name].median_ms)
    rates, _ = nnls(torch.tensor(rows, dtype=torch.float64).numpy(), torch.tensor(milliseconds, dtype=torch.float64).numpy())
    return SpeedModel(**dict(zip(RATE_NAMES, (float(rate) for rate in rates))), batch_size=batch_size, seq_len=seq_len)
