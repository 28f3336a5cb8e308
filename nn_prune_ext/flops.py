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

__all__ = ["LayerShape", "dense_layer_shapes", "layer_macs", "layer_shapes", "model_flops"]


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


def dense_layer_shapes(model: nn.Module) -> list[LayerShape]:
    """The shape every transformer layer of `model` had before slimming.

    Args:
        model: A model of a registered architecture.

    Returns:
        For a slim model, its layers with the dense head counts and FFN width its config keeps
        globally (hidden size, head size and gating do not change under slimming); any other model
        is still dense-shaped, and its own `layer_shapes` are returned.
    """
    # Imported here: nn_prune_ext.slim imports this module, so a top-level import would be circular.
    from .slim.modeling_slim import global_size_access, is_slim_config, slim_spec

    shapes = layer_shapes(model)
    config = model.config
    if not is_slim_config(config):
        return shapes
    spec = slim_spec(config)
    with global_size_access(config):  # the global sizes are the dense ones
        heads = int(getattr(config, spec["num_heads_attr"]))
        kv_attr = spec.get("num_kv_heads_attr")
        kv_heads = getattr(config, kv_attr, None) if kv_attr else None
        width = int(getattr(config, spec["intermediate_size_attr"]))
    kv_heads = heads if kv_heads is None else int(kv_heads)
    return [LayerShape(shape.hidden, heads, kv_heads, shape.head_dim, width, shape.gated) for shape in shapes]


def model_flops(model_or_shapes: nn.Module | list[LayerShape], seq_len: int) -> int:
    """FLOPs of the transformer layers for one sequence of `seq_len` tokens."""
    shapes = layer_shapes(model_or_shapes) if isinstance(model_or_shapes, nn.Module) else model_or_shapes
    return 2 * sum(layer_macs(shape, seq_len) for shape in shapes)
