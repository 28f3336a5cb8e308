"""Importance pruning (TextPruner's `TransformerPruner`): keep the most important heads and FFN units.

Importance is first-order Taylor (`importance.taylor_importance`): the summed magnitude of the
loss gradient with respect to each head's and FFN unit's mask, on a few labelled batches. The
least important heads and units are removed until every layer keeps the target number of heads
and FFN width (`scope="even"`), or until the whole model keeps `target x layers` of them, ranked
all together (`scope="global"`). With `rounds > 1` the model is pruned step by step, measuring
importance again on the model as pruned so far.

```python
from nn_prune_ext.importance_pruning import prune_by_importance

slim = prune_by_importance(model, batches, target_num_heads=8, target_ffn_width=1536, multiple_of=64)
```

Choices made here:

- Sizes: a round's per-layer size goes linearly from the full size (the largest layer's) to the
  target; FFN widths are rounded *up* to a multiple of `multiple_of` (never fewer units than asked)
  and never exceed a layer's width. `multiple_of` concerns FFN widths only. A layer of a slim
  model that is already smaller than a round's size keeps what it has.
- Grouped-query attention (`whole_kv_groups=True`, the default): whole key/value groups are kept
  or removed, ranked by the summed importance of their query heads, so a slim layer stays a
  smaller grouped-query layer without padding heads or repeated key/value heads. The head target
  must then be a multiple of the query heads per key/value head. With `whole_kv_groups=False`
  single query heads are ranked; `optimize_model` then pads groups with zero heads or repeats
  key/value heads where groups keep unequal counts. Without GQA both are the same.
- "global": the ranking runs over *chunks*: key/value groups (or heads), and runs of `multiple_of`
  FFN units taken in each layer's importance order, scored by their summed importance. Each
  layer keeps its most important chunk (at least one head or group, at least `multiple_of` units)
  unless the target is 0, so no layer is emptied by the ranking alone.
- Ties are broken by position: the earlier layer, then the lower head or unit index, is kept.
- A removed head or unit is never restored by a later round, whatever its new importance.
"""

from __future__ import annotations

import heapq
import itertools
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

import torch
from torch import nn

from .importance import collect_mask_gradients, taylor_importance
from .arch import get_layout
from .masks import StructureMasks
from .patch import require_unpatched
from .slim import prune_with_masks
from .validation import (
    InputError,
    NonFiniteError,
    check_fields,
    check_flag,
    check_model,
    refuse_unknown_keywords,
    settings_with,
)

__all__ = ["ImportancePruningArgs", "importance_masks", "prune_by_importance"]

SCOPES = ("even", "global")


