"""What a model's transformer layers compute, counted so that it predicts time: `LayerWork` and `model_work`.

FLOPs (`nn_prune_ext.flops`) count the matrix products, the part of the work that pruning shrinks
in proportion. A slim model also spends time on work that shrinks less or not at all, which is
why a FLOPs ratio over-promises where pruning is heavy:

- vector work: the softmax over the attention scores (it shrinks with the heads), the activation
  of the FFN units (it shrinks with the width), the normalisations and residual sums over the
  hidden size (they do not shrink);
- fixed work: every attention block with heads and every FFN with units runs the same sequence of
  operators however narrow it is (projections, reshapes, attention kernel, activation), and every
  layer its norms and sums; each operator call costs a fixed time on any device.

Per layer, over a batch of `batch_size` sequences of `seq_len` tokens (`tokens = batch_size * seq_len`):

- `matmul_macs`: the multiply-accumulates `flops.layer_macs` counts, times `batch_size`;
- `vector_flops`: `SOFTMAX_FLOPS` per attention score (`batch_size * heads * seq_len**2` per
  attention block), `ACTIVATION_FLOPS` per FFN unit and token (one more for a gated FFN's
  product), `NORM_FLOPS` per hidden element and token for each norm, and one per hidden element
  and token for each residual sum;
- `attention_blocks`, `ffn_blocks`: the attention blocks with at least one head and the FFNs with
  at least one unit (or an FFN that is not pruned, such as a mixture of experts); `layers`: 1.

`nn_prune_ext.speed.SpeedModel` turns a `ModelWork` into milliseconds with rates fitted on the current
device. What slimming keeps is what is counted: a head that keeps any block of a block-sparse mask
is computed in full by the slim model, and counted in full here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from .arch import get_layout
from .flops import LayerShape, layer_shapes
from .validation import InputError

__all__ = [
    "ACTIVATION_FLOPS", "LayerWork", "ModelWork", "NORM_FLOPS", "SOFTMAX_FLOPS", "hidden_norms", "layer_work", "model_work",
]

SOFTMAX_FLOPS = 5  # per score: max, subtract, exponential, sum, divide
ACTIVATION_FLOPS = 8  # per unit: GELU/SiLU through tanh or exp, as the CPU kernels evaluate them
NORM_FLOPS = 5  # per element: mean, subtract, variance, divide, scale (RMSNorm does less, counted alike)


@dataclass(frozen=True)
class LayerWork:
    """The work of one transformer layer (or of several, summed), over a batch.

    Args:
        matmul_macs: Multiply-accumulates of the projections, the attention products and the FFN.
        vector_flops: Element-wise work: softmax, activation, norms, residual sums.
        attention_blocks: Attention blocks that still have heads.
        ffn_blocks: FFNs that still have units.
        layers: Transformer layers.
    """

    matmul_macs: int = 0
    vector_flops: int = 0
    attention_blocks: int = 0
    ffn_blocks: int = 0
    layers: int = 0

    def __add__(self, other: "LayerWork") -> "LayerWork":
        return LayerWork(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def flops(self) -> int:
        """All arithmetic: twice the MACs, plus the vector work."""
        return 2 * self.matmul_macs + self.vector_flops


# The work of a whole model's layers is the sum of its layers' work.
ModelWork = LayerWork


def layer_work(
    shape: LayerShape, seq_len: int, batch_size: int = 1, *, sublayers: int = 2, norms: int = 2
) -> LayerWork:
    """The work of one layer of `shape` over `batch_size` sequences of `seq_len` tokens.

    Args:
        shape: The layer's sizes (`flops.layer_shapes`).
        seq_len: Tokens per sequence.
        batch_size: Sequences.
        sublayers: Attention blocks plus the FFN, whether or not they keep heads and units: each
            ends in a residual sum (3 in an encoder-decoder's decoder layer).
        norms: Normalisations over the hidden size the layer applies (`hidden_norms`).

    Returns:
        The `LayerWork` (with `layers=1`).
    """
    if seq_len < 1 or batch_size < 1:
        raise InputError(f"seq_len and batch_size must be at least 1, got {seq_len} and {batch_size}.")
    tokens = batch_size * seq_len
    matmul = vector = attention_blocks = 0
    for heads, kv_heads in ((shape.num_heads, shape.num_kv_heads), (shape.cross_heads, shape.cross_kv_heads)):
        if heads == 0:
            continue  # a block without heads is skipped (its output projection's bias is a constant)
        attention_blocks += 1
        matmul += tokens * shape.hidden * shape.head_dim * (2 * heads + 2 * kv_heads)
        scores = batch_size * heads * seq_len * seq_len
        matmul += 2 * scores * shape.head_dim
        vector += SOFTMAX_FLOPS * scores
    ffn_blocks = int(shape.ffn_width > 0 or shape.fixed_ffn_macs > 0)
    matmul += tokens * (shape.hidden * shape.ffn_width * (3 if shape.gated else 2) + shape.fixed_ffn_macs)
    vector += tokens * shape.ffn_width * (ACTIVATION_FLOPS + (1 if shape.gated else 0))
    vector += tokens * shape.hidden * (NORM_FLOPS * norms + sublayers)
    return LayerWork(matmul, vector, attention_blocks, ffn_blocks, layers=1)


def hidden_norms(layer: nn.Module, hidden: int) -> int:
    """The normalisations over the hidden size in a layer module: its norm modules with `hidden` weights.

    Read from the modules rather than from a norm placement, so that a family with one norm for
    parallel attention and FFN (Phi) or with an identity in place of a norm (ModernBERT's first
    layer) is counted as it computes. Norms over one head (Qwen 3's `q_norm`) are left out: their
    work is a head's share of a hidden norm.
    """
    count = 0
    for module in layer.modules():
        weight = getattr(module, "weight", None)
        if "norm" in type(module).__name__.lower() and isinstance(weight, torch.Tensor) and weight.numel() == hidden:
            count += 1
    return count


def model_work(model: nn.Module, seq_len: int, batch_size: int = 1) -> ModelWork:
    """The work of `model`'s transformer layers over `batch_size` sequences of `seq_len` tokens.

    Only the layers the model has are counted (a layer slimming dropped computes nothing).

    Args:
        model: A model of a registered architecture (dense, baked or slim).
        seq_len: Tokens per sequence.
        batch_size: Sequences.

    Returns:
        The summed `ModelWork`; its `matmul_macs` are `batch_size * flops.model_flops(model, seq_len) / 2`.
    """
    total = LayerWork()
    for layer, shape in zip(get_layout(model).iter_layers(model), layer_shapes(model)):
        sublayers = len(layer.attention_blocks) + 1
        norms = hidden_norms(layer.module, shape.hidden)
        total += layer_work(shape, seq_len, batch_size, sublayers=sublayers, norms=norms)
    return total
