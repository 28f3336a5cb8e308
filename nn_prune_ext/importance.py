"""Importance of attention heads and FFN units from the gradients of masks on them.

transformers v5 models take no `head_mask` argument (one passed is silently ignored), so the
masks are applied with forward pre-hooks instead, found through the architecture layout:

- a head mask of shape `[num_heads]` multiplies the input of the attention output projection,
  head by head (that input is the concatenation of the heads' outputs);
- an FFN-unit mask of shape `[ffn_width]` multiplies the input of the FFN down projection.

With all-ones masks the model computes exactly what it computes without them, and the gradient
of its loss with respect to a mask entry is the first-order effect of removing that head or unit.
`collect_mask_gradients` records those gradients batch by batch; `taylor_importance` (Michel et
al. 2019, TextPruner) and `fisher_importance` (Kwon et al. 2022) reduce them to one score each.

```python
from nn_prune_ext.importance import collect_mask_gradients, taylor_importance

gradients = collect_mask_gradients(model, dataloader, max_batches=8)  # batches carry "labels"
importance = taylor_importance(gradients)
importance.heads   # [layers, max heads], NaN where a (slim) layer has fewer heads
```
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

from .arch import LayerModules, check_batch, get_layout
from .validation import InputError, NonFiniteError, check_model, check_whole, first_non_finite

if TYPE_CHECKING:
    from .masks import StructureMasks

__all__ = [
    "MaskGradients",
    "MaskImportance",
    "apply_masks",
    "collect_mask_gradients",
    "taylor_importance",
    "fisher_importance",
    "magnitude_importance",
]


@dataclass(frozen=True)
class MaskGradients:
    """Per-batch gradients of the loss with respect to all-ones head and FFN-unit masks.

    Layers of a slim model have different sizes: each tensor is padded to the largest layer with
    NaN, so that a position without a head or unit can never be mistaken for an unimportant one.

    Args:
        heads: `[batches, layers, max(num_heads)]` head-mask gradients.
        units: `[batches, layers, max(ffn_widths)]` FFN-unit-mask gradients.
        num_heads: Query heads of each layer.
        ffn_widths: FFN units of each layer.
    """

    heads: torch.Tensor
    units: torch.Tensor
    num_heads: tuple[int, ...]
    ffn_widths: tuple[int, ...]

    @property
    def num_batches(self) -> int:
        return self.heads.shape[0]


@dataclass(frozen=True)
class MaskImportance:
    """One importance score per head and per FFN unit (higher: more important).

    Args:
        heads: `[layers, max(num_heads)]`, NaN beyond a layer's head count.
        units: `[layers, max(ffn_widths)]`, NaN beyond a layer's FFN width.
        num_heads: Query heads of each layer.
        ffn_widths: FFN units of each layer.
    """

    heads: torch.Tensor
    units: torch.Tensor
    num_heads: tuple[int, ...]
    ffn_widths: tuple[int, ...]

    def layer_heads(self, index: int) -> torch.Tensor:
        """The scores of layer `index`'s heads, without padding."""
        return self.heads[index, : self.num_heads[index]]

    def layer_units(self, index: int) -> torch.Tensor:
        """The scores of layer `index`'s FFN units, without padding."""
        return self.units[index, : self.ffn_widths[index]]


