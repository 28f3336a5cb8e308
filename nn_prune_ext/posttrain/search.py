"""Mask search under a FLOPs or latency budget (Kwon et al. 2022, section 4.2).

Keep the heads and FFN units of highest importance (diagonal Fisher information) whose total cost
fits the budget. Heads and FFN units share one budget, so the search tries every number of kept
attention units `n` (the `n` most important ones over all layers), fills what the budget leaves
with the most important FFN units, and keeps the `n` whose kept units sum to the most importance.

Costs come from a `CostModel` and are those of the slim model `optimize_model` builds, so the
budget holds on the real result: `model_flops(slim) <= budget` for a FLOPs budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..masks import StructureMasks
from .costs import CostModel
from .units import PruningUnits
from ..validation import InputError, NonFiniteError, check_real, first_non_finite

__all__ = ["SearchResult", "search_masks", "masks_cost", "dense_cost"]


@dataclass(frozen=True)
class SearchResult:
    """The masks a search chose and what they cost.

    Args:
        masks: Binary head and FFN-unit masks.
        cost: Their cost under the search's cost model.
        budget: The budget they had to fit.
        dense_cost: The cost of the searched (input) model with nothing pruned: the dense model's
            cost when the input is dense, the slim model's when it was slimmed before.
        importance: Summed importance of everything kept.
        dense_model_cost: The cost of the dense model: `dense_cost` itself for a dense input, the
            cost of the model a slim input was cut from when it is known (`post_training_prune`
            sets it), `None` when it is not (`search_masks` alone cannot tell).
    """

    masks: StructureMasks
    cost: float
    budget: float
    dense_cost: float
    importance: float
    dense_model_cost: float | None = None

    def __str__(self) -> str:
        return (
            f"kept heads per layer {self.masks.kept_heads()}, FFN units per layer {self.masks.kept_units()}; "
            f"cost {self.cost:.6g} of budget {self.budget:.6g}{self._shares()}"
        )

    def _shares(self) -> str:
        """The cost as a share of the dense model's, and of the input model's when that was slim already."""
        if self.dense_cost <= 0:
            return ""
        of_input = f"{self.cost / self.dense_cost:.1%}"
        if self.dense_model_cost == self.dense_cost:
            return f" ({of_input} of the dense model)"
        if self.dense_model_cost is None or self.dense_model_cost <= 0:
            return f" ({of_input} of the input model)"
        return f" ({of_input} of the input model, {self.cost / self.dense_model_cost:.1%} of the dense model)"


def masks_cost(masks: StructureMasks, structure: PruningUnits, cost: CostModel) -> float:
    """The cost of a model pruned with `masks` (attention plus FFN of every layer)."""
    total = 0.0
    for layer in range(structure.num_layers):
        kept = structure.kept_units(layer, masks.heads[layer])
        total += cost.attention(layer, structure.kept_per_group(layer, kept))
        total += cost.ffn(layer, int(masks.units[layer].count_nonzero()))
    return total


def dense_cost(structure: PruningUnits, cost: CostModel) -> float:
    """The cost of the model with nothing pruned: the reference a budget fraction is taken of."""
    return masks_cost(
        StructureMasks(
            heads=[torch.ones(shape.num_heads) for shape in structure.shapes],
            units=[torch.ones(shape.ffn_width) for shape in structure.shapes],
        ),
        structure,
        cost,
    )


def _ranking(scores: list[torch.Tensor]) -> list[tuple[int, int]]:
    """`(layer, index)` of every entry, most important first; ties go to the earlier layer and index."""
    entries = [(float(value), layer, index) for layer, values in enumerate(scores) for index, value in enumerate(values)]
    entries.sort(key=lambda entry: (-entry[0], entry[1], entry[2]))
    return [(layer, index) for _, layer, index in entries]


@dataclass(frozen=True)
class _Fill:
    """FFN units chosen for one head count: per-layer `counts`, or (linear costs) the `top` ranked units."""

    counts: list[int] | None
    top: int
    cost: float
    importance: float

    def per_layer(self, ranking: list[tuple[int, int]], layers: int) -> list[int]:
        if self.counts is not None:
            return self.counts
        counts = [0] * layers
        for layer, _ in ranking[: self.top]:
            counts[layer] += 1
        return counts


def _fill_ffn(
    ranking: list[tuple[int, int]], prefix: torch.Tensor, widths: list[int], cost: CostModel, budget: float
) -> _Fill:
    """The most important FFN units that fit `budget`.

    With a cost linear in the width (FLOPs) the top units are taken until the budget is spent, in
    constant time (the search tries every head count); otherwise (latency) units are added in
    order of importance whenever their extra cost fits. Either way each layer keeps a prefix of
    its own ranking.

    Args:
        ranking: `(layer, unit)` of every FFN unit, most important first.
        prefix: Cumulative importance along `ranking` (`prefix[k]`: the top `k` units).
        widths: FFN units per layer.
        cost: The cost model.
        budget: What the FFNs may cost.
    """
    layers = len(widths)
    unit_cost = _linear_unit_cost(cost, layers)
    if unit_cost is not None:
        count = min(int(budget // unit_cost) if budget > 0 else 0, len(ranking))
        while count and count * unit_cost > budget:  # float rounding at the boundary: the budget must hold
            count -= 1
        return _Fill(counts=None, top=count, cost=count * unit_cost, importance=float(prefix[count]))
    counts = [0] * layers
    spent = 0.0
    taken = torch.zeros(len(ranking), dtype=torch.bool)
    for position, (layer, _) in enumerate(ranking):
        extra = cost.ffn(layer, counts[layer] + 1) - cost.ffn(layer, counts[layer])
        if spent + extra <= budget:
            counts[layer] += 1
            spent += extra
            taken[position] = True
    values = prefix[1:] - prefix[:-1]
    return _Fill(counts=counts, top=0, cost=spent, importance=float(values[taken].sum()))


def _linear_unit_cost(cost: CostModel, layers: int) -> float | None:
    """The one per-unit FFN cost shared by all layers, when the FFN cost is linear; else `None`."""
    unit_costs = {cost.ffn_unit_cost(layer) for layer in range(layers)}
    if len(unit_costs) == 1:
        (unit_cost,) = unit_costs
        if unit_cost is not None and unit_cost > 0:
            return unit_cost
    return None


def search_masks(
    head_importance: list[torch.Tensor],
    unit_importance: list[torch.Tensor],
    structure: PruningUnits,
    cost: CostModel,
    budget: float,
) -> SearchResult:
    """Choose the heads and FFN units to keep under `budget`.

    Args:
        head_importance: Per layer, one importance per attention unit of `structure` (a head, or a
            key/value group; e.g. `UnitGradients.fisher()`).
        unit_importance: Per layer, one importance per FFN unit.
        structure: The attention units of the model.
        cost: The cost model (`FlopsCost` or `LatencyCost`).
        budget: The largest allowed cost, in the cost model's unit (FLOPs or milliseconds).

    Returns:
        A `SearchResult`; its cost never exceeds `budget`.

    Raises:
        InputError: If the importances do not match `structure`, or the budget is negative, NaN or infinite.
        NonFiniteError: If an importance or a cost is NaN or infinite.
    """
    # A NaN budget compares false with every cost, and a NaN importance ranks anywhere: either would
    # give masks that look valid and are not what was asked for.
    check_real(budget, "search_masks(budget=...)", minimum=0)
    layers = structure.num_layers
    if len(head_importance) != layers or len(unit_importance) != layers:
        raise InputError(
            f"Got importances for {len(head_importance)} / {len(unit_importance)} layers, but the model has {layers}."
        )
    for kind, importances in (("attention", head_importance), ("FFN", unit_importance)):
        if any(not isinstance(values, torch.Tensor) for values in importances):
            raise InputError(f"The {kind} importances must be one tensor per layer, got {importances!r}.")
        bad = first_non_finite(enumerate(importances))
        if bad is not None:
            raise NonFiniteError(
                f"Layer {bad}'s {kind} importances hold NaN or infinite values: recompute them from finite "
                "gradients (UnitGradients.fisher() of collect_mask_gradients' output)."
            )
    for layer in range(layers):
        expected = len(structure.head_units(layer))
        if head_importance[layer].numel() != expected:
            raise InputError(
                f"Layer {layer} has {expected} attention units but {head_importance[layer].numel()} importances."
            )
        width = structure.shapes[layer].ffn_width
        if unit_importance[layer].numel() != width:
            raise InputError(
                f"Layer {layer} has {width} FFN units but {unit_importance[layer].numel()} FFN importances."
            )
    widths = [int(values.numel()) for values in unit_importance]
    dense = dense_cost(structure, cost)
    _check_cost("the dense model", dense)
    head_ranking = _ranking(head_importance)
    unit_ranking = _ranking(unit_importance)
    unit_values = torch.tensor([float(unit_importance[layer][index]) for layer, index in unit_ranking], dtype=torch.float64)
    prefix = torch.cat([torch.zeros(1, dtype=torch.float64), unit_values.cumsum(0)])

    kept = [torch.zeros(len(structure.head_units(layer)), dtype=torch.bool) for layer in range(layers)]
    attention_costs = [cost.attention(layer, structure.kept_per_group(layer, kept[layer])) for layer in range(layers)]
    best = None
    head_sum = 0.0
    for count in range(len(head_ranking) + 1):
        if count:
            layer, unit = head_ranking[count - 1]
            kept[layer][unit] = True
            head_sum += float(head_importance[layer][unit])
            attention_costs[layer] = cost.attention(layer, structure.kept_per_group(layer, kept[layer]))
        attention = sum(attention_costs)
        _check_cost(f"the attention keeping the {count} most important units", attention)
        if attention > budget:
            continue  # under GQA padding a larger count may still fit; keep looking
        fill = _fill_ffn(unit_ranking, prefix, widths, cost, budget - attention)
        if best is None or head_sum + fill.importance > best[0]:
            best = (head_sum + fill.importance, [k.clone() for k in kept], fill, attention + fill.cost)
    importance, kept_heads, fill, total = best
    kept_units = _kept_by_rank(unit_ranking, fill.per_layer(unit_ranking, layers), widths)
    masks = StructureMasks(
        heads=[structure.head_mask(layer, kept_heads[layer]) for layer in range(layers)],
        units=[kept_units[layer].float() for layer in range(layers)],
    )
    return SearchResult(masks=masks, cost=total, budget=budget, dense_cost=dense, importance=importance)


def _check_cost(what: str, value: float) -> None:
    """Refuse a NaN or infinite cost: `cost > budget` is then false, and the search would take it as free."""
    if not math.isfinite(value):
        raise NonFiniteError(
            f"The cost model gives {value} for {what}: a cost must be a finite number. Measure the latency table "
            "again or check the cost model."
        )


def _kept_by_rank(ranking: list[tuple[int, int]], counts: list[int], widths: list[int]) -> list[torch.Tensor]:
    """Boolean masks keeping, in each layer, its `counts[layer]` best-ranked units."""
    kept = [torch.zeros(width, dtype=torch.bool) for width in widths]
    remaining = list(counts)
    for layer, index in ranking:
        if remaining[layer]:
            kept[layer][index] = True
            remaining[layer] -= 1
    return kept
