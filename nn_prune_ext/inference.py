"""Run a model as one captured graph, so that a slim model's speedup is not eaten by per-call overhead.

Pruning shrinks the arithmetic, not the number of operators: a slim model runs the same
operators as the dense one, and each call costs a fixed time in Python, module calls and
dispatch. Measured on all-MiniLM-L6-v2 at batch 1, one CPU thread: about 1.6-2.8 ms per forward
(same 821 ATen calls dense and slim), a fifth of the time of the model slimmed to a quarter of
its FLOPs and a twentieth of the dense model's, which is why eager slim models fall short of the
FLOPs limit at small batches. `capture_for_inference` traces the forward into a frozen graph
(TorchScript: `torch.jit.trace`, `freeze`, `optimize_for_inference`) or compiles it
(`torch.compile`), and checks the captured model against the eager one before returning it.

```python
fast = capture_for_inference(slim, batch)       # batch: a tokenizer's output, as the model takes it
logits = fast(**batch).logits
```
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Mapping

import torch
from torch import nn

from .validation import InputError

__all__ = ["CaptureError", "CaptureMismatchError", "CapturedModel", "capture_for_inference"]

METHODS = ("trace", "compile")


class CaptureError(RuntimeError):
    """The model could not be captured: use it eagerly, or try the other method."""


class CaptureMismatchError(CaptureError):
    """The captured model's outputs differ from the eager model's: it is not returned."""


class _PositionalTensors(nn.Module):
    """`model` called with its inputs in a fixed order, returning only tensors: what a trace can record.

    Decoders return a key/value cache object the tracer cannot follow; inference without generation
    needs none, so the cache is switched off where the model has one.
    """

    def __init__(self, model: nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.names = names
        self.extra = {"use_cache": False} if getattr(getattr(model, "config", None), "use_cache", None) is not None else {}

    def forward(self, *tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        output = self.model(**dict(zip(self.names, tensors)), **self.extra)
        return {key: value for key, value in output.items() if isinstance(value, torch.Tensor)}


class CapturedModel(nn.Module):
    """A captured forward behind the model's own interface: keyword inputs in, the model's output class out.

    Args:
        graph: The captured forward: called with the tensors of `names`, in that order; returns a dict of tensors.
        names: The input names, as in the example the graph was captured on.
        output_class: The class of the eager model's output (a `ModelOutput`), rebuilt from the graph's dict.
        method: How it was captured: `"trace"` or `"compile"`.
    """

    def __init__(self, graph: Any, names: tuple[str, ...], output_class: type | None, method: str):
        super().__init__()
        self.__dict__["graph"] = graph  # not a submodule: a frozen graph is not an nn.Module to be moved or copied
        self.names = names
        self.output_class = output_class
        self.method = method
        self.eval()

    def forward(self, **inputs: torch.Tensor) -> Any:
        if set(inputs) != set(self.names):
            raise InputError(f"This model was captured with the inputs {list(self.names)}; got {sorted(inputs)}.")
        output = self.graph(*(inputs[name] for name in self.names))
        if self.output_class is not None and isinstance(output, dict):
            return self.output_class(**output)
        return output


def _first_tensor(output: Any) -> torch.Tensor:
    """The main output: `logits` or `last_hidden_state` of a model output, or the first tensor."""
    if isinstance(output, Mapping):
        for key in ("logits", "last_hidden_state"):
            if isinstance(output.get(key), torch.Tensor):
                return output[key]
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return next(value for value in output if isinstance(value, torch.Tensor))
    return output


def _padded(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """The inputs with the last quarter of the first sequence masked out, to check a path the example may not take."""
    mask = inputs.get("attention_mask")
    if mask is None or mask.dim() != 2 or mask.shape[1] < 4:
        return None
    padded = dict(inputs)
    padded["attention_mask"] = mask.clone()
    padded["attention_mask"][0, -(mask.shape[1] // 4):] = 0
    return padded


@torch.no_grad()
def capture_for_inference(
    model: nn.Module,
    example_inputs: Mapping[str, torch.Tensor],
    *,
    method: str = "trace",
    atol: float = 1e-4,
) -> CapturedModel:
    """Capture `model`'s forward as a graph for inference, checked against the eager model.

    A traced graph records the operators the example took: it is checked on the example and, when
    the inputs have an attention mask, on the same inputs with padding in the first sequence (the
    masked path). Inputs of other batch sizes and lengths run the same graph.

    Args:
        model: Any model called with keyword tensors (dense or slim); it is not modified.
        example_inputs: One batch as the model takes it (e.g. a tokenizer's output), on the model's device.
        method: `"trace"` (TorchScript trace, freeze and `optimize_for_inference`: no compile time) or
            `"compile"` (`torch.compile`: seconds to compile on the first call, then as fast or faster).
        atol: Largest absolute difference allowed between the captured and the eager main output,
            relative to the output's largest magnitude (at least 1).

    Returns:
        A `CapturedModel` that returns the model's output class.

    Raises:
        InputError: For an unknown method, or inputs that are not a mapping of tensors.
        CaptureError: If the tracer cannot trace the model (some transformers releases build attention
            masks with `vmap`, which it cannot follow).
        CaptureMismatchError: If the captured model's outputs differ from the eager model's.
    """
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, got {method!r}.")
    if not isinstance(example_inputs, Mapping) or not all(isinstance(v, torch.Tensor) for v in example_inputs.values()):
        raise InputError("example_inputs must be a mapping of tensors, e.g. a tokenizer's output with return_tensors='pt'.")
    inputs = {key: value for key, value in example_inputs.items() if key != "labels"}
    names = tuple(inputs)
    with warnings.catch_warnings():  # transformers warns of a deprecated property that copying reads
        warnings.simplefilter("ignore", FutureWarning)
        eager = copy.deepcopy(model).eval()
    positional = _PositionalTensors(eager, names).eval()
    reference = eager(**inputs, **positional.extra)
    if method == "trace":
        # The tracer warns at every Python value taken from a tensor; the checks below decide instead.
        with torch.inference_mode(False), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            try:
                traced = torch.jit.trace(positional, tuple(inputs.values()), strict=False, check_trace=False)
                graph = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
            except Exception as error:  # the tracer fails in many ways (vmap masks, unsupported ops, ...)
                raise CaptureError(
                    f"torch.jit.trace cannot trace this {type(model).__name__} ({type(error).__name__}: "
                    f"{str(error).splitlines()[0] if str(error) else ''}); use method=\"compile\" or the eager model."
                ) from error
    else:
        graph = torch.compile(positional)
    captured = CapturedModel(graph, names, type(reference), method)
    instead = "the eager model" + (' or method="compile"' if method == "trace" else "")
    for name, batch in (("example inputs", inputs), ("padded example inputs", _padded(inputs))):
        if batch is None:
            continue
        expected = _first_tensor(eager(**batch, **positional.extra) if batch is not inputs else reference)
        got = _first_tensor(captured(**batch))
        difference = (got.float() - expected.float()).abs().max().item() if got.shape == expected.shape else float("inf")
        tolerance = atol * max(1.0, expected.abs().max().item())
        if not difference <= tolerance:
            raise CaptureMismatchError(
                f"The {method}d model differs from the eager one on the {name} (max abs difference {difference:.3g}, "
                f"allowed {tolerance:.3g}); use {instead}."
            )
    return captured
