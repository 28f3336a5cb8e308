"""The prunable units of post-training pruning: heads (or whole key/value groups) and FFN units.

Under grouped-query attention a query head cannot leave alone for free: its key/value head stays
while any head of its group does. `PruningUnits` says which query heads one attention unit covers:

- `granularity="head"`: every query head is a unit (the only choice without GQA). Under GQA,
  groups may then keep different numbers of heads; `optimize_model` pads or repeats key/value
  heads, and the costs count that exactly (`slim.structure.slim_attention_sizes`).
- `granularity="group"`: a unit is a whole key/value group (its key/value head and all its
  query heads), the structure GQA models can lose without any padding.

The gradient of a unit's mask is the sum of its members' head-mask gradients, because one mask on
the group scales every member head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..flops import LayerShape, layer_shapes
from ..importance import MaskGradients
from ..validation import InputError

__all__ = ["PruningUnits", "UnitGradients", "GRANULARITIES"]

GRANULARITIES = ("head", "group")


@dataclass(frozen=True)
class PruningUnits:
    """Which query heads each attention unit of each layer covers.

    Args:
        shapes: The layers' shapes (`flops.layer_shapes`).
        granularity: `"head"` or `"group"` (see the module docstring).
    """

    shapes: tuple[LayerShape, ...]
    granularity: str = "head"

    def __post_init__(self):
        if self.granularity not in GRANULARITIES:
            raise InputError(
                f"granularity={self.granularity!r} is not one of {', '.join(GRANULARITIES)}: 'head' prunes query "
                "heads one by one, 'group' prunes whole key/value groups (grouped-query attention)."
            )

    @classmethod
    def for_model(cls, model: nn.Module, granularity: str = "head") -> "PruningUnits":
        """The units of `model` (a model of a registered architecture)."""
        return cls(shapes=tuple(layer_shapes(model)), granularity=granularity)

    @property
    def num_layers(self) -> int:
        return len(self.shapes)

    def group_size(self, layer: int) -> int:
        """Query heads per key/value head in `layer`."""
        shape = self.shapes[layer]
        return shape.num_heads // shape.num_kv_heads if shape.num_kv_heads else 1

    def head_units(self, layer: int) -> list[list[int]]:
        """The query heads each attention unit of `layer` covers."""
        heads, size = self.shapes[layer].num_heads, self.group_size(layer)
        if self.granularity == "group":
            return [list(range(start, start + size)) for start in range(0, heads, size)]
        return [[head] for head in range(heads)]

    def unit_group(self, layer: int) -> list[int]:
        """For each attention unit of `layer`, the key/value group it belongs to."""
        size = self.group_size(layer)
        return [members[0] // size for members in self.head_units(layer)]

    def partitions(self, layer: int) -> list[list[int]]:
        """Sets of attention units that rearrangement may swap among without changing the layer's cost.

        With `"head"` units under GQA, moving a kept head to another group could change how much
        padding the slim layer needs, so heads are swapped only within their group; otherwise
        all units of a layer are interchangeable.
        """
        units = self.head_units(layer)
        if self.granularity == "head" and self.group_size(layer) > 1:
            groups: dict[int, list[int]] = {}
            for unit, group in enumerate(self.unit_group(layer)):
                groups.setdefault(group, []).append(unit)
            return list(groups.values())
        return [list(range(len(units)))]

    def kept_per_group(self, layer: int, kept_units: torch.Tensor) -> list[int]:
        """How many query heads each key/value group of `layer` keeps, given kept attention units."""
        counts = [0] * self.shapes[layer].num_kv_heads
        for unit, members in enumerate(self.head_units(layer)):
            if bool(kept_units[unit]):
                for head in members:
                    counts[head // self.group_size(layer)] += 1
        return counts

    def head_mask(self, layer: int, kept_units: torch.Tensor) -> torch.Tensor:
        """The `[num_heads]` 0/1 head mask of `layer` for kept attention units."""
        mask = torch.zeros(self.shapes[layer].num_heads)
        for unit, members in enumerate(self.head_units(layer)):
            if bool(kept_units[unit]):
                mask[members] = 1.0
        return mask

    def kept_units(self, layer: int, head_mask: torch.Tensor) -> torch.Tensor:
        """Which attention units of `layer` a head mask keeps (a unit is kept when any member is).

        Returns:
            A boolean tensor, one entry per attention unit; empty (still boolean) for a layer
            without heads, such as a layer a slim model lost all heads of.
        """
        # dtype given: `torch.tensor([])` is float, and callers invert the result (`~kept`).
        kept = [bool(head_mask[members].any()) for members in self.head_units(layer)]
        return torch.tensor(kept, dtype=torch.bool)


@dataclass(frozen=True)
class UnitGradients:
    """Per-batch mask gradients of every attention unit and FFN unit.

    Args:
        heads: Per layer, `[batches, attention units]`.
        units: Per layer, `[batches, FFN units]`.
    """

    heads: list[torch.Tensor]
    units: list[torch.Tensor]

    @classmethod
    def from_gradients(cls, gradients: MaskGradients, structure: PruningUnits) -> "UnitGradients":
        """Sum head-mask gradients over each unit's member heads; strip the NaN padding."""
        heads, units = [], []
        for layer in range(structure.num_layers):
            head_gradients = gradients.heads[:, layer, : gradients.num_heads[layer]]
            members = structure.head_units(layer)
            heads.append(
                torch.stack([head_gradients[:, unit].sum(dim=1) for unit in members], dim=1)
                if members
                else head_gradients[:, :0]
            )
            units.append(gradients.units[:, layer, : gradients.ffn_widths[layer]])
        return cls(heads=heads, units=units)

    def fisher(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Diagonal empirical Fisher information of every unit: the sum of squared per-batch gradients.

        Summed in float64: a finite float32 gradient above about 1e19 squares to infinity in float32, and
        the search refuses an infinite importance.

        Returns:
            Per layer, the attention units' and the FFN units' Fisher information (float64).
        """
        return (
            [g.double().square().sum(dim=0) for g in self.heads],
            [g.double().square().sum(dim=0) for g in self.units],
        )
