"""Head and FFN-unit masks: the one structured-mask representation every pruning path ends in.

Post-training pruning, importance pruning and explicit masks all produce `StructureMasks`: per
layer, one value per attention (query) head and one per FFN unit. 0 removes the head or unit,
1 keeps it, any other value keeps it scaled (mask tuning fits such scales). `prune_with_masks`
takes them: it folds the values into the weights (the output-projection columns of each head, the
down-projection column of each unit) and cuts what the masks remove, so the result computes exactly
what the masked model computes and saves like any slim checkpoint.

```python
from nn_prune_ext import StructureMasks, prune_with_masks

masks = StructureMasks.from_kept(model, heads=[[0, 1, 5], ...], units=[range(0, 1536, 2), ...])
slim = prune_with_masks(model, masks)
```
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from .arch import get_layout
from .patch import eval_grids, is_patched, require_unpatched
from .scores.masked_linear import MaskedLinear
from .validation import InputError, check_instance, check_model, describe

__all__ = ["StructureMasks", "fold_masks", "masks_from_scores", "require_structure_masks"]


@dataclass
class StructureMasks:
    """One value per attention head and per FFN unit of every layer.

    Layers are those of `ArchitectureLayout.iter_layers`: for an encoder-decoder, the encoder's
    layers and then the decoder's.

    Args:
        heads: Per layer, a float tensor of shape `[num_heads]` (query heads of the self-attention).
        units: Per layer, a float tensor of shape `[ffn_width]`.
        cross_heads: Per layer, the cross-attention heads of an encoder-decoder's decoder layers (an
            empty tensor for layers without cross-attention); `None` keeps every cross-attention head.
    """

    heads: list[torch.Tensor]
    units: list[torch.Tensor]
    cross_heads: list[torch.Tensor] | None = None

    def __post_init__(self):
        for name in ("heads", "units", "cross_heads"):
            value = getattr(self, name)
            if not (value is None and name == "cross_heads") and (
                isinstance(value, (str, bytes, torch.Tensor)) or not isinstance(value, Iterable)
            ):
                raise InputError(
                    f"StructureMasks.{name} must be a list with one mask per layer, got {type(value).__name__}."
                )
            if value is not None:
                setattr(self, name, list(value))
        if len(self.heads) != len(self.units) or self.cross_heads is not None and len(self.cross_heads) != len(self.heads):
            cross = f", {len(self.cross_heads)} cross-attention head masks" if self.cross_heads is not None else ""
            raise InputError(
                f"StructureMasks got {len(self.heads)} head masks and {len(self.units)} FFN-unit masks{cross}: "
                "pass one of each per layer."
            )
        self.heads = [_as_vector(mask, f"head mask of layer {i}") for i, mask in enumerate(self.heads)]
        self.units = [_as_vector(mask, f"FFN-unit mask of layer {i}") for i, mask in enumerate(self.units)]
        if self.cross_heads is not None:
            self.cross_heads = [
                _as_vector(mask, f"cross-attention head mask of layer {i}") for i, mask in enumerate(self.cross_heads)
            ]

    def _map(self, function) -> "StructureMasks":
        """The masks with `function` applied to every tensor."""
        cross = None if self.cross_heads is None else [function(mask) for mask in self.cross_heads]
        return StructureMasks(
            heads=[function(mask) for mask in self.heads], units=[function(mask) for mask in self.units],
            cross_heads=cross,
        )

    # ----- construction ------------------------------------------------------------------
    @classmethod
    def ones(cls, model: nn.Module) -> "StructureMasks":
        """Masks keeping everything in `model` (a model of a registered architecture).

        Raises:
            InputError: If `model` is not a module of a registered architecture.
        """
        check_model(model, "StructureMasks.ones")
        heads, widths = model_sizes(model)
        cross = cross_head_counts(model)
        return cls(
            heads=[torch.ones(h) for h in heads], units=[torch.ones(w) for w in widths],
            cross_heads=None if cross is None else [torch.ones(h) for h in cross],
        )

    @classmethod
    def from_kept(
        cls, model: nn.Module, heads: Sequence[Iterable[int]], units: Sequence[Iterable[int]]
    ) -> "StructureMasks":
        """Binary masks keeping the listed heads and FFN units of each layer.

        Args:
            model: The model the masks are for.
            heads: Per layer, the indices of the query heads to keep.
            units: Per layer, the indices of the FFN units to keep.

        Raises:
            InputError: If `model` is not a module, `heads` or `units` is not one list of indices per layer, or
                an index is not a whole number in range (1.7 would otherwise be truncated to 1 without a word).
        """
        check_model(model, "StructureMasks.from_kept")
        heads, units = _per_layer(heads, "heads"), _per_layer(units, "units")
        num_heads, widths = model_sizes(model)
        if len(heads) != len(num_heads) or len(units) != len(num_heads):
            raise InputError(
                f"from_kept got {len(heads)} head lists and {len(units)} unit lists for a model of "
                f"{len(num_heads)} layers: pass one of each per layer."
            )
        head_masks = [_indicator(size, kept, f"layer {i} head") for i, (size, kept) in enumerate(zip(num_heads, heads))]
        unit_masks = [_indicator(size, kept, f"layer {i} FFN unit") for i, (size, kept) in enumerate(zip(widths, units))]
        return cls(heads=head_masks, units=unit_masks)

    # ----- reading -------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.heads)

    def kept_heads(self) -> list[int]:
        """Heads kept (nonzero) per layer."""
        return [int(mask.count_nonzero()) for mask in self.heads]

    def kept_units(self) -> list[int]:
        """FFN units kept (nonzero) per layer."""
        return [int(mask.count_nonzero()) for mask in self.units]

    def kept_cross_heads(self) -> list[int] | None:
        """Cross-attention heads kept (nonzero) per layer, or `None` when the masks keep them all."""
        return None if self.cross_heads is None else [int(mask.count_nonzero()) for mask in self.cross_heads]

    def binary(self) -> "StructureMasks":
        """The same structure with every kept entry set to 1 (scales dropped)."""
        return self._map(lambda mask: (mask != 0).float())

    def clone(self) -> "StructureMasks":
        return self._map(torch.clone)

    def check(self, model: nn.Module) -> None:
        """Check that the masks fit `model`.

        Raises:
            InputError: If `model` is not a module, or naming the first mask whose shape does not fit it.
        """
        check_model(model, "StructureMasks.check")
        num_heads, widths = model_sizes(model)
        if self.num_layers != len(num_heads):
            raise InputError(
                f"The masks cover {self.num_layers} layers but the model has {len(num_heads)}: "
                "build them for this model (StructureMasks.ones(model) gives the right shapes)."
            )
        checks = [("head", self.heads, num_heads), ("FFN unit", self.units, widths)]
        if self.cross_heads is not None:
            cross = cross_head_counts(model)
            if cross is None:
                raise InputError(
                    "The masks have cross-attention head masks, but the model has no cross-attention: pass "
                    "cross_heads=None."
                )
            checks.append(("cross-attention head", self.cross_heads, cross))
        if any(mask.numel() for mask in self.units) and not any(widths):
            get_layout(model).require_prunable_ffn("These masks")
        for what, masks, sizes in checks:
            for index, (mask, size) in enumerate(zip(masks, sizes)):
                if mask.numel() != size:
                    raise InputError(
                        f"The {what} mask of layer {index} has {mask.numel()} entries, but the layer has {size} "
                        f"{what}s: pass one value per {what}."
                    )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (lists of floats)."""
        data = {"heads": [m.tolist() for m in self.heads], "units": [m.tolist() for m in self.units]}
        if self.cross_heads is not None:
            data["cross_heads"] = [m.tolist() for m in self.cross_heads]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StructureMasks":
        """The inverse of `to_dict`."""
        if not isinstance(data, dict):
            raise InputError(f"Masks are read from a dict with 'heads' and 'units' lists, got {type(data).__name__}.")
        missing = {"heads", "units"} - set(data)
        if missing:
            raise InputError(f"Masks need 'heads' and 'units' lists (one entry per layer); missing {sorted(missing)}.")
        cross = data.get("cross_heads")
        return cls(heads=data["heads"], units=data["units"], cross_heads=cross)  # each mask checked there