@refuse_unknown_keywords  # a misspelled target would otherwise be Python's bare TypeError
@dataclass
class ImportancePruningArgs:
    """Targets and options of importance pruning (usable with `HfArgumentParser`)."""

    target_num_heads: int | None = field(
        default=None,
        metadata={
            "help": "Attention (query) heads kept per layer; the average per layer with scope='global'. "
            "None leaves the heads unpruned."
        },
    )
    target_ffn_width: int | None = field(
        default=None,
        metadata={
            "help": "FFN units kept per layer (rounded up to a multiple of multiple_of); the average per layer "
            "with scope='global'. None leaves the FFNs unpruned."
        },
    )
    scope: str = field(
        default="even",
        metadata={
            "help": "'even': every layer keeps the targets; 'global': one ranking over all layers keeps "
            "target x layers in total, at least one head (group) and multiple_of units per layer."
        },
    )
    rounds: int = field(
        default=1,
        metadata={"help": "Prune in this many steps from the full size to the targets, measuring importance again "
                  "before each step on the model as pruned so far."},
    )
    multiple_of: int = field(
        default=1, metadata={"help": "Round every layer's FFN width up to a multiple of this (e.g. 64 for GPUs)."}
    )
    whole_kv_groups: bool = field(
        default=True,
        metadata={
            "help": "Under grouped-query attention, keep or remove whole key/value groups, so slim layers need no "
            "padding heads; False ranks single query heads."
        },
    )
    max_batches: int | None = field(
        default=None, metadata={"help": "Measure importance on at most this many batches per round."}
    )

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Check the arguments on their own; raises `ValueError` naming the fix."""
        check_fields(self)
        if self.target_num_heads is None and self.target_ffn_width is None:
            raise InputError(
                "Importance pruning got no target: pass target_num_heads and/or target_ffn_width "
                "(heads and FFN units to keep per layer)."
            )
        for name in ("target_num_heads", "target_ffn_width"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 0):
                raise InputError(f"{name} must be a whole number >= 0 (or None to leave it unpruned), got {value!r}.")
        if self.scope not in SCOPES:
            raise InputError(f"scope={self.scope!r} is not one of {', '.join(SCOPES)}.")
        for name in ("rounds", "multiple_of"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise InputError(f"{name} must be a whole number >= 1, got {value!r}.")
        if self.max_batches is not None and (not _is_int(self.max_batches) or self.max_batches < 1):
            raise InputError(f"max_batches must be a whole number >= 1 or None, got {self.max_batches!r}.")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


@dataclass(frozen=True)
class _Part:
    """Heads or FFN units of a model, as importance pruning ranks them.

    Args:
        what: "head" or "FFN unit", for messages.
        sizes: Entries per layer.
        chunks: Per layer, the size of one ranked chunk.
        fixed: Chunks are consecutive entries (key/value groups) rather than runs in importance order.
        step: Every round's per-layer size is rounded up to a multiple of this.
        target: The final per-layer size.
    """

    what: str
    sizes: list[int]
    chunks: list[int]
    fixed: bool
    step: int
    target: int

    def size_at(self, round_: int, rounds: int) -> int:
        """Per-layer size after round `round_` of `rounds`: linear from the full size to the target."""
        full = max(self.sizes)
        if round_ >= rounds:
            return min(full, self.target)
        exact = -(-(self.target * rounds + (full - self.target) * (rounds - round_)) // rounds)
        return min(full, _round_up(exact, self.step))


def _heads_part(model: nn.Module, target: int, whole_kv_groups: bool) -> _Part:
    layers = list(get_layout(model).iter_layers(model))
    sizes = [layer.num_heads for layer in layers]
    _check_range("target_num_heads", target, sizes, "heads")
    groups = [layer.num_heads // layer.num_kv_heads if layer.num_kv_heads else 1 for layer in layers]
    if not whole_kv_groups:
        return _Part("head", sizes, [1] * len(sizes), fixed=False, step=1, target=target)
    step = math.lcm(*groups) if groups else 1
    if target % step:
        raise InputError(
            f"target_num_heads={target} is not a multiple of {step}, the query heads per key/value head of this "
            "grouped-query model: whole key/value groups are pruned (whole_kv_groups=True) so that slim layers need "
            f"no padding heads. Pass a multiple of {step}, or whole_kv_groups=False to rank single query heads "
            "(optimize_model then pads groups or repeats key/value heads)."
        )
    return _Part("head", sizes, groups, fixed=True, step=step, target=target)


def _units_part(model: nn.Module, target: int, multiple_of: int) -> _Part:
    sizes = [layer.ffn_width for layer in get_layout(model).iter_layers(model)]
    _check_range("target_ffn_width", target, sizes, "FFN units")
    return _Part("FFN unit", sizes, [multiple_of] * len(sizes), fixed=False, step=multiple_of,
                 target=_round_up(target, multiple_of))


def _check_range(name: str, target: int, sizes: list[int], what: str) -> None:
    largest = max(sizes, default=0)
    if target > largest:
        raise InputError(
            f"{name}={target} is out of range: the model's layers have at most {largest} {what}. "
            f"Pass 0..{largest}, or None to leave them unpruned."
        )


# ----- ranking -------------------------------------------------------------------------------------
def _layer_chunks(scores: torch.Tensor, alive: torch.Tensor, size: int, fixed: bool) -> list[torch.Tensor]:
    """The alive entries of one layer as chunks of indices, most important first (ties: lower index first)."""
    if fixed:
        groups = torch.arange(alive.numel()).view(-1, size)
        groups = groups[alive.view(-1, size).all(dim=1)]
        order = torch.sort(scores[groups].sum(dim=1), descending=True, stable=True).indices
        return list(groups[order])
    indices = alive.nonzero().flatten()
    order = indices[torch.sort(scores[indices], descending=True, stable=True).indices]
    return list(order.split(size)) if order.numel() else []


def _take_even(chunks: list[torch.Tensor], keep: int) -> list[torch.Tensor]:
    """The leading chunks of one layer holding at most `keep` entries."""
    kept, used = [], 0
    for chunk in chunks:
        if used + len(chunk) > keep:
            break
        kept.append(chunk)
        used += len(chunk)
    return kept


def _take_global(
    chunks: list[list[torch.Tensor]], scores: list[torch.Tensor], budget: int
) -> list[list[torch.Tensor]]:
    """Chunks of all layers, by summed importance, holding at most `budget` entries.

    Every layer with chunks keeps its first one when the budget is positive. The others are
    merged across layers in importance order (a heap of each layer's next chunk), so a layer
    always keeps a prefix of its own ranking; a layer whose next chunk no longer fits stops.
    """
    kept: list[list[torch.Tensor]] = [[] for _ in chunks]
    if budget <= 0:
        return kept
    sums = [[float(scores[layer][chunk].sum()) for chunk in layer_chunks] for layer, layer_chunks in enumerate(chunks)]
    used, heap = 0, []
    for layer, layer_chunks in enumerate(chunks):
        if layer_chunks:
            kept[layer].append(layer_chunks[0])
            used += len(layer_chunks[0])
            if len(layer_chunks) > 1:
                heap.append((-sums[layer][1], layer, 1))
    heapq.heapify(heap)  # ties: the earlier layer first
    while heap and used < budget:
        _, layer, position = heapq.heappop(heap)
        chunk = chunks[layer][position]
        if used + len(chunk) > budget:
            continue
        kept[layer].append(chunk)
        used += len(chunk)
        if position + 1 < len(chunks[layer]):
            heapq.heappush(heap, (-sums[layer][position + 1], layer, position + 1))
    return kept


def _prune_part(
    part: _Part, scores: list[torch.Tensor], masks: list[torch.Tensor], size: int, scope: str
) -> list[torch.Tensor]:
    """New masks of one part keeping `size` entries per layer (or `size x layers` in total)."""
    alive = [mask != 0 for mask in masks]
    chunks = [
        _layer_chunks(layer_scores, layer_alive, chunk, part.fixed)
        for layer_scores, layer_alive, chunk in zip(scores, alive, part.chunks)
    ]
    if scope == "even":
        kept = [_take_even(layer_chunks, size) for layer_chunks in chunks]
    else:
        kept = _take_global(chunks, scores, size * len(masks))
    new_masks = []
    for mask, layer_kept in zip(masks, kept):
        new = torch.zeros_like(mask)
        if layer_kept:
            index = torch.cat(layer_kept)
            new[index] = mask[index]  # kept entries keep their value
        new_masks.append(new)
    return new_masks


def _needs_pruning(part: _Part | None, masks: list[torch.Tensor], size: int, scope: str) -> bool:
    if part is None:
        return False
    alive = [int(mask.count_nonzero()) for mask in masks]
    if scope == "even":
        return any(count > size for count in alive)
    return sum(alive) > size * len(masks)


def _layer_scores(values: torch.Tensor, sizes: tuple[int, ...], what: str) -> list[torch.Tensor]:
    scores = [values[index, :size] for index, size in enumerate(sizes)]
    if any(not torch.isfinite(layer).all() for layer in scores):
        raise NonFiniteError(
            f"The {what} importance is not finite: the model's loss or its gradients are NaN or infinite on these "
            "batches. Check the inputs and labels (and the model's dtype)."
        )
    return scores


# ----- the API -----------------------------------------------------------------------------------
def importance_masks(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    args: ImportancePruningArgs | None = None,
    **kwargs: Any,
) -> StructureMasks:
    """Binary head and FFN-unit masks keeping the most important ones (first-order Taylor importance).

    Args:
        model: A model of a registered architecture (dense, patched or slim) that returns a loss.
            It is not modified.
        batches: Dicts of model inputs with their targets (`labels`), e.g. a `DataLoader`. With
            `rounds > 1` they are read once per round (an iterator is first stored as a list).
        args: The targets and options (`ImportancePruningArgs`).
        **kwargs: `ImportancePruningArgs` fields, instead of or on top of `args`:
            `target_num_heads`, `target_ffn_width`, `scope`, `rounds`, `multiple_of`,
            `whole_kv_groups`, `max_batches`.

    Returns:
        `StructureMasks` with 1 for every kept head and unit, 0 for removed ones.

    Raises:
        InputError: For a model that is not a module, a target out of range or not a multiple of the
            key/value group size, bad or unknown options, no batches, or batches the model computes no
            loss from.
    """
    check_model(model, "importance_masks")
    args = settings_with(ImportancePruningArgs, args, kwargs, "importance_masks",
                         "pass ImportancePruningArgs(target_num_heads=..., ...) or the fields as keywords")
    if args.target_num_heads is not None:
        get_layout(model).require_removable_heads(f"target_num_heads={args.target_num_heads}")
    if args.target_ffn_width is not None:
        get_layout(model).require_prunable_ffn(f"target_ffn_width={args.target_ffn_width}")
    heads = None if args.target_num_heads is None else _heads_part(model, args.target_num_heads, args.whole_kv_groups)
    units = None if args.target_ffn_width is None else _units_part(model, args.target_ffn_width, args.multiple_of)
    if args.rounds > 1 and isinstance(batches, Iterator):
        batches = list(itertools.islice(batches, args.max_batches))  # every round reads them again
    masks = StructureMasks.ones(model)
    for round_ in range(1, args.rounds + 1):
        head_size = heads.size_at(round_, args.rounds) if heads is not None else 0
        unit_size = units.size_at(round_, args.rounds) if units is not None else 0
        if not (_needs_pruning(heads, masks.heads, head_size, args.scope)
                or _needs_pruning(units, masks.units, unit_size, args.scope)):
            continue
        importance = taylor_importance(collect_mask_gradients(model, batches, args.max_batches, masks=masks))
        head_masks, unit_masks = masks.heads, masks.units
        if heads is not None:
            scores = _layer_scores(importance.heads, importance.num_heads, "head")
            head_masks = _prune_part(heads, scores, masks.heads, head_size, args.scope)
        if units is not None:
            scores = _layer_scores(importance.units, importance.ffn_widths, "FFN unit")
            unit_masks = _prune_part(units, scores, masks.units, unit_size, args.scope)
        masks = StructureMasks(heads=head_masks, units=unit_masks)
    return masks


def prune_by_importance(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    args: ImportancePruningArgs | None = None,
    *,
    inplace: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Prune `model` to the targets by importance and slim it (`importance_masks`, then `prune_with_masks`).

    Args:
        model: A plain (unpatched) model of a registered architecture, dense or slim, that returns a loss.
        batches: Labelled batches to measure importance on.
        args: The targets and options (`ImportancePruningArgs`).
        inplace: Slim `model` itself instead of a copy.
        **kwargs: `ImportancePruningArgs` fields, instead of or on top of `args`.

    Returns:
        The slim model from `optimize_model`, with its `slim_report`; its outputs equal those of
        `model` with the removed heads and FFN units masked out.

    Raises:
        InputError: For a model patched for movement pruning (bake it first, as for
            `post_training_prune` and `prune_layers`), for `inplace` not True or False, and as
            `importance_masks`.
    """
    require_unpatched(model, "prune_by_importance")
    check_flag(inplace, "prune_by_importance(inplace=...)")  # before the importance is measured (minutes)
    masks = importance_masks(model, batches, args, **kwargs)
    return prune_with_masks(model, masks, inplace=inplace)
