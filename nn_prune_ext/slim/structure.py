"""Plan the cut of each layer: which heads and FFN units a slim layer keeps.

Two sources. `plan_layer_from_masks` takes them from `StructureMasks` (what `prune_with_masks` does:
the masks are the contract, a 0 removes, anything else keeps). `plan_layer` finds them in exact zeros of the weights
(what `optimize_model` does for baked models and zero-filled checkpoints made elsewhere).

Rules on exact zeros:
- A query head is dead when its columns of the output projection are zero, or when the value rows of
  its key/value head are zero. Zero query or key rows alone never kill a head: softmax of a constant
  is uniform attention, not zero attention.
- A value head with zero weights but a nonzero bias outputs that bias at every position; attention
  averages it to the same constant, so its contribution is folded into the output bias (when there
  is one) and its heads die.
- An FFN unit is dead when its down-projection column is zero, or its up (and, gated, its gate) row
  and bias make the unit's activation zero. A non-gated unit with a zero up row but a nonzero bias is
  a constant `act(bias)`, folded into the down bias.
- Under grouped-query attention every key/value head serves `r` query heads. After removal, groups
  may keep different numbers of heads; the plan picks a ratio `r'` per layer and either pads groups
  with zero heads or repeats key/value heads, whichever leaves fewer projection rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..arch import AttentionBlock, LayerModules

# The report's note for a layer whose FFN the layout leaves whole (`ArchitectureLayout.fixed_ffn`).
FIXED_FFN_NOTE = "FFN kept whole: this family's FFN is not pruned"

__all__ = ["AttentionPlan", "LayerPlan", "plan_layer", "plan_layer_from_masks", "slim_attention_sizes"]


@dataclass
class AttentionPlan:
    """What one attention block keeps (the cross-attention of a decoder layer in an encoder-decoder).

    Args:
        num_heads: Query heads before slimming.
        num_kv_heads: Key/value heads before slimming.
        query_heads: For each kept query-head slot, the original head it copies, or `None` for a zero head.
        kv_heads: For each kept key/value slot, the original key/value head it copies.
        output_bias_delta: Added to the block's output bias (folded value biases), or `None`.
    """

    num_heads: int
    num_kv_heads: int
    query_heads: list[int | None]
    kv_heads: list[int]
    output_bias_delta: torch.Tensor | None = None


@dataclass
class LayerPlan:
    """What one layer keeps.

    Args:
        index: Layer index.
        head_dim: Size of one head.
        num_heads: Query heads before slimming.
        num_kv_heads: Key/value heads before slimming.
        ffn_width: FFN units before slimming.
        query_heads: For each kept query-head slot, the original query head it copies, or `None`
            for a zero padding head.
        kv_heads: For each kept key/value slot, the original key/value head it copies (repeats
            allowed).
        ffn_units: Original indices of the kept FFN units.
        output_bias_delta: Added to the attention output bias (folded value biases), or `None`.
        down_bias_delta: Added to the FFN down-projection bias (folded constant units), or `None`.
        notes: Human-readable remarks for the report.
        cross: The plan of the layer's cross-attention block, `None` for a layer without one.
        fixed_ffn: The layer's FFN is left whole (a layout with `fixed_ffn`): the layer is never empty.
    """

    index: int
    head_dim: int
    num_heads: int
    num_kv_heads: int
    ffn_width: int
    query_heads: list[int | None]
    kv_heads: list[int]
    ffn_units: list[int]
    output_bias_delta: torch.Tensor | None = None
    down_bias_delta: torch.Tensor | None = None
    notes: list[str] = field(default_factory=list)
    cross: AttentionPlan | None = None
    fixed_ffn: bool = False

    @property
    def empty(self) -> bool:
        """Whether the layer keeps no head (of any attention block) and no FFN unit (nor a whole FFN)."""
        kept_cross = self.cross is not None and self.cross.query_heads
        return not (self.query_heads or self.ffn_units or kept_cross or self.fixed_ffn)


def _zero_blocks(weight: torch.Tensor, count: int, dim: int) -> torch.Tensor:
    """Per block of `weight` along `dim` (split in `count` equal blocks): is it all zero."""
    if count == 0:
        return torch.zeros(0, dtype=torch.bool, device=weight.device)
    blocks = weight.unflatten(dim, (count, -1))
    reduce_dims = [d for d in range(blocks.dim()) if d != dim]
    return (blocks != 0).sum(dim=reduce_dims) == 0


def _zero_bias_blocks(bias: torch.Tensor | None, count: int, device: torch.device) -> torch.Tensor:
    if bias is None:
        return torch.ones(count, dtype=torch.bool, device=device)
    return _zero_blocks(bias, count, 0)


@torch.no_grad()
def plan_layer(layer: LayerModules, activation: nn.Module | None, keep_heads: bool = False) -> LayerPlan:
    """Plan the slimming of one layer from its (baked or zero-filled) weights.

    Args:
        layer: The layer's projections.
        activation: The FFN activation (used to decide whether a zeroed unit outputs zero and to
            fold constant units); `None` when unknown, in which case only units with a zero down
            column or a zero gate/up product are removed.
        keep_heads: Keep every head, zero or not (families whose heads cannot be removed exactly).

    Returns:
        The plan.
    """
    plan_block = _keep_every_head if keep_heads else _plan_attention
    ffn_units, down_delta, ffn_notes = _plan_ffn(layer, activation)
    blocks = [plan_block(block) for block in layer.attention_blocks]
    return _layer_plan(layer, blocks, ffn_units, down_delta, ffn_notes)


def plan_layer_from_masks(
    layer: LayerModules, head_mask: torch.Tensor, unit_mask: torch.Tensor, cross_mask: torch.Tensor | None = None
) -> LayerPlan:
    """Plan the slimming of one layer from its masks: remove exactly the heads and units whose mask is 0.

    The weights are not read, so the slim sizes are those the masks describe (what a FLOPs budget was
    computed on), whatever the values of the kept weights.

    Args:
        layer: The layer's projections.
        head_mask: One value per query head of the self-attention.
        unit_mask: One value per FFN unit.
        cross_mask: One value per query head of the cross-attention (`None` keeps them all).

    Returns:
        The plan.
    """
    masks = (head_mask, cross_mask)
    blocks = []
    for block, mask in zip(layer.attention_blocks, masks):
        alive = torch.ones(block.num_heads, dtype=torch.bool) if mask is None else mask.cpu() != 0
        query_heads, kv_heads, notes = _regroup(block, alive)
        blocks.append((query_heads, kv_heads, None, notes))
    ffn_units = torch.nonzero(unit_mask.cpu() != 0).flatten().tolist()
    return _layer_plan(layer, blocks, ffn_units, None, [FIXED_FFN_NOTE] if layer.ffn_down is None else [])


def _layer_plan(layer: LayerModules, blocks: list, ffn_units: list[int], down_delta, ffn_notes: list[str]) -> LayerPlan:
    """Assemble a `LayerPlan` from one `(query heads, kv heads, output delta, notes)` per attention block."""
    (query_heads, kv_heads, output_delta, notes), *cross_blocks = blocks
    cross = None
    if cross_blocks:
        cross_heads, cross_kv, cross_delta, cross_notes = cross_blocks[0]
        cross = AttentionPlan(layer.cross.num_heads, layer.cross.num_kv_heads, cross_heads, cross_kv, cross_delta)
        notes = notes + [f"cross-attention: {note}" for note in cross_notes]
    return LayerPlan(
        index=layer.index,
        head_dim=layer.head_dim,
        num_heads=layer.num_heads,
        num_kv_heads=layer.num_kv_heads,
        ffn_width=layer.ffn_width,
        query_heads=query_heads,
        kv_heads=kv_heads,
        ffn_units=ffn_units,
        output_bias_delta=output_delta,
        down_bias_delta=down_delta,
        notes=notes + ffn_notes,
        cross=cross,
        fixed_ffn=layer.ffn_down is None,
    )


def _keep_every_head(layer: AttentionBlock):
    notes = []
    dead = int(_zero_blocks(layer.output.weight, layer.num_heads, 1).sum()) if layer.num_heads else 0
    if dead:
        notes.append(f"kept {dead} zero head(s): heads of this family cannot be removed exactly")
    return list(range(layer.num_heads)), list(range(layer.num_kv_heads)), None, notes


def _plan_attention(layer: AttentionBlock):
    heads, kv_heads, head_dim = layer.num_heads, layer.num_kv_heads, layer.head_dim
    notes: list[str] = []
    if heads == 0:
        return [], [], None, notes
    ratio = heads // kv_heads
    output = layer.output
    alive = ~_zero_blocks(output.weight, heads, 1)
    value_rows_zero = _zero_blocks(layer.value.weight, kv_heads, 0)
    value_bias_zero = _zero_bias_blocks(layer.value.bias, kv_heads, layer.value.weight.device)
    output_delta = None
    for group in range(kv_heads):
        members = slice(group * ratio, (group + 1) * ratio)
        if not value_rows_zero[group] or not alive[members].any():
            continue
        if value_bias_zero[group]:
            alive[members] = False
            continue
        if output.bias is None:
            notes.append(f"key/value head {group} is a constant (zero weights, nonzero bias) kept: no output bias")
            continue
        # Every alive query head of the group adds o[:, head] @ v_bias[group] at every position.
        bias = layer.value.bias.view(kv_heads, head_dim)[group]
        columns = output.weight.view(output.out_features, heads, head_dim)[:, members]
        contribution = (columns[:, alive[members]] @ bias).sum(dim=1)
        output_delta = contribution if output_delta is None else output_delta + contribution
        alive[members] = False
        notes.append(f"folded the constant value of key/value head {group} into the output bias")

    query_heads, kv_slots, group_notes = _regroup(layer, alive)
    return query_heads, kv_slots, output_delta, notes + group_notes


def _regroup(layer: AttentionBlock, alive: torch.Tensor) -> tuple[list[int | None], list[int], list[str]]:
    """Query-head and key/value-head slots keeping the `alive` query heads (see `slim_attention_sizes`)."""
    heads, kv_heads = layer.num_heads, layer.num_kv_heads
    if heads == 0:
        return [], [], []
    ratio = heads // kv_heads
    counts = [int(alive[g * ratio : (g + 1) * ratio].sum()) for g in range(kv_heads)]
    kept_groups = [g for g in range(kv_heads) if counts[g]]
    if not kept_groups:
        return [], [], []
    notes: list[str] = []
    new_ratio = _best_ratio([counts[g] for g in kept_groups])
    query_heads: list[int | None] = []
    kv_slots: list[int] = []
    padded = repeated = 0
    for group in kept_groups:
        members = [h for h in range(group * ratio, (group + 1) * ratio) if alive[h]]
        copies = math.ceil(len(members) / new_ratio)
        kv_slots += [group] * copies
        repeated += copies - 1
        padding = copies * new_ratio - len(members)
        padded += padding
        query_heads += members + [None] * padding
    if ratio > 1 and padded:
        notes.append(f"kept {padded} zero query head(s) so every key/value head serves {new_ratio}")
    if repeated:
        notes.append(f"repeated {repeated} key/value head(s) so every key/value head serves {new_ratio}")
    return query_heads, kv_slots, notes


def slim_attention_sizes(kept_per_group: list[int]) -> tuple[int, int]:
    """Query and key/value heads a slim layer has when each key/value group keeps the given heads.

    This is the arithmetic `plan_layer` applies (zero padding heads or repeated key/value heads,
    whichever leaves fewer projection rows), so a cost computed from it is the slim model's cost.

    Args:
        kept_per_group: For each key/value head of the dense layer, how many of its query heads
            are kept (one entry per head without grouped-query attention).

    Returns:
        `(query heads, key/value heads)` of the slim layer, `(0, 0)` when nothing is kept.
    """
    counts = [count for count in kept_per_group if count]
    if not counts:
        return 0, 0
    ratio = _best_ratio(counts)
    copies = sum(math.ceil(count / ratio) for count in counts)
    return copies * ratio, copies


def _best_ratio(counts: list[int]) -> int:
    """Query heads per key/value head minimizing projection rows (ties: fewer key/value heads)."""
    best, best_cost = 1, None
    for ratio in range(1, max(counts) + 1):
        copies = sum(math.ceil(c / ratio) for c in counts)
        cost = copies * ratio + copies  # query+output slots plus key+value slots, in head units
        if best_cost is None or cost <= best_cost:
            best, best_cost = ratio, cost
    return best


def _plan_ffn(layer: LayerModules, activation: nn.Module | None):
    if layer.ffn_down is None:
        return [], None, [FIXED_FFN_NOTE]
    down, up, gate = layer.ffn_down, layer.ffn_up, layer.ffn_gate
    width = down.in_features
    notes: list[str] = []
    dead = _zero_blocks(down.weight, width, 1)
    up_zero = _zero_blocks(up.weight, width, 0)
    up_bias_zero = _zero_bias_blocks(up.bias, width, up.weight.device)
    act_of_zero = None
    if activation is not None:
        act_of_zero = float(activation(torch.zeros(1, dtype=up.weight.dtype, device=up.weight.device)))
    down_delta = None
    if gate is not None:
        dead |= up_zero & up_bias_zero
        if act_of_zero == 0.0:
            dead |= _zero_blocks(gate.weight, width, 0) & _zero_bias_blocks(gate.bias, width, gate.weight.device)
    elif activation is not None:
        constant = up_zero & ~dead
        if act_of_zero == 0.0:
            dead |= constant & up_bias_zero
            constant &= ~up_bias_zero
        if constant.any():
            if down.bias is None:
                notes.append(f"kept {int(constant.sum())} constant FFN unit(s): the down projection has no bias")
            else:
                bias = up.bias if up.bias is not None else torch.zeros_like(up.weight[:, 0])
                values = activation(bias[constant])
                down_delta = down.weight[:, constant] @ values
                dead |= constant
                notes.append(f"folded {int(constant.sum())} constant FFN unit(s) into the down bias")
    kept = torch.nonzero(~dead).flatten().tolist()
    return kept, down_delta, notes
