"""Greedy layer pruning: remove whole transformer layers, the least harmful first.

At each step every remaining layer is tried: the model runs on a few batches without it, and the
layer whose removal hurts least goes. Two criteria measure the harm:

- `"loss"`: the model's own loss on the batches (they carry `labels`);
- `"output"`: how far the outputs move from those of the model before pruning, with no labels
  needed: the KL divergence of the softmax of the logits (mean squared error where there is a
  single logit or only hidden states), averaged over examples, and over real tokens (the
  `attention_mask`) for token-level outputs.

Candidates are tried on the model itself (`layers_removed` takes a layer out and puts it back), so
no copy of the model is made per candidate. The result is the model with the layers dropped
(`drop_layers`): it saves like any model and can be slimmed further with `optimize_model`.

```python
from nn_prune_ext.posttrain.layer_pruning import prune_layers

result = prune_layers(model, batches, num_layers=2, criterion="output")
result.removed    # e.g. [4, 1]: the layers removed, in order, as indices of the input model
result.model.save_pretrained("out/shallower")
```
"""

from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..importance import to_device
from ..arch import check_batch, get_layout
from ..patch import require_unpatched
from ..slim.layers import drop_layers, layers_removed
from ..transformers_internals import no_cache
from ..validation import InputError, NonFiniteError
from .batches import check_batch_shapes, read_batches

__all__ = ["CRITERIA", "LayerPruningStep", "LayerPruningResult", "prune_layers"]

CRITERIA = ("loss", "output")


@dataclass(frozen=True)
class LayerPruningStep:
    """One greedy step.

    Args:
        removed: The layer removed at this step, as an index of the input model.
        scores: For every layer present before this step (input-model index), the criterion of
            the model without it; lower is better, and `removed` has the lowest.
    """

    removed: int
    scores: dict[int, float]


@dataclass
class LayerPruningResult:
    """What `prune_layers` did.

    Args:
        model: The model without the removed layers.
        criterion: `"loss"` or `"output"`.
        baseline: The criterion of the input model (its loss; 0 for `"output"`).
        steps: The greedy steps, in order.
    """

    model: nn.Module
    criterion: str
    baseline: float
    steps: list[LayerPruningStep]

    @property
    def removed(self) -> list[int]:
        """The layers removed, in order, as indices of the input model."""
        return [step.removed for step in self.steps]

    @property
    def final_score(self) -> float:
        """The criterion of the pruned model."""
        return self.steps[-1].scores[self.steps[-1].removed] if self.steps else self.baseline


