"""Run one transformer layer on hidden states of one's choosing, through the model's own forward.

Layer-by-layer methods (mask tuning) propagate their own hidden states from layer to layer. Calling
a layer directly would mean capturing the arguments the model passes it (attention masks, rotary
embeddings, caches, per-layer attention types) and replaying them, and each transformers release
may add or rename one: 5.24 renamed the cache keyword, and a replayed cache kept growing. Here the
model's own forward calls every layer with arguments it builds afresh for each call:

- the layers before the target are skipped: each returns its input, in the form of its real output;
- a forward pre-hook swaps the target layer's hidden states for the given ones;
- the forward stops where the next layer starts, and that layer's input is returned (for the last
  layer: the target's output).

The model runs without a key/value cache, so nothing is carried from one call to the next.

What a layer's call and output look like is asked of `nn_prune_ext.transformers_internals`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from .. import transformers_internals as internals
from ..validation import InputError

__all__ = ["StopForward", "LayerRunner"]


class StopForward(Exception):
    """Raised by a hook to end a forward pass as soon as what it needs is recorded."""


class LayerRunner:
    """Calls layer `index` of `model` on given hidden states, for each of a fixed list of batches.

    A run of layer `index` requires that every earlier layer ran (for real) on the same batch
    before: a skipped layer returns its input in the form of its first real output on that batch
    (a tensor for most layers; some return a tuple whose other entries later layers read, such as
    a shared position bias, and those entries are kept from that first call).

    Args:
        model: The model, in the mode it should run in.
        layers: Its list of transformer layers (the layout's `layer_list`).
        inputs: One dict of model inputs per batch, on the model's device.

    Raises:
        ValueError: If one module appears twice in `layers` (layers shared across depths, as in
            ALBERT): such a model cannot run one depth at a time.
    """

    def __init__(self, model: nn.Module, layers: Sequence[nn.Module], inputs: Sequence[Mapping[str, Any]]):
        self.model, self.layers, self.inputs = model, list(layers), list(inputs)
        if len({id(layer) for layer in self.layers}) < len(self.layers):
            raise InputError(
                f"{type(model).__name__} uses one layer module at several depths (shared layers): layer-by-layer "
                "methods need a module per layer."
            )
        self._no_cache = internals.no_cache(model)
        # (layer, batch) -> what the layer's first real output there held besides its hidden states.
        self._forms: dict[tuple[int, int], Any] = {}

    def first_input(self, batch: int) -> torch.Tensor:
        """The hidden states the model gives its first layer on `batch`."""
        seen: dict[str, torch.Tensor] = {}

        def record(module: nn.Module, args: tuple, kwargs: dict) -> None:
            seen["input"] = internals.layer_input(args, kwargs)
            raise StopForward

        self._forward(batch, {self.layers[0]: record})
        if "input" not in seen:
            raise RuntimeError(f"{type(self.model).__name__} returned without calling its first transformer layer.")
        return seen["input"]

    def run(self, index: int, batch: int, hidden: torch.Tensor, *, allow_stop: bool = False) -> torch.Tensor | None:
        """Run layer `index` on `hidden` within the model's forward on `batch`.

        Args:
            index: The layer.
            batch: The batch.
            hidden: The hidden states to give the layer.
            allow_stop: Whether a hook of the caller's may end the forward inside the layer with
                `StopForward` (e.g. once the attention has run).

        Returns:
            The next layer's input (the last layer's output), or `None` when a hook inside the
            layer ended the forward with `StopForward` and `allow_stop` is True.

        Raises:
            RuntimeError: If the model did not call the layer, called it twice, or the forward
                stopped inside the layer without `allow_stop`.
        """
        layer, calls = self.layers[index], []
        result: dict[str, torch.Tensor] = {}

        def swap_input(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            calls.append(index)
            if len(calls) > 1:
                raise RuntimeError(
                    f"{type(self.model).__name__} called its layer {index} twice in one forward; layer-by-layer "
                    "methods need each layer called once."
                )
            return internals.with_layer_input(args, kwargs, hidden)

        def keep_output(module: nn.Module, args: tuple, output: Any) -> None:
            self._forms.setdefault((index, batch), internals.output_form(output))
            if index + 1 == len(self.layers):
                result["next"] = internals.layer_output(output)
                raise StopForward

        def next_input(module: nn.Module, args: tuple, kwargs: dict) -> None:
            result["next"] = internals.layer_input(args, kwargs)
            raise StopForward

        pre_hooks = {layer: swap_input}
        if index + 1 < len(self.layers):
            pre_hooks[self.layers[index + 1]] = next_input
        with self._skipping(batch, self.layers[:index]):
            stopped_inside = self._forward(batch, pre_hooks, {layer: keep_output})
        if not calls:
            raise RuntimeError(f"{type(self.model).__name__} returned without calling its layer {index}.")
        if "next" in result:
            return result["next"]
        if stopped_inside and allow_stop:
            return None
        if stopped_inside:
            raise RuntimeError(f"A hook ended the forward inside layer {index} of {type(self.model).__name__} unasked.")
        raise RuntimeError(f"{type(self.model).__name__} returned without calling its layer {index + 1} after layer {index}.")

    def _forward(self, batch: int, pre_hooks: dict[nn.Module, Any], hooks: dict[nn.Module, Any] | None = None) -> bool:
        """One forward of the model on `batch` with hooks; whether a hook stopped it."""
        handles = [
            module.register_forward_pre_hook(hook, with_kwargs=True, prepend=True) for module, hook in pre_hooks.items()
        ]
        handles += [module.register_forward_hook(hook) for module, hook in (hooks or {}).items()]
        try:
            self.model(**self.inputs[batch], **self._no_cache)
        except StopForward:
            return True
        finally:
            for handle in handles:
                handle.remove()
        return False

    @contextlib.contextmanager
    def _skipping(self, batch: int, layers: Sequence[nn.Module]) -> Iterator[None]:
        """Make `layers` return their input while the context is open.

        The instance attribute `forward` shadows the class's method (how accelerate's hooks wrap
        modules too); one set before, such as accelerate's, is put back on exit.
        """
        saved = []
        try:
            for position, layer in enumerate(layers):
                if (position, batch) not in self._forms:
                    raise RuntimeError(
                        f"Layer {position} must run on batch {batch} before a later layer can: layers run in order."
                    )
                saved.append((layer, layer.__dict__.get("forward")))
                layer.forward = self._passthrough(self._forms[position, batch])
            yield
        finally:
            for layer, previous in saved:
                if previous is None:
                    del layer.forward
                else:
                    layer.forward = previous

    @staticmethod
    def _passthrough(form: Any):
        def forward(*args: Any, **kwargs: Any) -> Any:
            return internals.output_like(form, internals.layer_input(args, kwargs))

        return forward