def _as_vector(mask: Any, what: str) -> torch.Tensor:
    """`mask` as a 1-d float32 CPU tensor, or a clear error."""
    if isinstance(mask, (str, bytes)):
        raise InputError(f"The {what} is text ({mask!r}): pass numbers, 0 (remove), 1 (keep) or a scale.")
    # torch casts complex to real with only a warning, dropping the imaginary part: refuse it instead.
    dtype = getattr(mask, "dtype", None)
    if getattr(dtype, "is_complex", False) or getattr(dtype, "kind", "") == "c":
        raise InputError(f"The {what} holds complex numbers ({dtype}): pass real values, 0 (remove), 1 (keep) or a scale.")
    try:
        vector = torch.as_tensor(mask, dtype=torch.float32).detach().cpu()
    except (TypeError, ValueError, RuntimeError, OverflowError) as error:  # ragged lists, text, objects
        raise InputError(f"The {what} cannot be read as numbers ({error}): pass one value per structure.") from None
    if vector.dim() != 1:
        raise InputError(f"The {what} has shape {tuple(vector.shape)}: pass a 1-d mask, one value per structure.")
    if not bool(torch.isfinite(vector).all()):
        raise InputError(f"The {what} holds NaN or infinite values: a mask value is 0 (remove), 1 (keep) or a scale.")
    return vector


