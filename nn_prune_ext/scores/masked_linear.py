"""`MaskedLinear`: an `nn.Linear` whose weight is multiplied by a block mask on the fly.

The mask comes from a `MaskScores` module, possibly shared with other linears (the rows of an
FFN up projection and the matching columns of the down projection share one score vector).
The multiplication runs in a custom autograd function that saves what `nn.Linear` saves (the
input and the parameters themselves) plus the small mask grid, and recomputes the masked
weight in backward: no masked copy of the weight stays alive between forward and backward,
so peak memory matches a plain `Linear`.
"""

from __future__ import annotations

import threading
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .methods import PruningMethod

__all__ = [
    "MaskScores", "MaskedLinear", "masked_linear", "apply_grid_mask", "begin_forward_all", "release_scratch_buffers"
]


# One reusable weight-sized buffer per (dtype, shape, thread) on CPU. The masked weight lives
# only for one matmul, so the layers of a model can take turns with one buffer instead of each
# allocating (and page-faulting in) a fresh one in every forward and backward pass. Accelerators
# have caching allocators that make fresh buffers cheap, and there a kept buffer would only
# add to the memory held between steps.
_SCRATCH: dict[tuple, torch.Tensor] = {}


def _scratch_like(tensor: torch.Tensor) -> torch.Tensor | None:
    """A reusable buffer shaped like `tensor` on CPU; None where a fresh result is better."""
    if tensor.device.type != "cpu" or torch.compiler.is_compiling():
        # A compiled graph fuses the product into its consumer and owns its buffers; the dict
        # lookup below would only break the graph.
        return None
    # Inference-mode tensors cannot be written outside inference mode (and vice versa is
    # allowed but would leak an inference tensor into training): one buffer for each mode.
    key = (threading.get_ident(), torch.is_inference_mode_enabled(), tensor.dtype, tensor.shape)
    buffer = _SCRATCH.get(key)
    if buffer is None:
        buffer = _SCRATCH[key] = torch.empty_like(tensor, memory_format=torch.contiguous_format)
    return buffer


def release_scratch_buffers() -> None:
    """Free the reusable masked-weight buffers (`bake_model` does this)."""
    _SCRATCH.clear()


