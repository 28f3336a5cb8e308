"""Mask tuning by least squares (Kwon et al. 2022, "mask tuning").

Pruning heads and FFN units shifts every later layer's input. Mask tuning keeps the binary
structure of a mask but fits one real scale per kept head and per kept FFN unit, layer by layer,
so that each pruned sublayer reproduces what the dense model computes there. For each sublayer
(attention, then FFN, of every layer in order) it minimises, over all real tokens of the
calibration batches, the squared distance between the student's and the dense teacher's
pre-normalisation sums:

    student: x_s + m (sum_j s_j O_j + b)        teacher: x_d + m (O_d + b)

`O_j` is the contribution of kept head (unit) `j` to the output (down) projection, `x_s` / `x_d`
the residual input of the sublayer and `m` the factor some families scale sublayer outputs by
(Granite's residual multiplier; 1 elsewhere). Where the sublayer's output is normalised before it
joins the residual stream ("sandwich" norms: Gemma 2, OLMo 2), the fit matches that output itself,
`sum_j s_j O_j + b` against `O_d + b`. This is linear least squares in the scales `s`: the normal
equations are accumulated batch by batch without ever forming the `tokens x hidden` by `k`
design matrix, and solved with `scipy.sparse.linalg.lsmr`. A solve that is not finite, does not
converge, needs a scale beyond `max_scale` or does not lower the error is rejected, and that
sublayer keeps its previous scales.

```python
from nn_prune_ext.posttrain.tune import tune_masks
from nn_prune_ext import prune_with_masks

result = tune_masks(model, masks, calibration_batches)   # model: the dense fine-tuned model
print(result)                                           # error before / after per sublayer
slim = prune_with_masks(model, result.masks)            # scales folded into the weights
```
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, lsmr
from torch import nn

from ..importance import apply_masks, to_device
from ..arch import ArchitectureLayout, LayerModules, check_batch, get_layout
from ..masks import StructureMasks, require_structure_masks
from ..patch import require_unpatched
from .batches import check_batch_shapes, read_batches
from .layer_runner import LayerRunner, StopForward
from ..validation import InputError, NonFiniteError, check_real, check_whole

__all__ = ["SublayerTuning", "TuningResult", "LayerTaps", "tune_masks"]

# Targets are dropped from the batches: tuning only needs the hidden states, never a loss.
_TARGET_KEYS = ("labels", "label", "label_ids", "start_positions", "end_positions")
# lsmr's stopping codes that mean "converged" (0: the zero vector already solves it).
_CONVERGED = (0, 1, 2, 4, 5)


@dataclass(frozen=True)
class SublayerTuning:
    """What tuning did to one sublayer.

    Args:
        layer: Index of the layer.
        sublayer: `"attention"` (head scales) or `"ffn"` (FFN-unit scales).
        num_scales: Kept heads or FFN units, i.e. scales fitted.
        error_before: Squared error between the student's and the teacher's pre-normalisation sums,
            summed over the calibration tokens, with the scales the sublayer had before.
        error_after: The same with the scales it has now (equal to `error_before` when not tuned).
        tuned: Whether the fitted scales were accepted.
        reason: Why they were not (`None` when tuned).
    """

    layer: int
    sublayer: str
    num_scales: int
    error_before: float
    error_after: float
    tuned: bool
    reason: str | None = None


@dataclass
class TuningResult:
    """The tuned masks and a record per sublayer.

    Args:
        masks: The input masks with the fitted scales in place of the kept entries (removed heads
            and units stay exactly 0).
        layers: One record per layer and sublayer, in order (attention before FFN).
    """

    masks: StructureMasks
    layers: list[SublayerTuning]

    def __str__(self) -> str:
        rows = [f"{'layer':>5}  {'sublayer':<9}  {'scales':>6}  {'error before':>12}  {'error after':>12}  result"]
        for record in self.layers:
            change = (
                f"{record.error_after / record.error_before - 1:+.1%}" if record.error_before > 0 else "n/a"
            )
            status = f"tuned ({change})" if record.tuned else f"kept: {record.reason}"
            rows.append(
                f"{record.layer:>5}  {record.sublayer:<9}  {record.num_scales:>6}  "
                f"{record.error_before:>12.4g}  {record.error_after:>12.4g}  {status}"
            )
        return "\n".join(rows)


class LayerTaps:
    """Hooks recording, during one call of a layer, what the scale fits need.

    Records the input and output of the attention output projection and of the FFN down
    projection, and the FFN input. Input hooks run before any masking hook (`apply_masks`), so the
    inputs are the raw, unscaled head outputs and unit activations; the outputs are those of the
    masked layer. The sums the fits match follow from the norm placement (`m`: the residual scale):

    - attention: layer input + m x output-projection output (post- and pre-norm alike);
    - FFN: residual + m x down-projection output, the residual being the FFN input for post-norm
      layers (BERT: the attention block's LayerNorm output) and the attention sum for pre-norm
      layers (Llama), so that the FFN sum of a pre-norm layer is its output;
    - sandwich norms: the projection outputs themselves (they are normalised before the residual sum).

    Sums are returned as `[tokens, hidden]` (batch and sequence flattened), whatever shape each
    term had: some layers (OPT) flatten the FFN's input themselves.

    Args:
        modules: The layer's projections (from the layout's `iter_layers`).
        norm_placement: `"post"`, `"pre"` or `"sandwich"` (`ArchitectureLayout.norm_placement_for`).
        residual_scale: The factor sublayer outputs join the residual stream with
            (`ArchitectureLayout.residual_scale`).
        stop_before_ffn: End the forward when the FFN starts, with `StopForward` (the attention
            fit needs nothing after it, and skipping the FFN saves most of the compute).
    """

    def __init__(
        self, modules: LayerModules, norm_placement: str, residual_scale: float = 1.0, stop_before_ffn: bool = False
    ):
        self.modules = modules
        self.norm_placement = norm_placement
        self.residual_scale = residual_scale
        self.stop_before_ffn = stop_before_ffn
        self.values: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> "LayerTaps":
        modules = self.modules
        self._handles = [
            modules.output.register_forward_pre_hook(self._record_input("attention_input"), prepend=True),
            modules.output.register_forward_hook(self._record_output("attention_output")),
            modules.ffn_up.register_forward_pre_hook(self._record_input("ffn_up_input", ffn_start=True), prepend=True),
            modules.ffn_down.register_forward_pre_hook(self._record_input("ffn_input"), prepend=True),
            modules.ffn_down.register_forward_hook(self._record_output("ffn_output")),
        ]
        if modules.ffn_gate is not None:  # gated FFNs may call the gate before the up projection
            self._handles.append(modules.ffn_gate.register_forward_pre_hook(self._stop_hook(), prepend=True))
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def clear(self) -> None:
        """Forget what the last layer call recorded."""
        self.values = {}

    def _store(self, name: str, value: torch.Tensor) -> None:
        if name in self.values:
            raise RuntimeError(
                f"{name} was recorded twice in one call of layer {self.modules.index}: the layer runs a projection "
                "more than once per call (feed-forward chunking?). Set config.chunk_size_feed_forward = 0."
            )
        self.values[name] = value

    def _stop_hook(self):
        def hook(module: nn.Module, args: tuple) -> None:
            if self.stop_before_ffn:
                raise StopForward

        return hook

    def _record_input(self, name: str, ffn_start: bool = False):
        def hook(module: nn.Module, args: tuple) -> None:
            if ffn_start and self.stop_before_ffn:
                raise StopForward
            self._store(name, args[0])

        return hook

    def _record_output(self, name: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            # A copy: the layer may add to the returned tensor in place (Falcon: mlp_output += attention_output).
            self._store(name, output.detach().clone())

        return hook

    @property
    def output_scale(self) -> float:
        """What the fits multiply a projection output by: the residual scale, or 1 where the output is matched itself."""
        return 1.0 if self.norm_placement == "sandwich" else self.residual_scale

    def attention_sum(self, layer_input: torch.Tensor) -> torch.Tensor:
        """What the attention fit matches (the pre-normalisation sum), `[tokens, hidden]`."""
        output = _token_rows(self.values["attention_output"])
        if self.norm_placement == "sandwich":
            return output
        return _token_rows(layer_input) + self.residual_scale * output

    def ffn_sum(self, layer_input: torch.Tensor) -> torch.Tensor:
        """What the FFN fit matches (for pre-norm layers, the layer output itself), `[tokens, hidden]`."""
        output = _token_rows(self.values["ffn_output"])
        if self.norm_placement == "sandwich":
            return output
        if self.norm_placement == "post":
            residual = _token_rows(self.values["ffn_up_input"])
        else:
            residual = self.attention_sum(layer_input)
        return residual + self.residual_scale * output


def _token_rows(tensor: torch.Tensor) -> torch.Tensor:
    """`[..., features]` -> `[tokens, features]`."""
    return tensor.reshape(-1, tensor.shape[-1])


class _NormalEquations:
    """`A^T A` and `A^T e` of one sublayer's fit, accumulated batch by batch without forming `A`.

    Column `j` of `A` holds kept group `j`'s contribution to the projection output at every token
    (its `group_size` input features times the matching weight columns); `e` is the current
    error, student sum minus teacher sum. With `Z` the kept input features and `W` the matching
    weight columns, `(A^T A)[i, j]` sums the entries of block `(i, j)` of `(W^T W) * (Z^T Z)`, so
    only the small `Z^T Z` is accumulated.

    Args:
        weight: The projection weight, `[hidden, in_features]`.
        kept: Indices of the kept groups.
        group_size: Input features per group (the head size for heads, 1 for FFN units).
    """

    def __init__(self, weight: torch.Tensor, kept: torch.Tensor, group_size: int):
        self.num_groups, self.group_size = kept.numel(), group_size
        offsets = torch.arange(group_size, device=weight.device)
        columns = (kept.to(weight.device)[:, None] * group_size + offsets).flatten()
        # Nothing to gather when every group is kept (the all-ones masks of a first tuning pass).
        self.columns = None if columns.numel() == weight.shape[1] else columns
        self.weight = weight if self.columns is None else weight.index_select(1, columns)
        width = columns.numel()
        self.cross = torch.zeros(width, width, dtype=torch.float64, device=weight.device)
        self.gradient = torch.zeros(self.num_groups, dtype=torch.float64, device=weight.device)

    def add(self, inputs: torch.Tensor, error: torch.Tensor) -> None:
        """Add one batch.

        Args:
            inputs: `[tokens, in_features]` raw (unscaled) projection inputs.
            error: `[tokens, hidden]` student minus teacher pre-normalisation sum.
        """
        kept = inputs if self.columns is None else inputs.index_select(1, self.columns)
        # Products in float32 at least: bf16 / fp16 sums over thousands of tokens lose the digits the solve needs.
        kept, error = kept.float(), error.float()
        self.cross += (kept.T @ kept).double()
        # (A^T e)_j = sum over tokens and features of (e W_j) * z_j, reordered so that the one large
        # product is a [hidden, tokens] x [tokens, k*d] matrix product.
        products = ((error.T @ kept) * self.weight.float()).sum(dim=0)
        self.gradient += products.double().view(self.num_groups, self.group_size).sum(dim=1)

    def gram(self) -> torch.Tensor:
        """`A^T A`, `[groups, groups]` in float64."""
        weight = self.weight.double()
        blocks = (weight.T @ weight) * self.cross
        size = (self.num_groups, self.group_size)
        return blocks.view(*size, *size).sum(dim=(1, 3))


def _solve(
    equations: _NormalEquations,
    current: torch.Tensor,
    error: float,
    *,
    max_scale: float,
    tol: float,
    max_iterations: int | None,
) -> tuple[torch.Tensor | None, float, str | None]:
    """Fit the kept scales; `(new scales or None, error after, reason for rejecting)`.

    The step `d` away from the current scales `s0` is solved for (`A^T A d = -A^T e`) rather than
    the scales themselves: lsmr's minimum-norm answer then leaves directions the data does not
    determine at their current value instead of pulling them to 0, and the fitted error
    `|e + A d|^2 = error + 2 d^T A^T e + d^T A^T A d` needs no difference of large numbers.
    """
    gram = equations.gram().cpu()
    gradient = equations.gradient.cpu()
    # Jacobi preconditioning: FFN units' activations differ in scale by orders of magnitude, which
    # makes A^T A so ill-conditioned that lsmr stalls; unit-diagonal scaling fixes most of it.
    diagonal = gram.diagonal().clone()
    diagonal[diagonal <= 0] = 1.0
    scaling = diagonal.rsqrt()
    system = gram * scaling[:, None] * scaling[None, :]
    step, istop = lsmr(_operator(system), (-gradient * scaling).numpy(), atol=tol, btol=tol, maxiter=max_iterations)[:2]
    step = torch.from_numpy(step) * scaling
    if not bool(step.isfinite().all()):
        return None, error, "the solution is not finite"
    if istop not in _CONVERGED:
        return None, error, f"lsmr did not converge (istop={istop})"
    scales = current.double() + step
    largest = float(scales.abs().max())
    if largest > max_scale:
        return None, error, f"a scale of magnitude {largest:.3g} exceeds max_scale={max_scale:g}"
    fitted = error + 2.0 * float(step @ gradient) + float(step @ gram @ step)
    if not fitted < error:
        return None, error, "the fit does not lower the error"
    return scales.float(), max(fitted, 0.0), None


def _operator(matrix: torch.Tensor) -> LinearOperator:
    """A symmetric float64 matrix as a scipy operator whose products run in torch.

    numpy's BLAS threads and torch's OpenMP threads fight over the cores when used in turn; keeping
    lsmr's many small products in torch avoids slowing each one down by an order of magnitude.
    """

    def product(vector: np.ndarray) -> np.ndarray:
        return (matrix @ torch.from_numpy(np.ascontiguousarray(vector, dtype=np.float64))).numpy()

    return LinearOperator(tuple(matrix.shape), matvec=product, rmatvec=product, dtype=np.float64)


def _model_inputs(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return to_device({key: value for key, value in batch.items() if key not in _TARGET_KEYS}, device)


def _real_tokens(inputs: Mapping[str, Any], hidden: torch.Tensor) -> torch.Tensor | None:
    mask = inputs.get("attention_mask")
    if mask is None:
        return None
    if tuple(mask.shape) != tuple(hidden.shape[:2]):
        raise InputError(
            f"The batch's attention_mask has shape {tuple(mask.shape)} but the layers see hidden states of shape "
            f"{tuple(hidden.shape)}: pass a 2-d [batch, sequence] attention_mask with 1 for real tokens."
        )
    tokens = mask.reshape(-1).bool()
    return None if bool(tokens.all()) else tokens


class _Tuner:
    """Propagates the teacher's and the student's hidden states layer by layer and fits the scales.

    Every layer call goes through the model's own forward (`LayerRunner`), so each call gets the
    attention mask, position embeddings and attention type the model builds for that layer, and
    no state (a key/value cache) is carried from one call to the next.
    """

    def __init__(
        self,
        model: nn.Module,
        layout: ArchitectureLayout,
        masks: StructureMasks,
        runner: LayerRunner,
        solve_options: dict[str, Any],
    ):
        self.model, self.layout, self.masks, self.runner = model, layout, masks, runner
        self.norm_placement = layout.norm_placement_for(model.config)
        self.residual_scale = layout.residual_scale(model.config)
        hidden = [runner.first_input(batch) for batch in range(len(runner.inputs))]
        self.tokens = [_real_tokens(inputs, states) for inputs, states in zip(runner.inputs, hidden)]
        self.teacher_hidden, self.student_hidden = hidden, list(hidden)
        self.solve_options = solve_options
        self.device = hidden[0].device
        self.records: list[SublayerTuning] = []

    def _select(self, batch: int, rows: torch.Tensor) -> torch.Tensor:
        """`[..., features]` -> `[real tokens, features]` of batch `batch`."""
        rows = _token_rows(rows)
        tokens = self.tokens[batch]
        return rows if tokens is None else rows[tokens]

    def _masked(self, index: int):
        """`apply_masks` with the current masks of layer `index` only (the only layer that runs)."""
        head_masks: list[torch.Tensor | None] = [None] * self.masks.num_layers
        unit_masks: list[torch.Tensor | None] = [None] * self.masks.num_layers
        head_masks[index] = self.masks.heads[index].to(self.device)
        unit_masks[index] = self.masks.units[index].to(self.device)
        return apply_masks(self.model, head_masks, unit_masks)

    def _taps(self, modules: LayerModules, stop_before_ffn: bool = False) -> LayerTaps:
        return LayerTaps(modules, self.norm_placement, self.residual_scale, stop_before_ffn=stop_before_ffn)

    def _teacher(self, modules: LayerModules) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Run the dense layer on the teacher's hidden states; its sums per batch, as real tokens."""
        attention_sums, ffn_sums = [], []
        with self._taps(modules) as taps:
            for batch, hidden in enumerate(self.teacher_hidden):
                taps.clear()
                self.teacher_hidden[batch] = self.runner.run(modules.index, batch, hidden)
                attention_sums.append(self._select(batch, taps.attention_sum(hidden)))
                ffn_sums.append(self._select(batch, taps.ffn_sum(hidden)))
        return attention_sums, ffn_sums

    def _student(
        self, modules: LayerModules, targets: list[torch.Tensor], sublayer: str, equations: _NormalEquations | None
    ) -> tuple[float, list[torch.Tensor] | None]:
        """Run the masked layer on the student's hidden states.

        Returns:
            The squared error of `sublayer` and, unless only the attention ran, the next layer's inputs.
        """
        stop = sublayer == "attention"
        error = 0.0
        outputs: list[torch.Tensor] = []
        with self._masked(modules.index), self._taps(modules, stop_before_ffn=stop) as taps:
            for batch, (hidden, target) in enumerate(zip(self.student_hidden, targets)):
                taps.clear()
                output = self.runner.run(modules.index, batch, hidden, allow_stop=stop)
                if stop:
                    difference = self._select(batch, taps.attention_sum(hidden)) - target
                    inputs = taps.values["attention_input"]
                else:
                    difference = self._select(batch, taps.ffn_sum(hidden)) - target
                    inputs = taps.values["ffn_input"]
                    outputs.append(output)
                error += float(difference.square().sum(dtype=torch.float64))
                if not math.isfinite(error):
                    # Every fit against a NaN error is rejected ("does not lower the error"), layer after
                    # layer, and the result would look like a tuning that merely did not help.
                    raise NonFiniteError(
                        f"Mask tuning: the {sublayer} of layer {modules.index} computes NaN or infinite values on "
                        f"batch {batch} (the dense model, or the masked one with the scales fitted so far): run the "
                        "model in float32, check that batch's inputs, or pass tune=False."
                    )
                if equations is not None:
                    equations.add(self._select(batch, inputs), difference)
        return error, None if stop else outputs

    def _fit(
        self, modules: LayerModules, targets: list[torch.Tensor], sublayer: str
    ) -> tuple[bool, list[torch.Tensor] | None]:
        """Fit `sublayer`'s scales of one layer and record the outcome.

        Returns:
            Whether the scales changed, and the next layer's inputs the fitting run produced
            (computed with the scales from before the fit; `None` for the attention run, which
            stops early).
        """
        index = modules.index
        values = (self.masks.heads if sublayer == "attention" else self.masks.units)[index]
        kept = values.nonzero().flatten()
        weight = (modules.output if sublayer == "attention" else modules.ffn_down).weight.detach()
        scale = self._taps(modules).output_scale
        if scale != 1.0:  # a residual scale multiplies every contribution
            weight = weight * scale
        group_size = modules.head_dim if sublayer == "attention" else 1
        equations = _NormalEquations(weight, kept, group_size) if kept.numel() else None
        error, outputs = self._student(modules, targets, sublayer, equations)
        scales, after, reason = None, error, None
        if equations is None:
            reason = f"no {'heads' if sublayer == 'attention' else 'FFN units'} kept"
        elif error == 0.0:
            reason = "the sublayer already matches the dense model"
        else:
            scales, after, reason = _solve(equations, values[kept], error, **self.solve_options)
        if scales is not None:
            values[kept] = scales
        self.records.append(SublayerTuning(index, sublayer, kept.numel(), error, after, scales is not None, reason))
        return scales is not None, outputs

    def tune_layer(self, modules: LayerModules) -> None:
        """Tune one layer's attention, then its FFN, and move both hidden states past it."""
        attention_targets, ffn_targets = self._teacher(modules)
        self._fit(modules, attention_targets, "attention")
        changed, outputs = self._fit(modules, ffn_targets, "ffn")
        if changed:  # the FFN run's outputs predate its new scales
            with self._masked(modules.index):
                outputs = [
                    self.runner.run(modules.index, batch, hidden) for batch, hidden in enumerate(self.student_hidden)
                ]
        self.student_hidden = outputs