def model_sizes(model: nn.Module) -> tuple[list[int], list[int]]:
    """Query heads (of the self-attention) and FFN width of every layer of `model`."""
    layers = list(get_layout(model).iter_layers(model))
    return [layer.num_heads for layer in layers], [layer.ffn_width for layer in layers]


def cross_head_counts(model: nn.Module) -> list[int] | None:
    """Cross-attention query heads of every layer (0 where a layer has none), or `None` without cross-attention."""
    layers = list(get_layout(model).iter_layers(model))
    if not any(layer.cross is not None for layer in layers):
        return None
    return [layer.cross.num_heads if layer.cross is not None else 0 for layer in layers]


def _per_layer(values: Any, name: str) -> list[Any]:
    """`values` (one list of indices per layer) as a list, or an `InputError` naming the argument.

    A string or a flat tensor would otherwise be read as one "list" per character or element; a 2-d tensor
    (one row of indices per layer, as `topk(...).indices` gives) is fine.
    """
    flat_tensor = isinstance(values, torch.Tensor) and values.dim() != 2
    if isinstance(values, (str, bytes)) or flat_tensor or not isinstance(values, Iterable):
        raise InputError(
            f"StructureMasks.from_kept: {name} must be a list with one list of indices per layer, e.g. [[0, 2], [1]], "
            f"got {type(values).__name__}."
        )
    return list(values)


def _indicator(size: int, kept: Iterable[int], what: str) -> torch.Tensor:
    if isinstance(kept, (str, bytes)) or (isinstance(kept, torch.Tensor) and kept.dim() != 1) or not isinstance(kept, Iterable):
        raise InputError(f"The kept {what}s must be a list of indices such as [0, 2], got {describe(kept)}.")
    mask = torch.zeros(size)
    for index in kept:
        # int() would truncate 1.7 to 1 (and True to 1) without a word; operator.index takes whole numbers only
        # (and raises TypeError for floats, text and multi-element tensors).
        try:
            if isinstance(index, bool):
                raise TypeError
            index = operator.index(index)
        except TypeError:
            raise InputError(
                f"The kept {what}s hold {describe(index)}: indices are whole numbers 0..{size - 1}."
            ) from None
        if not 0 <= index < size:
            raise InputError(f"{what} index {index} is out of range: the layer has {size} (indices 0..{size - 1}).")
        mask[index] = 1.0
    return mask


