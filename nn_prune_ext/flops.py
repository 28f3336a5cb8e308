"""Multiply-accumulate counts of transformer layers, for dense, masked and slim models.

Only the transformer layers are counted (embeddings and task heads do not change under pruning).
Per token of a sequence of length `seq_len`, a layer costs:

- projections: `hidden * head_dim * (2 * heads + 2 * kv_heads)` (q and o per query head, k and v per
  key/value head);
- attention: `2 * heads * head_dim * seq_len` (scores q.k and the weighted sum of values);
- FFN: `hidden * width * (3 if gated else 2)`, or for an FFN that is not pruned (a mixture of
  experts) its matrices' entries, the experts' in the share a token is routed to (`fixed_ffn_macs`);
- cross-attention (an encoder-decoder's decoder layers): projections and attention as above with
  the cross-attention's heads, keys and values read from an encoder output of the same `seq_len`.

FLOPs are twice the MACs. A layer that was dropped whole (`nn_prune_ext.slim.layers`) costs nothing;
`dense_layer_shapes` still lists it, with the shape it had in the dense model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch
from torch import nn

from .arch import get_layout
from .validation import InputError, check_model, check_whole

__all__ = ["LayerShape", "dense_layer_shapes", "kept_layer_shapes", "layer_macs", "layer_shapes", "model_flops"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerShape:
    """The sizes that decide a layer's cost.

    `cross_heads`: of an encoder-decoder's cross-attention; `fixed_ffn_macs`: MACs per token of an FFN
    that is not pruned (a mixture of experts; its `ffn_width` is then 0).
    """

    hidden: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_width: int
    gated: bool = False
    cross_heads: int = 0
    cross_kv_heads: int = 0
    fixed_ffn_macs: int = 0


def layer_macs(shape: LayerShape, seq_len: int) -> int:
    """MACs of one layer over a sequence of `seq_len` tokens."""
    ffn = shape.hidden * shape.ffn_width * (3 if shape.gated else 2) + shape.fixed_ffn_macs
    attention = 0
    for heads, kv_heads in ((shape.num_heads, shape.num_kv_heads), (shape.cross_heads, shape.cross_kv_heads)):
        attention += shape.hidden * shape.head_dim * (2 * heads + 2 * kv_heads)  # projections
        attention += 2 * heads * shape.head_dim * seq_len  # scores and weighted values
    return seq_len * (attention + ffn)


def layer_shapes(model: nn.Module) -> list[LayerShape]:
    """The shape of every transformer layer of `model`, read from its weights.

    Zeroed heads or units are counted as present: bake and `optimize_model` first to count a
    pruned model's real cost.

    Raises:
        InputError: If `model` is not a module of a registered architecture.
    """
    check_model(model, "layer_shapes")
    layers = list(get_layout(model).iter_layers(model))
    return [
        LayerShape(
            hidden=layer.output.out_features,
            num_heads=layer.num_heads,
            num_kv_heads=layer.num_kv_heads,
            head_dim=layer.head_dim,
            ffn_width=layer.ffn_width,
            gated=layer.ffn_gate is not None,
            cross_heads=layer.cross.num_heads if layer.cross is not None else 0,
            cross_kv_heads=layer.cross.num_kv_heads if layer.cross is not None else 0,
            fixed_ffn_macs=layer.fixed_ffn_macs(model.config),
        )
        for layer in layers
    ]


def dense_layer_shapes(model: nn.Module) -> list[LayerShape]:
    """The shape every transformer layer of the dense model had, before slimming or dropping layers.

    Args:
        model: A model of a registered architecture.

    Returns:
        One shape per layer of the dense model, dropped layers included (so the list can be longer
        than the model's layer list; `kept_layer_shapes` aligns the model's own shapes with it).
        A slim model's are those its config recorded when it was slimmed (`dense_shapes`; older
        checkpoints: the dense head counts and FFN width its config keeps globally); any other model
        is still dense-shaped, and its own `layer_shapes` are used.
    """
    # Imported here: nn_prune_ext.slim imports this module, so a top-level import would be circular.
    from .slim.layers import dense_num_layers, kept_layer_indices
    from .slim.modeling_slim import global_size_access, is_slim_config, slim_spec

    shapes = layer_shapes(model)
    config = model.config
    if is_slim_config(config) and "dense_shapes" in slim_spec(config):
        return [LayerShape(**shape) for shape in slim_spec(config)["dense_shapes"]]
    if is_slim_config(config):
        spec = slim_spec(config)
        with global_size_access(config):  # the global sizes are the dense ones
            heads = int(getattr(config, spec["num_heads_attr"]))
            kv_attr = spec.get("num_kv_heads_attr")
            kv_heads = getattr(config, kv_attr, None) if kv_attr else None
            width = getattr(config, spec["intermediate_size_attr"], None)
        kv_heads = heads if kv_heads is None else int(kv_heads)
        # A width of None means a family default (GPT-2's n_inner: 4 x hidden), which only the family's
        # modeling code knows.
        width = int(width) if width is not None else _default_ffn_width(model, shapes)
        shapes = [
            replace(shape, num_heads=heads, num_kv_heads=kv_heads, ffn_width=width, cross_heads=0, cross_kv_heads=0)
            for shape in shapes
        ]
    # Every layer of a dense model has the same shape, so a dropped layer had that of any kept one.
    dense = [shapes[0]] * dense_num_layers(config) if shapes else []
    for shape, index in zip(shapes, kept_layer_indices(config)):
        dense[index] = shape
    return dense


def _default_ffn_width(model: nn.Module, shapes: list[LayerShape]) -> int:
    """The FFN width of the dense model of a slim `model` whose config leaves it to the family default.

    Args:
        model: A slim model whose config does not record its dense layer shapes (an older checkpoint).
        shapes: Its own layer shapes.

    Returns:
        The widest FFN of the stock model built from the dense config on the meta device (no memory,
        no weights), so the family's own default applies; if that model cannot be built, the widest
        FFN left in `model` (which undercounts when every layer lost units).
    """
    # Imported here: nn_prune_ext.slim imports this module (circular at the top).
    from .slim.modeling_slim import SlimModelMixin, dense_config, stock_class_of
    from .transformers_internals import build_model

    stock = stock_class_of(type(model)) if isinstance(model, SlimModelMixin) else type(model)
    try:
        with torch.device("meta"):
            dense = build_model(stock, dense_config(model.config))
        return max(shape.ffn_width for shape in layer_shapes(dense))
    except Exception as error:  # any failure here only costs precision: fall back to the widest layer left
        logger.warning(
            "nn_prune_ext: could not build the dense %s on the meta device to read its default FFN width (%s: %s); "
            "using the widest FFN left in the slim model",
            stock.__name__, type(error).__name__, error,
        )
        return max((shape.ffn_width for shape in shapes), default=0)


def kept_layer_shapes(model: nn.Module) -> list[LayerShape]:
    """What `model` keeps of every layer of the dense model, aligned with `dense_layer_shapes`.

    Args:
        model: A model of a registered architecture.

    Returns:
        One shape per layer of the dense model: the model's own layer shape (`layer_shapes`), or
        for a dropped layer a shape without heads and FFN units (which costs no MACs).
    """
    from .slim.layers import dense_num_layers, kept_layer_indices  # circular at the top, as above

    shapes = layer_shapes(model)
    empty = [LayerShape(shape.hidden, 0, 0, shape.head_dim, 0, shape.gated) for shape in shapes[:1]]
    kept = empty * dense_num_layers(model.config)
    for shape, index in zip(shapes, kept_layer_indices(model.config)):
        kept[index] = shape
    return kept


def model_flops(model_or_shapes: nn.Module | list[LayerShape], seq_len: int) -> int:
    """FLOPs of the transformer layers for one sequence of `seq_len` tokens.

    Args:
        model_or_shapes: A model of a registered architecture, or its `LayerShape`s.
        seq_len: Tokens in the sequence (a whole number >= 1).

    Returns:
        The FLOPs (2 per multiply-accumulate).

    Raises:
        InputError: If `seq_len` is not a whole number >= 1 (0 gave 0 FLOPs, 1.5 a fractional count), or
            `model_or_shapes` is neither a model nor a list of `LayerShape` (a model name was an AttributeError).
    """
    check_whole(seq_len, "model_flops(seq_len=...)", 1)
    if isinstance(model_or_shapes, nn.Module):
        shapes = layer_shapes(model_or_shapes)
    elif isinstance(model_or_shapes, (list, tuple)) and all(isinstance(shape, LayerShape) for shape in model_or_shapes):
        shapes = model_or_shapes
    else:
        raise InputError(
            f"model_flops takes a model (torch.nn.Module) or a list of LayerShape, got {type(model_or_shapes).__name__}."
        )
    return 2 * sum(layer_macs(shape, seq_len) for shape in shapes)