def prune_layers(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    num_layers: int,
    *,
    criterion: str = "loss",
    max_batches: int | None = None,
    inplace: bool = False,
) -> LayerPruningResult:
    """Remove `num_layers` whole layers greedily, each time the one whose removal hurts least.

    The model runs in eval mode without a KV cache; its mode is restored afterwards. Every step
    runs the model once per remaining layer on every batch.

    Args:
        model: A model of a registered architecture, dense or slim (bake a patched model first).
        batches: Dicts of model inputs, e.g. a `DataLoader`; with `labels` for `criterion="loss"`.
            They are read once and kept (on the model's device) for all the steps.
        num_layers: How many layers to remove (at least 1, fewer than the model has).
        criterion: `"loss"` (the model's loss on the batches) or `"output"` (divergence from the
            input model's outputs; see the module docstring).
        max_batches: Use at most this many batches.
        inplace: Remove the layers from `model` itself instead of a copy.

    Returns:
        The pruned model and the greedy trace.

    Raises:
        InputError: For an unknown criterion, a `num_layers` out of range or not a whole number, a
            `max_batches` below 1, no batches, a patched model, or (`"loss"`) batches the model
            computes no loss from.
        NonFiniteError: If the input model's loss or outputs on the batches are NaN or infinite.
    """
    if not isinstance(criterion, str) or criterion not in CRITERIA:
        raise InputError(f"criterion must be one of {CRITERIA}, got {criterion!r}.")
    count = len(get_layout(model).layer_list(model))
    # The type first: `1 <= "2"` is a TypeError, and True would count as one layer.
    whole = isinstance(num_layers, numbers.Integral) and not isinstance(num_layers, bool)
    if not whole or not 1 <= num_layers < count:
        raise InputError(
            f"num_layers is the number of layers to remove: a whole number, at least 1 and fewer than the model's "
            f"{count}; got {num_layers!r}."
        )
    require_unpatched(model, "prune_layers")
    device = next(model.parameters()).device
    inputs = read_batches(batches, "prune_layers", max_batches)
    for index, batch in enumerate(inputs):
        check_batch(model, batch, index)
        check_batch_shapes(model, batch, index)
    inputs = [to_device(batch, device) for batch in inputs]
    if not inplace:
        model = copy.deepcopy(model)
    was_training = model.training
    model.eval()
    try:
        score = _scorer(model, inputs, criterion)
        baseline = score()
        if not math.isfinite(baseline):
            # Every candidate would then score NaN too, and the "least harmful" layer would be layer 0.
            what = "loss" if criterion == "loss" else "outputs"
            raise NonFiniteError(
                f"The input model's {what} on the batches {'is' if criterion == 'loss' else 'are'} not finite "
                f"({baseline}): every layer's removal would be judged against NaN. Check the model's weights and the "
                "batches' inputs and labels, or run the model in float32."
            )
        remaining = list(range(count))  # the input-model index of each layer still there
        steps = []
        for _ in range(num_layers):
            scores = {}
            for position, index in enumerate(remaining):
                with layers_removed(model, [position]):
                    scores[index] = score()
            # NaN (a diverged candidate) ranks last; ties go to the earlier layer.
            removed = min(scores, key=lambda index: (math.isnan(scores[index]), scores[index]))
            drop_layers(model, [remaining.index(removed)], inplace=True)
            remaining.remove(removed)
            steps.append(LayerPruningStep(removed=removed, scores=scores))
    finally:
        model.train(was_training)
    return LayerPruningResult(model=model, criterion=criterion, baseline=baseline, steps=steps)


# ----- criteria ------------------------------------------------------------------------------
def _run(model: nn.Module, batch: dict[str, Any]) -> Any:
    # A KV cache is of no use here, and a cache built for one depth must not meet another.
    with torch.no_grad():
        return model(**batch, **no_cache(model))


def _scorer(model: nn.Module, inputs: list[dict[str, Any]], criterion: str) -> Callable[[], float]:
    """A function scoring the model as it is now, on `inputs` (lower is better)."""
    if criterion == "loss":
        return lambda: sum(_loss(_run(model, batch)) for batch in inputs) / len(inputs)
    references = [_prediction(_run(model, batch)) for batch in inputs]
    return lambda: sum(
        _divergence(reference, _prediction(_run(model, batch)), batch.get("attention_mask"))
        for reference, batch in zip(references, inputs)
    ) / len(inputs)


def _loss(outputs: Any) -> float:
    loss = getattr(outputs, "loss", None)
    if loss is None:
        raise InputError(
            "The model returned no loss: with criterion='loss' every batch must carry the targets the model "
            "computes its loss from (`labels`); without labels, use criterion='output'."
        )
    return float(loss)


def _prediction(outputs: Any) -> tuple[torch.Tensor, bool]:
    """The output to compare, and whether it is logits."""
    logits = getattr(outputs, "logits", None)
    if logits is not None:
        return logits.float(), True
    hidden = getattr(outputs, "last_hidden_state", None)
    if hidden is None:
        raise InputError(
            f"{type(outputs).__name__} has neither logits nor last_hidden_state to compare; use criterion='loss'."
        )
    return hidden.float(), False


def _divergence(
    reference: tuple[torch.Tensor, bool], output: tuple[torch.Tensor, bool], attention_mask: torch.Tensor | None
) -> float:
    """Mean divergence of `output` from `reference` per example, or per real token for token-level outputs."""
    (expected, is_logits), (actual, _) = reference, output
    if is_logits and expected.shape[-1] > 1:
        per_position = F.kl_div(
            F.log_softmax(actual, dim=-1), F.log_softmax(expected, dim=-1), log_target=True, reduction="none"
        ).sum(dim=-1)
    else:
        per_position = (actual - expected).square().mean(dim=-1)
    if attention_mask is not None and attention_mask.shape == per_position.shape:
        weights = attention_mask.to(per_position.dtype)
        return float((per_position * weights).sum() / weights.sum().clamp(min=1))
    return float(per_position.mean())