def _as(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # `.to` is a dispatcher call even when it has nothing to do; this runs many times per step.
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def _blocks(matrix_shape: torch.Size, grid_shape: torch.Size) -> tuple[int, int, int, int]:
    """The 4-d view `(R, block_rows, C, block_cols)` of a matrix split by an `(R, C)` grid."""
    rows, cols = grid_shape
    return rows, matrix_shape[0] // rows, cols, matrix_shape[1] // cols


def apply_grid_mask(tensor: torch.Tensor, grid: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Multiply a `(out, in)` matrix by a `(R, C)` grid mask broadcast over equal blocks.

    Args:
        tensor: The matrix.
        grid: The mask grid; `R` divides `out` and `C` divides `in`.
        out: Optional contiguous buffer of the matrix's shape to write into.

    Returns:
        The masked matrix (`out` when given).
    """
    grid = _as(grid, tensor.dtype)
    if grid.shape[0] in (1, tensor.shape[0]) and grid.shape[1] in (1, tensor.shape[1]):
        # One entry per row, per column or for the whole matrix: the grid broadcasts as it is.
        return tensor * grid if out is None else torch.mul(tensor, grid, out=out)
    shape4d = _blocks(tensor.shape, grid.shape)
    grid4d = grid.view(shape4d[0], 1, shape4d[2], 1)
    if out is None:
        return (tensor.view(shape4d) * grid4d).view(tensor.shape)
    torch.mul(tensor.view(shape4d), grid4d, out=out.view(shape4d))
    return out


def _block_sum(
    tensor: torch.Tensor, grid_shape: torch.Size | tuple[int, int], dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Sum a matrix over the blocks of an `(R, C)` grid, accumulating in `dtype` if given."""
    return tensor.view(_blocks(tensor.shape, grid_shape)).sum(dim=(1, 3), dtype=dtype)


def _row_mask(grid: torch.Tensor, out_features: int) -> torch.Tensor:
    """Expand an `(R, 1)` grid into a per-output-row mask of length `out_features`."""
    rows = grid.reshape(-1)
    return rows if rows.numel() == out_features else rows.repeat_interleave(out_features // rows.numel())


def _mask_bias(bias: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """The bias with the rows of an `(R, 1)` grid multiplied in."""
    return bias * _as(_row_mask(grid, bias.shape[0]), bias.dtype)


class _MaskedLinearFunction(torch.autograd.Function):
    # Kept lean on purpose: its Python overhead, per linear and per step, is most of the cost
    # over nn.Linear for small models.
    @staticmethod
    def forward(ctx, x, weight, bias, grid, mask_bias: bool):
        mask_bias = mask_bias and bias is not None
        masked_bias = _mask_bias(bias, grid) if mask_bias else bias
        output = F.linear(x, apply_grid_mask(weight, grid, out=_scratch_like(weight)), masked_bias)
        ctx.save_for_backward(x, weight, bias, grid)
        ctx.mask_bias = mask_bias
        return output

    @staticmethod
    def backward(ctx, grad_output):
        x, weight, bias, grid = ctx.saved_tensors
        need_x, need_w, need_b, need_grid, _ = ctx.needs_input_grad
        # Under autocast the output (and so its gradient) is in the autocast dtype: compute there.
        dtype = grad_output.dtype
        grad_x = grad_w = grad_b = grad_grid = None
        # One 2-d gradient for both products: a strided gradient (a projection whose output was transposed
        # into heads) is copied once by `reshape`, and both products run as single matrix products.
        grad_2d = grad_output.reshape(-1, weight.shape[0])
        # Weight-sized passes are the other cost: the masked weight and the grid product go
        # through the reusable scratch buffer, and the weight gradient is masked in place.
        if need_x:
            masked_weight = _as(apply_grid_mask(weight, grid, out=_scratch_like(weight)), dtype)
            grad_x = _as((grad_2d @ masked_weight).view(*grad_output.shape[:-1], weight.shape[1]), x.dtype)
        if need_w or need_grid:
            full_grad_w = grad_2d.t() @ _as(x.reshape(-1, weight.shape[1]), dtype)
            if need_grid:
                product = torch.mul(full_grad_w, _as(weight, dtype), out=_scratch_like(full_grad_w))
                # Accumulate half-precision products (autocast) in float32.
                grad_grid = _block_sum(product, grid.shape, torch.float32 if product.element_size() < 4 else None)
            if need_w:
                grad_w = _as(apply_grid_mask(full_grad_w, grid, out=full_grad_w), weight.dtype)
        if need_b or (need_grid and ctx.mask_bias):
            full_grad_b = grad_2d.sum(dim=0)
            if need_b:
                grad_b = _as(_mask_bias(full_grad_b, grid) if ctx.mask_bias else full_grad_b, bias.dtype)
            if need_grid and ctx.mask_bias:
                bias_term = (full_grad_b * _as(bias, dtype)).view(grid.shape[0], -1).sum(dim=1, keepdim=True)
                grad_grid = grad_grid + bias_term
        if grad_grid is not None:
            grad_grid = _as(grad_grid, grid.dtype)
        return grad_x, grad_w, grad_b, grad_grid, None


def masked_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, grid: torch.Tensor, mask_bias: bool = False
) -> torch.Tensor:
    """`F.linear(x, weight * mask, bias * row_mask)` with a memory footprint equal to `F.linear`.

    Args:
        x: Input of shape `(..., in_features)`.
        weight: Weight of shape `(out_features, in_features)`.
        bias: Bias of shape `(out_features,)` or `None`.
        grid: Mask grid of shape `(R, C)` where `R` divides `out_features` and `C` divides
            `in_features`; each entry covers one block of the weight.
        mask_bias: Also mask the bias with the grid's rows; needs a row grid (`C == 1`).

    Returns:
        The output of shape `(..., out_features)`.
    """
    if mask_bias and grid.shape[1] != 1:
        raise ValueError(f"mask_bias needs a row grid of shape (R, 1), got {tuple(grid.shape)}.")
    return _MaskedLinearFunction.apply(x, weight, bias, grid, mask_bias)


class MaskScores(nn.Module):
    """The scores of one group of linears that share a mask, and the mask they produce.

    Args:
        method: The pruning method turning scores into a mask.
        shape: Shape of the score tensor (a grid, or a vector shared in several orientations).
        kind: `"attention"` or `"dense"`; selects the threshold and regularization multiplier.
        threshold: Initial threshold.
    """

    def __init__(self, method: PruningMethod, shape: tuple[int, ...], kind: str, threshold: float):
        super().__init__()
        self.method = method
        self.kind = kind
        # The threshold as a tensor too, for compiled graphs: a Python float read in a compiled
        # forward is a constant the graph is guarded on, so a schedule that moves it every step
        # would recompile every step. Not persistent: the float is what checkpoints record.
        self.register_buffer("threshold_tensor", torch.tensor(float(threshold)), persistent=False)
        self.threshold = float(threshold)
        self.shape = tuple(shape)
        if method.learnable:
            self.scores = nn.Parameter(method.init_scores(self.shape))
        else:
            self.scores = None
        # The linears reading this mask, and their grid shapes. A plain list, so the linears are
        # not registered twice as submodules.
        self.members: list[tuple[MaskedLinear, tuple[int, int]]] = []
        self._cached: torch.Tensor | None = None
        self._cached_key: tuple | None = None

    @property
    def threshold(self) -> float:
        """The current threshold (what it means depends on the method: see `PruningMethod.threshold_help`)."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._threshold = float(value)
        current = self.threshold_tensor
        if current.is_inference() and not torch.is_inference_mode_enabled():
            # Made under `torch.inference_mode()`: such a tensor cannot be written outside it.
            self.threshold_tensor = torch.tensor(self._threshold, dtype=current.dtype, device=current.device)
            return
        with torch.no_grad():
            current.fill_(self._threshold)  # in place: a compiled graph keeps reading the same tensor

    def __getstate__(self) -> dict:
        # The cached mask of the last training forward carries autograd history, which neither
        # deep-copies nor pickles; it is recomputed on the next forward anyway.
        state = self.__dict__.copy()
        state["_cached"] = state["_cached_key"] = None
        return state

    def importance(self) -> torch.Tensor:
        """What the method ranks: the learnt scores, or block-summed weight magnitudes."""
        if self.scores is not None:
            return self.scores
        total = None
        for linear, grid_shape in self.members:
            magnitude = _block_sum(linear.weight.detach().abs().float(), grid_shape).reshape(self.shape)
            total = magnitude if total is None else total + magnitude
        return total

    def compute(self) -> torch.Tensor:
        """Compute a fresh mask from the current scores and threshold."""
        threshold = self.threshold
        if self.method.tensor_threshold and torch.compiler.is_compiling():
            threshold = self.threshold_tensor  # a graph input, not a constant: no recompilation when it moves
        return self.method.mask(self.importance(), threshold, self.training)

    def _cache_key(self) -> tuple:
        # In-place updates (optimizer steps, loading) bump a tensor's version counter; replaced
        # or moved tensors (`.data =`, `assign=True`, `.to(device)`) change storage.
        tensors = [self.scores] if self.scores is not None else [linear.weight for linear, _ in self.members]
        # Inference tensors (made under `torch.inference_mode`) have no version counter: their storage
        # stands for them. Every model forward recomputes the masks anyway (`begin_forward_all`).
        return (self.threshold, self.training,
                tuple((-1 if t.is_inference() else t._version, t.data_ptr(), t.device) for t in tensors))

    def begin_forward(self, mask: torch.Tensor | None = None) -> None:
        """Compute the mask once for a whole model forward pass, shared by all members.

        Sharing one tensor keeps the members consistent (one hard-concrete sample for the up
        rows and down columns of an FFN), computes each mask once instead of per member, and
        lets gradient checkpointing recompute a layer with the very mask of its forward pass.

        Args:
            mask: The mask, computed already from the current scores and threshold
                (`begin_forward_all` computes those of many groups at once); by default computed here.
        """
        self._cached = self.compute() if mask is None else mask
        # Under torch.compile the key cannot be traced (and `current` does not read it there); a cached
        # mask without a key is recomputed on its next eager use.
        self._cached_key = None if torch.compiler.is_compiling() else self._cache_key()

    def current(self) -> torch.Tensor:
        """The mask of the last model forward pass, or a fresh one if scores or threshold changed since.

        Grad mode is deliberately not part of the cache key: a reentrant checkpointed layer runs
        its forward under `no_grad` and must still see the sample of its model forward. Only a
        mask cached without a graph is refreshed when gradients are wanted.
        """
        cached = self._cached
        if torch.compiler.is_compiling():
            # Version counters and data pointers cannot be traced; a compiled model runs the
            # `begin_forward` hook in its own graph, so the cached mask is that of this forward.
            return self.compute() if cached is None else cached
        if cached is None or self._cached_key != self._cache_key():
            return self.compute()
        if cached.grad_fn is None and torch.is_grad_enabled() and self.scores is not None and self.scores.requires_grad:
            return self.compute()
        return cached

    def extra_repr(self) -> str:
        return f"method={self.method.name}, shape={self.shape}, kind={self.kind}, threshold={self.threshold:.4g}"


def begin_forward_all(groups: Sequence[MaskScores]) -> None:
    """`begin_forward` of every group, with one mask computation per method and threshold where it can.

    The learnt scores of a method with `PruningMethod.batched_masks` that share a threshold,
    a mode, a device and a dtype get their masks from one computation over their concatenation: a
    few operations per model forward instead of a few per score group.
    """
    if torch.compiler.is_compiling():
        # A compiled graph fuses the per-group masks anyway; grouping by threshold value would guard the
        # graph on those values.
        for group in groups:
            group.begin_forward()
        return
    batches: dict[tuple, list[MaskScores]] = {}
    for group in groups:
        if group.scores is None or not group.method.batched_masks:
            group.begin_forward()
        else:
            key = (group.method, group.threshold, group.training, group.scores.device, group.scores.dtype)
            batches.setdefault(key, []).append(group)
    for (method, threshold, training, _, _), members in batches.items():
        for group, mask in zip(members, method.masks([group.scores for group in members], threshold, training)):
            group.begin_forward(mask)


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is masked by a (possibly shared) `MaskScores`.

    It keeps the `weight` and `bias` parameters of the linear it replaces (same objects, same
    state-dict names); the owner of a score group also registers it as `mask_scores`.
    """

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, source: MaskScores, grid_shape: tuple[int, int], owner: bool, mask_bias: bool
    ) -> "MaskedLinear":
        """Wrap `linear` without copying its parameters.

        Args:
            linear: The linear to replace.
            source: The score group producing this linear's mask.
            grid_shape: `(R, C)` such that the weight splits into `R x C` equal blocks.
            owner: Register `source` as a submodule of this linear (exactly one member does).
            mask_bias: Mask the bias with the rows of the grid (only for row grids).
        """
        module = cls.__new__(cls)
        nn.Module.__init__(module)
        module.in_features = linear.in_features
        module.out_features = linear.out_features
        module.weight = linear.weight
        module.bias = linear.bias
        module.grid_shape = tuple(grid_shape)
        module.mask_bias = bool(mask_bias and grid_shape[1] == 1 and linear.bias is not None)
        module._source = [source]
        if owner:
            module.mask_scores = source
        source.members.append((module, module.grid_shape))
        return module

    @property
    def source(self) -> MaskScores:
        return self._source[0]

    def grid(self) -> torch.Tensor:
        """This linear's mask grid of shape `grid_shape`, for the current forward pass."""
        return self.source.current().reshape(self.grid_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return masked_linear(x, self.weight, self.bias, self.grid(), self.mask_bias)

    @torch.no_grad()
    def masked_parameters(self, grid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The weight and bias with `grid` (by default the current mask) multiplied in."""
        grid = self.grid().detach() if grid is None else grid
        weight = apply_grid_mask(self.weight, grid)
        bias = _mask_bias(self.bias, grid) if self.mask_bias else self.bias
        return weight, bias

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, grid={self.grid_shape}, mask_bias={self.mask_bias}"
