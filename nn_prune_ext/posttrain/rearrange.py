"""Mask rearrangement (Kwon et al. 2022, section 4.3): better choices of which heads and units to keep.

The search ranks heads and FFN units by the diagonal of the Fisher information, as if removing two
of them cost the sum of removing each. Inside one layer they interact. With the per-batch mask
gradients `g_i` (one vector over batches per head or unit), the empirical Fisher of a layer is
`G G^T`, and removing a set `P` raises the loss by about `1/2 ||sum_{i in P} g_i||^2`.

Rearrangement keeps each layer's number of kept heads and units (so the budget still holds) and
changes which ones: starting from the search's choice, each kept candidate (least important
first) joins the removed set and the member whose removal leaves the smallest `||sum g||^2` leaves
it again. That member may be the candidate itself, so the estimate never gets worse.
"""

from __future__ import annotations

import torch

from ..masks import StructureMasks
from .units import PruningUnits, UnitGradients
from ..validation import InputError, NonFiniteError, check_instance, first_non_finite

__all__ = ["rearrange_masks", "removal_loss", "rearrange_layer"]


def removal_loss(removed: torch.Tensor, gradients: torch.Tensor) -> float:
    """Estimated loss increase of removing the entries `removed` of one layer: `1/2 ||sum g_i||^2`.

    Args:
        removed: Boolean, one entry per head (unit) of the layer.
        gradients: `[batches, entries]` per-batch mask gradients.
    """
    total = gradients[:, removed].double().sum(dim=1)
    return 0.5 * float(total.square().sum())


def rearrange_layer(
    removed: torch.Tensor, gradients: torch.Tensor, partitions: list[list[int]] | None = None
) -> torch.Tensor:
    """Greedily improve which entries of one layer are removed, keeping how many (per partition).

    Args:
        removed: Boolean, one entry per head (unit): the search's choice.
        gradients: `[batches, entries]` per-batch mask gradients.
        partitions: Sets of entries that may be swapped among themselves (the count removed from
            each set stays); one set of all entries by default.

    Returns:
        The new boolean `removed`, with `removal_loss` no higher than before.
    """
    entries = removed.numel()
    partitions = partitions if partitions is not None else [list(range(entries))]
    removed = removed.clone().bool()
    vectors = gradients.double().t().contiguous()  # [entries, batches]
    diagonal = vectors.square().sum(dim=1)
    total = vectors[removed].sum(dim=0)
    for members in partitions:
        members_t = torch.tensor(members, dtype=torch.long)
        kept = [m for m in members if not removed[m]]
        if not kept or len(kept) == len(members):
            continue  # nothing removed (or nothing kept) here: no swap possible
        kept.sort(key=lambda m: (float(diagonal[m]), m))
        for candidate in kept:
            removed[candidate] = True
            total = total + vectors[candidate]
            pool = members_t[removed[members_t]]
            # ||total - g_j||^2 for every j that could leave the removed set again.
            losses = (total.unsqueeze(0) - vectors[pool]).square().sum(dim=1)
            # Prefer the candidate itself on ties, so an exact tie changes nothing.
            losses[pool == candidate] -= 1e-12 * max(1.0, float(losses.abs().max()))
            leaving = int(pool[int(losses.argmin())])
            removed[leaving] = False
            total = total - vectors[leaving]
    return removed


def rearrange_masks(masks: StructureMasks, gradients: UnitGradients, structure: PruningUnits) -> StructureMasks:
    """Rearrange the heads (attention units) and FFN units of every layer.

    Args:
        masks: Binary masks from the search.
        gradients: Per-batch unit gradients (`UnitGradients.from_gradients`).
        structure: The attention units; under GQA with `"head"` units, heads move only within
            their key/value group so that the slim layer's cost does not change.

    Returns:
        New binary masks with the same number of kept heads and FFN units in every layer (and in
        every key/value group for GQA head units).

    Raises:
        InputError: If the arguments are not of these types, or their layers or sizes disagree (an
            IndexError deep inside otherwise).
        NonFiniteError: If a gradient is NaN or infinite (the greedy swaps would compare NaN losses,
            and return masks that look rearranged and are arbitrary).
    """
    _check_arguments(masks, gradients, structure)
    heads, units = [], []
    for layer in range(structure.num_layers):
        kept = structure.kept_units(layer, masks.heads[layer])
        removed = rearrange_layer(~kept, gradients.heads[layer], structure.partitions(layer))
        heads.append(structure.head_mask(layer, ~removed))
        unit_removed = rearrange_layer(masks.units[layer] == 0, gradients.units[layer])
        units.append((~unit_removed).float())
    return StructureMasks(heads=heads, units=units)


def _check_arguments(masks: StructureMasks, gradients: UnitGradients, structure: PruningUnits) -> None:
    """Refuse arguments of the wrong type, layer count or width, and non-finite gradients, naming the layer."""
    for name, value, kind in (
        ("masks", masks, StructureMasks), ("gradients", gradients, UnitGradients), ("structure", structure, PruningUnits)
    ):
        check_instance(value, kind, f"rearrange_masks: {name}")
    layers = structure.num_layers
    if not masks.num_layers == len(gradients.heads) == len(gradients.units) == layers:
        raise InputError(
            f"rearrange_masks: the model has {layers} layers, the masks {masks.num_layers} and the gradients "
            f"{len(gradients.heads)}: compute all three for the same model."
        )
    for layer in range(layers):
        attention_units = len(structure.head_units(layer))
        if masks.heads[layer].numel() != structure.shapes[layer].num_heads or gradients.heads[layer].shape[-1] != attention_units:
            raise InputError(
                f"rearrange_masks: layer {layer} has {structure.shapes[layer].num_heads} heads in "
                f"{attention_units} attention units, but {masks.heads[layer].numel()} head masks and gradients for "
                f"{gradients.heads[layer].shape[-1]} units."
            )
        if gradients.units[layer].shape[-1] != masks.units[layer].numel():
            raise InputError(
                f"rearrange_masks: layer {layer} has {masks.units[layer].numel()} FFN-unit masks but gradients for "
                f"{gradients.units[layer].shape[-1]}."
            )
    bad = first_non_finite(
        [(f"layer {layer}'s attention-unit", values) for layer, values in enumerate(gradients.heads)]
        + [(f"layer {layer}'s FFN-unit", values) for layer, values in enumerate(gradients.units)]
    )
    if bad is not None:
        raise NonFiniteError(
            f"rearrange_masks: {bad} gradients hold NaN or infinite values: recompute them from a finite loss "
            "(collect_mask_gradients names the batch that is not)."
        )