def _check_masks(masks: Sequence[torch.Tensor | None] | None, sizes: list[int], what: str) -> list[torch.Tensor | None]:
    """`masks` as a list of one mask (or None) per layer, or an `InputError` naming the layer at fault."""
    if masks is None:
        return [None] * len(sizes)
    if isinstance(masks, (str, bytes)) or not isinstance(masks, Iterable):
        raise InputError(f"The {what} masks must be a list with one tensor (or None) per layer, got {type(masks).__name__}.")
    masks = list(masks)
    if len(masks) != len(sizes):
        raise InputError(
            f"Got {len(masks)} {what} masks for a model of {len(sizes)} layers; pass one per layer (None to skip)."
        )
    for index, (mask, size) in enumerate(zip(masks, sizes)):
        if mask is None:
            continue
        if not isinstance(mask, torch.Tensor) or mask.is_complex():
            kind = f"a {mask.dtype} tensor" if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise InputError(
                f"The {what} mask of layer {index} is {kind}: pass a real tensor of shape ({size},) (1 keeps, 0 "
                "removes), e.g. torch.tensor([...]), or None to leave the layer alone."
            )
        if tuple(mask.shape) != (size,):
            raise InputError(
                f"The {what} mask of layer {index} has shape {tuple(mask.shape)}, but the layer has {size} {what}s: "
                f"pass a 1-d mask of shape ({size},)."
            )
    # A NaN mask value makes every output of the model NaN; the hooks would apply it without a word. One
    # device synchronisation for all layers: post-training tuning enters apply_masks for every layer it tunes.
    bad = first_non_finite(enumerate(masks))
    if bad is not None:
        raise InputError(
            f"The {what} mask of layer {bad} holds NaN or infinite values: a mask value is 0 (remove), 1 (keep) or "
            "a finite scale."
        )
    return masks


def _scaling_hook(mask: torch.Tensor, repeats: int):
    """A forward pre-hook multiplying the last dimension of a linear's input by `mask`, each entry `repeats` times."""

    def hook(module: nn.Module, args: tuple) -> tuple:
        if not args:
            raise RuntimeError(
                f"{type(module).__name__} was called without a positional input, so its mask cannot be applied."
            )
        scale = mask.to(device=args[0].device, dtype=args[0].dtype)
        if repeats > 1:
            scale = scale.repeat_interleave(repeats)
        return (args[0] * scale, *args[1:])

    return hook


