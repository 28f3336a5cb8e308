"""Check a slim model against the model it was cut from on a made-up input, and name where they part.

`optimize_model` records what the masked (baked) model computes on a small probe input before it
slims, and compares the slim model with that record afterwards. A layout that misses state which
must follow the kept heads (a norm over all heads, a position bias shared by the layers) would give
a model that runs but computes something else; the check turns that into an error naming the first
layer and tensor that differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..arch import get_layout, probe_inputs
from .layers import kept_layer_indices
from ..validation import NonFiniteError

__all__ = ["SlimMismatchError", "ProbeFailure", "ProbeRecord", "record_probe", "reference_probe", "check_against"]

# Max difference, relative to the reference's magnitude (at least 1), that still counts as equal.
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-8}
HALF_TOLERANCE = 3e-2  # bfloat16 / float16 round at 1e-2..1e-3


class SlimMismatchError(ValueError):
    """The slim model does not compute what the masked model computes."""


class ProbeFailure(RuntimeError):
    """A model failed on the probe input.

    Args:
        layer: The dense index of the layer it failed in, or `None` outside the layers.
        error: The error the forward pass raised.
        after: Outside the layers, the dense index of the last layer that had finished (`None` before
            the first): the failure is in what follows it (a final norm, the model's head).
        layer_names: `dense layer index -> name` of the model that failed (`ProbeRecord.layer_names`).
    """

    def __init__(
        self, layer: int | None, error: Exception, after: int | None = None, layer_names: dict[int, str] | None = None
    ):
        super().__init__(f"{type(error).__name__}: {error}")
        self.layer, self.error, self.after = layer, error, after
        self.layer_names = dict(layer_names or {})

    def where(self, layer_names: dict[int, str] | None = None) -> str:
        """Where the model failed: `"in layer 3"`, `"after layer 5, outside the layers"` or `"before the first layer"`.

        Args:
            layer_names: The names to use instead of the failed model's own (those of the model a
                slim model was cut from); `"layer {index}"` for an index without one.

        Returns:
            The place, to follow "fails on a probe input".
        """
        names = self.layer_names if layer_names is None else layer_names
        name = lambda index: names.get(index, f"layer {index}")  # noqa: E731
        if self.layer is not None:
            return f"in {name(self.layer)}"
        if self.after is not None:
            return f"after {name(self.after)}, outside the layers"
        return "before the first layer"


HINT = (
    "The layout registered for model_type {model_type!r} misses something that must follow the kept heads or "
    "units (a norm over all heads, a position bias shared by the layers, an attribute holding a head count). Fix "
    "the layout (nn_prune_ext.register_layout(..., overwrite=True)), or prune FFN units only and keep every head, "
    "and report the model type."
)


@dataclass
class ProbeRecord:
    """What a model computed on the probe input.

    Args:
        inputs: The probe input.
        output: The model's first output (logits, or the last hidden state).
        tensors: `(dense layer index, what) -> tensor` for every layer: `"attention"` (the output
            projection's output), `"cross"` (the cross-attention's, in an encoder-decoder's decoder),
            `"ffn"` (the down projection's output) and `"layer"` (its output).
        names: `what -> description` naming the module each tensor comes from.
        layer_names: `dense layer index -> name` (`"layer 3"`, `"decoder layer 1"`).
    """

    inputs: dict[str, torch.Tensor]
    output: torch.Tensor
    tensors: dict[tuple[int, str], torch.Tensor]
    names: dict[str, str]
    layer_names: dict[int, str] = field(default_factory=dict)


@torch.no_grad()
def record_probe(model: nn.Module, inputs: dict[str, torch.Tensor] | None = None) -> ProbeRecord:
    """Run `model` (in eval mode) on the probe input and record its output and every layer's tensors.

    Args:
        model: A model of a registered family (baked or slim, not patched).
        inputs: The probe input; by default `probe_inputs(model)`.

    Raises:
        ProbeFailure: If the forward pass fails, with the layer it failed in.
    """
    layout = get_layout(model)
    inputs = probe_inputs(model) if inputs is None else inputs
    tensors: dict[tuple[int, str], torch.Tensor] = {}
    handles = []

    def keep(key):
        def hook(module, args, output):
            tensors[key] = (output[0] if isinstance(output, tuple) else output).detach().float().clone()

        return hook

    # The layer running now (`None` between layers) and the last one that finished: an error outside
    # the layers is placed after the last layer that ran, not in it.
    running: list[int | None] = [None]
    finished: list[int | None] = [None]
    layer_names: dict[int, str] = {}

    def enter(index):
        return lambda module, args: running.__setitem__(0, index)

    def leave(index):
        def hook(module, args, output):
            running[0], finished[0] = None, index

        return hook

    try:
        for index, modules in zip(kept_layer_indices(model.config), layout.iter_layers(model)):
            layer = modules.module
            layer_names[index] = modules.name if modules.stack else f"layer {index}"
            handles.append(layer.register_forward_pre_hook(enter(index)))
            handles.append(modules.output.module.register_forward_hook(keep((index, "attention"))))
            if modules.cross is not None:
                handles.append(modules.cross.output.module.register_forward_hook(keep((index, "cross"))))
            ffn = modules.ffn_down.module if modules.ffn_down is not None else modules.fixed_ffn_module()
            handles.append(ffn.register_forward_hook(keep((index, "ffn"))))
            handles.append(layer.register_forward_hook(keep((index, "layer"))))
            handles.append(layer.register_forward_hook(leave(index)))
        was_training = model.training
        model.eval()
        try:
            outputs = model(**inputs)
        except Exception as error:
            after = None if running[0] is not None else finished[0]
            raise ProbeFailure(running[0], error, after, layer_names) from error
        finally:
            model.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
    first = outputs.to_tuple()[0] if hasattr(outputs, "to_tuple") else outputs[0]
    names = {
        "attention": f"the attention output (output of {layout.output})",
        "cross": f"the cross-attention output (output of {layout.decoder.cross_output})" if layout.decoder else "",
        "ffn": f"the FFN output (output of {layout.ffn_down or layout.ffn})",
        "layer": "the layer's output",
    }
    return ProbeRecord(inputs, first.detach().float().clone(), tensors, names, layer_names)


def reference_probe(model: nn.Module) -> ProbeRecord:
    """`record_probe` of the model about to be slimmed, with clear errors where it cannot serve as the reference.

    Raises:
        ValueError: If the model fails on the probe input.
        NonFiniteError: If it computes NaN or infinite values there (an `InputError`).
    """
    try:
        reference = record_probe(model)
    except ProbeFailure as failure:
        raise ValueError(
            f"optimize_model checks its result on a made-up input, but the model fails on it {failure.where()} "
            f"({failure}). Pass verify=False to slim without the check."
        ) from failure.error
    if not torch.isfinite(reference.output).all():
        raise NonFiniteError(
            "The model computes NaN or infinite values on a made-up input before slimming: its weights are broken "
            "(a diverged training run?). Slim a model that computes finite outputs."
        )
    return reference


def check_against(reference: ProbeRecord, slim: nn.Module) -> None:
    """Raise `SlimMismatchError` unless `slim` computes what `reference` recorded, naming the first difference.

    Args:
        reference: The record of the model before slimming (`record_probe`).
        slim: The slim model.
    """
    model_type = getattr(slim.config, "model_type", None)
    try:
        record = record_probe(slim, reference.inputs)
    except ProbeFailure as failure:
        # Named as in the model it was cut from: a slim stack's own names count only the kept layers.
        where = failure.where(reference.layer_names)
        raise SlimMismatchError(
            f"optimize_model refused its result: the slim model fails on a probe input {where} ({failure}), where "
            "the masked model it was cut from runs. " + HINT.format(model_type=model_type)
        ) from failure.error
    dtype = next(slim.parameters()).dtype
    tolerance = TOLERANCE.get(dtype, HALF_TOLERANCE)

    def difference(expected: torch.Tensor, actual: torch.Tensor) -> tuple[float, float]:
        if expected.shape != actual.shape:
            return float("inf"), 0.0
        limit = tolerance * max(1.0, float(expected.abs().max()) if expected.numel() else 1.0)
        return float((expected - actual).abs().max()) if expected.numel() else 0.0, limit

    # Every layer's tensors, not only the output: a difference a norm cancels on this input need not
    # cancel on another.
    where = None
    order = ("attention", "cross", "ffn", "layer")
    for key in sorted(record.tensors, key=lambda key: (key[0], order.index(key[1]))):
        if key not in reference.tensors:
            continue
        layer_gap, layer_limit = difference(reference.tensors[key], record.tensors[key])
        if layer_gap > layer_limit or not torch.isfinite(record.tensors[key]).all():
            layer_name = reference.layer_names.get(key[0], f"layer {key[0]}")
            where = f"in {layer_name}, {reference.names[key[1]]} differs by {layer_gap:.3g}"
            limit = layer_limit
            break
    if where is None:
        gap, limit = difference(reference.output, record.output)
        if gap <= limit and torch.isfinite(record.output).all():
            return
        where = (
            f"the model's output differs by {gap:.3g} while every layer agrees (so the difference arises after the "
            "last layer: a final norm or the model's head)"
        )
    raise SlimMismatchError(
        f"optimize_model refused its result: on a probe input, {where} (tolerance {limit:.2g}) from the "
        "masked model it was cut from. " + HINT.format(model_type=model_type)
    )
