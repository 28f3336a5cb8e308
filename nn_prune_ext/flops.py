"""Multiply-accumulate counts of transformer layers, for dense, masked and slim models.

Only the transformer layers are counted (embeddings and task heads do not change under pruning).
Per token of a sequence of length `seq_len`, a layer costs:

- projections: `hidden * head_dim * (2 * heads + 2 * kv_heads)` (q and o per query head, k and v per
  key/value head);
- attention: `2 * heads * head_dim * seq_len` (scores q.k and the weighted sum of values);
- FFN: `hidden * width * (3 if gated else 2)`.

FLOPs are twice the MACs.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .layouts import get_layout

__all__ = ["LayerShape", "layer_macs", "layer_shapes", "model_flops"]


@dataclass(frozen=True)
class LayerShape:
    """The sizes that decide a layer's cost."""

    hidden: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_width: int
    gated: bool = False


def layer_macs(shape: LayerShape, seq_len: int) -> int:
    """MACs of one layer over a sequence of `seq_len` tokens."""
    projections = shape.hidden * shape.head_dim * (2 * shape.num_heads + 2 * shape.num_kv_heads)
    attention = 2 * shape.num_heads * shape.head_dim * seq_len
    ffn = shape.hidden * shape.ffn_width * (3 if shape.gated else 2)
    return seq_len * (projections + attention + ffn)


def layer_shapes(model: nn.Module) -> list[LayerShape]:
    """The shape of every transformer layer of `model`, read from its weights.

    Zeroed heads or units are counted as present: bake and `optimize_model` first to count a
    pruned model's real cost.
    """
    layers = list(get_layout(model).iter_layers(model))
    return [
        LayerShape(
            hidden=layer.output.out_features,
            num_heads=layer.num_heads,
            num_kv_heads=layer.num_kv_heads,
            head_dim=layer.head_dim,
            ffn_width=layer.ffn_down.in_features,
            gated=layer.ffn_gate is not None,
        )
        for layer in layers
    ]


def model_flops(model_or_shapes: nn.Module | list[LayerShape], seq_len: int) -> int:
    """FLOPs of the transformer layers for one sequence of `seq_len` tokens."""
    shapes = layer_shapes(model_or_shapes) if isinstance(model_or_shapes, nn.Module) else model_or_shapes
    return 2 * sum(layer_macs(shape, seq_len) for shape in shapes)