@contextlib.contextmanager
def apply_masks(
    model: nn.Module,
    head_masks: Sequence[torch.Tensor | None] | None = None,
    unit_masks: Sequence[torch.Tensor | None] | None = None,
) -> Iterator[None]:
    """Multiply every layer's attention heads and FFN units by masks while the context is open.

    A head mask scales the input of the attention output projection head by head, an FFN-unit
    mask the input of the FFN down projection, so a 0 removes the head or unit exactly as zeroing
    its output-projection (down-projection) columns would. Masks stay in the autograd graph: their
    gradients are the mask gradients. The hooks are removed on exit, also after an error.

    Args:
        model: A model of a registered architecture (dense, patched or slim).
        head_masks: One mask of shape `[num_heads]` per layer, or `None` to leave a layer's heads alone.
        unit_masks: One mask of shape `[ffn_width]` per layer, or `None`.

    Raises:
        InputError: If `model` is not a module, the number of masks, a mask's type or shape does not match the
            model's layers, or a mask holds NaN or infinite values.
    """
    check_model(model, "apply_masks")
    layers = list(get_layout(model).iter_layers(model))
    head_masks = _check_masks(head_masks, [layer.num_heads for layer in layers], "head")
    unit_masks = _check_masks(unit_masks, [layer.ffn_width for layer in layers], "FFN unit")
    handles = []
    try:
        for layer, head_mask, unit_mask in zip(layers, head_masks, unit_masks):
            # Empty layers of a slim model get no hook: there is nothing to scale.
            if head_mask is not None and head_mask.numel():
                handles.append(layer.output.register_forward_pre_hook(_scaling_hook(head_mask, layer.head_dim)))
            if unit_mask is not None and unit_mask.numel():
                handles.append(layer.ffn_down.register_forward_pre_hook(_scaling_hook(unit_mask, 1)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """`batch` with its tensors on `device` (other values as they are)."""
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


def _padded(rows: list[list[torch.Tensor]], sizes: list[int]) -> torch.Tensor:
    """Stack per-batch, per-layer vectors into `[batches, layers, max(sizes)]`, padding with NaN."""
    result = torch.full((len(rows), len(sizes), max(sizes, default=0)), float("nan"))
    for batch, vectors in enumerate(rows):
        for layer, vector in enumerate(vectors):
            result[batch, layer, : sizes[layer]] = vector
    return result


def _loss(outputs: Any) -> torch.Tensor:
    loss = outputs.get("loss") if isinstance(outputs, Mapping) else getattr(outputs, "loss", None)
    if loss is None:
        raise InputError(
            "The model returned no loss: every batch must carry the targets the model computes its own loss "
            "from (`labels` for sequence classification and causal language modelling)."
        )
    return loss


def collect_mask_gradients(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    max_batches: int | None = None,
    masks: "StructureMasks | None" = None,
) -> MaskGradients:
    """Run batches forward and backward through head and FFN-unit masks and record their gradients.

    The model runs in eval mode (no dropout: the gradients are those of the model as it predicts)
    and is put back in its previous mode afterwards. Only the masks' gradients are computed: the
    `.grad` of the model's parameters are left as they were.

    Args:
        model: A model of a registered architecture (dense, patched or slim) that returns a loss.
        batches: Dicts of model inputs including the targets (`labels`), e.g. a `DataLoader`.
            Each batch's gradient is that of the model's loss on it (usually the mean over its
            examples); pass batches of one example for per-example gradients.
        max_batches: Stop after this many batches.
        masks: The mask values to differentiate at (`StructureMasks`); all ones by default. Pruning
            in rounds passes the masks of the rounds so far, so that importance is measured on the
            model as already pruned (a removed head still gets a gradient: the effect of restoring it).

    Returns:
        The per-batch gradients (on CPU, float32).

    Raises:
        InputError: If `model` is not a module, `batches` is a single batch or not iterable, `max_batches` is
            not a whole number >= 1, `masks` is not `StructureMasks` that fit the model, there are no batches,
            or the model returns no loss.
        NonFiniteError: Naming the batch whose loss or mask gradients are NaN or infinite.
    """
    check_model(model, "collect_mask_gradients")
    check_whole(max_batches, "collect_mask_gradients(max_batches=...)", 1, optional=True)
    if isinstance(batches, (str, bytes, Mapping)) or not isinstance(batches, Iterable):
        # A single dict would be iterated over its keys ("Batch 0 is a str").
        raise InputError(
            f"collect_mask_gradients: batches must be an iterable of batches (dicts of input tensors with labels, "
            f"e.g. a list or a DataLoader), got {type(batches).__name__}. A single batch goes in a list: [batch]."
        )
    from .masks import require_structure_masks  # here: masks imports patch, which is not needed to import this module

    require_structure_masks(masks, "collect_mask_gradients: masks", optional=True)
    layers: list[LayerModules] = list(get_layout(model).iter_layers(model))
    head_sizes = [layer.num_heads for layer in layers]
    unit_sizes = [layer.ffn_width for layer in layers]
    device = next(model.parameters()).device
    if masks is None:
        head_values = [torch.ones(size) for size in head_sizes]
        unit_values = [torch.ones(size) for size in unit_sizes]
    else:
        masks.check(model)
        head_values, unit_values = masks.heads, masks.units
    head_masks = [value.to(device).clone().requires_grad_(True) for value in head_values]
    unit_masks = [value.to(device).clone().requires_grad_(True) for value in unit_values]
    head_rows, unit_rows = [], []
    was_training = model.training
    # Parameters need no gradient here; autograd then keeps fewer activations and skips weight-gradient work.
    frozen = [parameter for parameter in model.parameters() if parameter.requires_grad]
    model.eval()
    try:
        for parameter in frozen:
            parameter.requires_grad_(False)
        with torch.enable_grad(), apply_masks(model, head_masks, unit_masks):
            for index, batch in enumerate(itertools.islice(batches, max_batches)):
                check_batch(model, batch, index)
                loss = _loss(model(**to_device(batch, device)))
                if not bool(torch.isfinite(loss.detach()).all()):
                    raise NonFiniteError(
                        f"The model's loss on batch {index} is {loss.detach().float().mean().item()}: every importance "
                        "measured from it would be NaN. Check the model's weights and that batch's inputs and labels."
                    )
                # autograd.grad, not backward(): nothing accumulates into the parameters' .grad.
                gradients = torch.autograd.grad(
                    loss, head_masks + unit_masks, allow_unused=True, materialize_grads=True
                )
                gradients = [gradient.detach().float().cpu() for gradient in gradients]
                if first_non_finite(enumerate(gradients)) is not None:
                    raise NonFiniteError(
                        f"The head or FFN-unit mask gradients of batch {index} are not finite (the loss is): the "
                        "model overflows in its backward pass. Run it in float32, or check its weights."
                    )
                head_rows.append(gradients[: len(layers)])
                unit_rows.append(gradients[len(layers) :])
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)
        model.train(was_training)
    if not head_rows:
        raise InputError("collect_mask_gradients got no batches: pass at least one batch of inputs with labels.")
    return MaskGradients(
        heads=_padded(head_rows, head_sizes),
        units=_padded(unit_rows, unit_sizes),
        num_heads=tuple(head_sizes),
        ffn_widths=tuple(unit_sizes),
    )


def taylor_importance(gradients: MaskGradients) -> MaskImportance:
    """First-order Taylor importance: the summed magnitude of the per-batch mask gradients.

    Removing a head changes the loss by about `-gradient`; its magnitude, summed over batches,
    is the head-importance score of Michel et al. (2019) as their code and TextPruner compute it.

    Args:
        gradients: From `collect_mask_gradients`.

    Returns:
        `sum over batches of |gradient|` per head and unit.
    """
    return MaskImportance(
        heads=gradients.heads.abs().sum(dim=0),
        units=gradients.units.abs().sum(dim=0),
        num_heads=gradients.num_heads,
        ffn_widths=gradients.ffn_widths,
    )


def fisher_importance(gradients: MaskGradients) -> MaskImportance:
    """Diagonal empirical Fisher information of the masks: the sum of squared per-batch gradients.

    Kwon et al. (2022) rank heads and FFN units by it in post-training pruning (with per-example
    gradients: batches of one example).

    Args:
        gradients: From `collect_mask_gradients`.

    Returns:
        `sum over batches of gradient ** 2` per head and unit.
    """
    return MaskImportance(
        heads=gradients.heads.square().sum(dim=0),
        units=gradients.units.square().sum(dim=0),
        num_heads=gradients.num_heads,
        ffn_widths=gradients.ffn_widths,
    )


@torch.no_grad()
def magnitude_importance(model: nn.Module) -> MaskImportance:
    """Weight-magnitude importance, the data-free baseline: the squared norm of each structure's weights.

    A head scores the squared norm of its query rows and output-projection columns plus its
    share of its key/value head's rows (split evenly among the query heads of its group); an FFN
    unit scores its up (and gate) row and its down-projection column.

    Args:
        model: A dense or slim, unpatched model of a registered architecture.

    Returns:
        The importance per head and per FFN unit, NaN-padded like the gradient-based ones.

    Raises:
        InputError: If `model` is not a module.
    """
    check_model(model, "magnitude_importance")
    head_rows, unit_rows = [], []
    layers = list(get_layout(model).iter_layers(model))
    for layer in layers:
        d, heads = layer.head_dim, layer.num_heads
        if heads:
            square = lambda linear: linear.weight.float().square().view(-1, d, linear.in_features).sum(dim=(1, 2))  # noqa: E731
            per_head = square(layer.query) + layer.output.weight.float().square().view(-1, heads, d).sum(dim=(0, 2))
            shared = (square(layer.key) + square(layer.value)) / (heads // layer.num_kv_heads)
            per_head = per_head + shared.repeat_interleave(heads // layer.num_kv_heads)
        else:
            per_head = torch.zeros(0)
        per_unit = torch.zeros(0)
        if layer.ffn_down is not None:
            per_unit = layer.ffn_up.weight.float().square().sum(dim=1) + layer.ffn_down.weight.float().square().sum(dim=0)
            if layer.ffn_gate is not None:
                per_unit = per_unit + layer.ffn_gate.weight.float().square().sum(dim=1)
        head_rows.append(per_head.cpu())
        unit_rows.append(per_unit.cpu())
    head_sizes = [layer.num_heads for layer in layers]
    unit_sizes = [layer.ffn_width for layer in layers]
    return MaskImportance(
        heads=_padded([head_rows], head_sizes)[0],
        units=_padded([unit_rows], unit_sizes)[0],
        num_heads=tuple(head_sizes),
        ffn_widths=tuple(unit_sizes),
    )