def tune_masks(
    model: nn.Module,
    masks: StructureMasks,
    batches: Iterable[Mapping[str, Any]],
    *,
    max_batches: int | None = None,
    max_scale: float = 10.0,
    tol: float = 1e-8,
    max_iterations: int | None = None,
) -> TuningResult:
    """Fit one scale per kept head and FFN unit so that the pruned model matches the dense one, layer by layer.

    `model` is both the teacher (run without masks) and the student (run with `masks` and the
    scales fitted so far, through `importance.apply_masks`); its weights are not changed. Layers
    are tuned in order, each one's attention sublayer before its FFN, each fit on the student's
    own inputs, so later layers correct what earlier ones could not. The hidden states are
    propagated one layer at a time; each layer call goes through the model's own forward, which
    builds the layer's arguments (attention mask, position embeddings, attention type) afresh and
    skips the earlier layers (`LayerRunner`). The whole tuning costs about four dense forward
    passes over the batches, plus the embeddings once per layer call, and keeps two copies of the
    batches' hidden states (teacher and student) in memory.

    Args:
        model: An unpatched model of a registered architecture, usually the dense fine-tuned model.
        masks: The heads and FFN units to keep (0 = removed); kept entries are the starting scales.
        batches: Dicts of model inputs, e.g. a `DataLoader`; targets such as `labels` are ignored.
            Only real tokens count: padding (0 in `attention_mask`) is left out of every fit.
        max_batches: Use at most this many batches.
        max_scale: Reject a sublayer's fit when any scale exceeds this magnitude.
        tol: lsmr's `atol` and `btol`.
        max_iterations: lsmr's `maxiter` (its default, the number of scales, when `None`).

    Returns:
        A `TuningResult`: the tuned masks (a new object; `masks` is left as it was) and, per
        sublayer, the error before and after and whether the fit was accepted.

    Raises:
        InputError: Before any forward pass, if the model is patched or chunks its FFN, the masks are
            not `StructureMasks` or do not fit the model, a setting is out of range, there are no
            batches, or a batch lacks the model's input or its `attention_mask` does not match it.
        NonFiniteError: Naming the layer, sublayer and batch, if hidden states turn NaN or infinite.
    """
    layout = get_layout(model)
    layout.require_single_stack("tune_masks", "slim with the masks as they are")
    require_unpatched(model, "tune_masks")
    require_structure_masks(masks, "tune_masks: masks")
    masks.check(model)
    # A NaN max_scale would accept every scale (`largest > nan` is false); a NaN tol stops lsmr at once.
    check_real(max_scale, "tune_masks(max_scale=...)", minimum=0, above_minimum=True)
    check_real(tol, "tune_masks(tol=...)", minimum=0)
    check_whole(max_iterations, "tune_masks(max_iterations=...)", minimum=1, optional=True)
    if getattr(model.config, "chunk_size_feed_forward", 0):
        # The FFN would run once per chunk, and the fits need its input and output whole; found up front,
        # not as a RuntimeError after the first layer's teacher pass.
        raise InputError(
            f"tune_masks needs the FFN to run once per layer call, but config.chunk_size_feed_forward="
            f"{model.config.chunk_size_feed_forward}: set model.config.chunk_size_feed_forward = 0 (same outputs)."
        )
    batches = read_batches(batches, "tune_masks", max_batches)
    for index, batch in enumerate(batches):
        # Targets are ignored here, so a label the model's loss would refuse must not stop the tuning.
        if isinstance(batch, Mapping):
            batch = {key: value for key, value in batch.items() if key not in _TARGET_KEYS}
        check_batch(model, batch, index)
        check_batch_shapes(model, batch, index)
    tuned = masks.clone()
    device = next(model.parameters()).device
    inputs = [_model_inputs(batch, device) for batch in batches]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            runner = LayerRunner(model, layout.layer_list(model), inputs)
            tuner = _Tuner(
                model, layout, tuned, runner, dict(max_scale=max_scale, tol=tol, max_iterations=max_iterations)
            )
            for modules in layout.iter_layers(model):
                tuner.tune_layer(modules)
    finally:
        model.train(was_training)
    return TuningResult(masks=tuned, layers=tuner.records)