@torch.no_grad()
def fold_masks(model: nn.Module, masks: StructureMasks) -> nn.Module:
    """Multiply the masks into the weights of `model`, in place.

    Head `h`'s value scales the output-projection columns of that head, unit `u`'s value the
    down-projection column `u`. This is exactly what `importance.apply_masks` computes with hooks,
    so the model's outputs do not change.

    Args:
        model: An unpatched model of a registered architecture (bake a patched one first).
        masks: Masks of matching shapes.

    Returns:
        `model`.

    Raises:
        InputError: If `model` is not an unpatched module of a registered architecture, or `masks` is not a
            `StructureMasks` that fits it.
    """
    check_model(model, "fold_masks")
    require_structure_masks(masks, "fold_masks: masks")
    require_unpatched(model, "fold_masks (prune_with_masks bakes a patched model itself)")
    masks.check(model)
    cross_masks = masks.cross_heads or [None] * masks.num_layers
    if any(bool((mask == 0).any()) for mask in masks.heads + [m for m in cross_masks if m is not None]):
        get_layout(model).require_removable_heads("These masks")
    layers = get_layout(model).iter_layers(model)
    for layer, head_mask, unit_mask, cross_mask in zip(layers, masks.heads, masks.units, cross_masks):
        for block, mask in ((layer.self_attention, head_mask), (layer.cross, cross_mask)):
            if block is not None and mask is not None and mask.numel():
                weight = block.output.weight
                weight.mul_(mask.to(weight.device, weight.dtype).repeat_interleave(block.head_dim))
        if unit_mask.numel():
            weight = layer.ffn_down.weight
            weight.mul_(unit_mask.to(weight.device, weight.dtype))
    return model


@torch.no_grad()
def masks_from_scores(model: nn.Module) -> StructureMasks:
    """The heads and FFN units a patched model's evaluation-mode masks remove, as `StructureMasks`.

    A head is removed when its mask leaves none of its output-projection columns, an FFN unit when
    its mask leaves nothing of its down-projection column, so `prune_with_masks(model, masks_from_scores(model))`
    computes what the patched model computes. What the masks remove inside kept heads and units
    (blocks, rows, value heads) stays as zeros in the weights when the model is baked; `optimize_model`
    reads those zeros and may remove more (a head whose value rows are all pruned, with its constant
    bias folded into the output bias).

    Args:
        model: A model patched by `patch_model` or `SparseTrainer` (at its current thresholds, which
            are the final ones after training).

    Returns:
        Binary masks (1 kept, 0 removed), one per head and FFN unit of every layer.

    Raises:
        InputError: If `model` is not a module, or not patched.
    """
    check_model(model, "masks_from_scores")
    if not is_patched(model):
        raise InputError(
            "masks_from_scores needs a model patched for movement pruning (patch_model or SparseTrainer); for a "
            "dense or baked model, build the masks with StructureMasks.from_kept or an importance method."
        )
    grids = eval_grids(model)
    masks = StructureMasks.ones(model)
    cross_masks = masks.cross_heads or [None] * masks.num_layers
    layers = get_layout(model).iter_layers(model)
    for layer, head_mask, unit_mask, cross_mask in zip(layers, masks.heads, masks.units, cross_masks):
        for block, mask in ((layer.self_attention, head_mask), (layer.cross, cross_mask)):
            output = block.output.module if block is not None else None
            if isinstance(output, MaskedLinear) and block.num_heads:
                mask.copy_(_kept_columns(grids[output], output.in_features).view(block.num_heads, -1).any(dim=1))
        down = layer.ffn_down.module if layer.ffn_down is not None else None
        if isinstance(down, MaskedLinear) and down.in_features:
            unit_mask.copy_(_kept_columns(grids[down], down.in_features))
    return masks


def _kept_columns(grid: torch.Tensor, in_features: int) -> torch.Tensor:
    """Per input column of a masked linear: does its mask keep any entry of it."""
    kept = (grid != 0).any(dim=0).cpu()
    return kept.repeat_interleave(in_features // kept.numel())


def require_structure_masks(value: Any, name: str, *, optional: bool = False) -> StructureMasks | None:
    """`value` if it is a `StructureMasks` (or None where `optional`), else an `InputError` saying how to build one."""
    return check_instance(
        value, StructureMasks, name, optional=optional,
        hint="build them with StructureMasks(heads=..., units=...), StructureMasks.from_kept(...) or "
        "StructureMasks.from_dict(...)",
    )
