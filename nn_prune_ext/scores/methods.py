"""Pruning methods: how a grid of scores (or of weight magnitudes) becomes a mask.

Every method maps a score tensor to a mask of the same shape, with straight-through
gradients to the scores where the method learns them. None of them reads a value back to the
host inside `forward`: thresholds and kept counts are Python numbers computed from the
schedule, so a training step never waits on the device.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from ..validation import InputError

__all__ = [
    "PruningMethod",
    "TopK",
    "Threshold",
    "SigmoidThreshold",
    "Magnitude",
    "HardConcrete",
    "PRUNING_METHODS",
    "get_pruning_method",
]


class _StraightThrough(torch.autograd.Function):
    # One autograd node instead of the three of `hard.detach() + scores - scores.detach()`:
    # this runs for every score group in every forward pass.
    @staticmethod
    def forward(ctx, hard, scores):
        return hard

    @staticmethod
    def backward(ctx, grad_output):
        return None, grad_output


def _straight_through(hard: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Return `hard` in the forward pass and pass the gradient unchanged to `scores`."""
    if not (scores.requires_grad and torch.is_grad_enabled()):
        return hard
    return _StraightThrough.apply(hard.detach(), scores)


def _keep_count(fraction: float, numel: int) -> int:
    # The small epsilon keeps floor(0.29 * 100) at 29 despite floating-point error.
    return min(numel, max(0, math.floor(fraction * numel + 1e-6)))


def _top_fraction(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """A 0/1 tensor shaped like `scores` with ones at its `fraction` largest entries."""
    flat = scores.detach().flatten()
    hard = torch.zeros_like(flat)
    kept = _keep_count(fraction, flat.numel())
    if kept > 0:
        hard.scatter_(0, torch.topk(flat, kept, sorted=False).indices, 1.0)
    return hard.view_as(scores)


class PruningMethod:
    """Base class of pruning methods.

    Attributes:
        name: The name used in `SparseArgs` (`attention_pruning_method`, `dense_pruning_method`).
        learnable: Whether the method has learnable scores (all but `magnitude`).
        threshold_range: Closed bounds allowed for the thresholds, `None` for unbounded.
        regularizations: Values of `SparseArgs.regularization` that make sense for it.
    """

    name: str = ""
    learnable: bool = True
    # Whether the masks of many score groups may come from one mask of their concatenation (`masks`):
    # each entry must depend on its own score alone, and the graph from scores to mask must hold no
    # saved tensors, because reentrant gradient checkpointing backpropagates through it once per layer.
    batched_masks: bool = False
    # Whether `mask` also takes the threshold as a 0-d tensor (compared elementwise, never read back to
    # the host), which a compiled graph takes as an input instead of a constant it would be guarded on.
    tensor_threshold: bool = False
    threshold_range: tuple[float, float] | None = None
    regularizations: tuple[str, ...] = ("disabled", "l1")
    threshold_help: str = ""

    def init_scores(self, shape: tuple[int, ...], device=None, dtype=torch.float32) -> torch.Tensor:
        """Initial scores: zeros, so every structure starts equally likely to be kept."""
        return torch.zeros(shape, device=device, dtype=dtype)

    def mask(self, scores: torch.Tensor, threshold: float, training: bool) -> torch.Tensor:
        raise NotImplementedError

    def masks(self, scores: Sequence[torch.Tensor], threshold: float, training: bool) -> list[torch.Tensor]:
        """The masks of several score tensors at one threshold, each shaped like its scores.

        A method with `batched_masks` computes them as one mask of the concatenated scores: a handful
        of operations per forward pass instead of a handful per score group. Gradients reach every
        score tensor through the concatenation.
        """
        if not self.batched_masks or len(scores) < 2:
            return [self.mask(tensor, threshold, training) for tensor in scores]
        flat = self.mask(torch.cat([tensor.reshape(-1) for tensor in scores]), threshold, training)
        return [part.view(tensor.shape) for part, tensor in zip(flat.split([t.numel() for t in scores]), scores)]

    def penalty_terms(self, scores: torch.Tensor) -> torch.Tensor:
        """The regularization penalty of each score (L1 by default); `penalty` is their mean."""
        return scores.abs()

    def penalty(self, scores: torch.Tensor) -> torch.Tensor:
        """The mean regularization penalty of `scores`."""
        return self.penalty_terms(scores).mean()

    def score_travel(self, threshold: float) -> float | None:
        """How far a score must move from its initial value before the evaluation mask drops it at `threshold`.

        Returns:
            A distance in score units (0.0 where `threshold` masks every structure from the start, `inf` where
            no score can reach it), or `None` where the threshold itself decides a kept fraction (topK,
            magnitude), so that a structure can be masked however little the scores moved.
        """
        return None

    def check_threshold(self, value: float, name: str, tolerance: float = 0.0) -> None:
        """Refuse a threshold outside the method's range.

        Args:
            value: The threshold.
            name: How the message names it.
            tolerance: How far outside the range a value still passes (the schedule's cubic interpolation may
                land an ulp outside it, which is no user error).

        Raises:
            InputError: If `value` lies more than `tolerance` outside `threshold_range`.
        """
        if self.threshold_range is None:
            return
        low, high = self.threshold_range
        if not (low - tolerance <= value <= high + tolerance):
            raise InputError(
                f"{name}={value} is out of range for pruning method {self.name!r}: it must lie in [{low}, {high}]. "
                f"{self.threshold_help}"
            )


class TopK(PruningMethod):
    """Keep the `threshold` fraction of structures with the highest scores (movement pruning)."""

    name = "topK"
    threshold_range = (0.0, 1.0)
    threshold_help = "For topK the threshold is the fraction of structures kept (1.0 keeps everything)."

    def mask(self, scores, threshold, training):
        return _straight_through(_top_fraction(scores, threshold), scores)


class Threshold(PruningMethod):
    """Keep structures whose score exceeds `threshold` (hard movement pruning)."""

    name = "threshold"
    batched_masks = True
    tensor_threshold = True
    threshold_help = "For threshold the threshold is compared with the raw scores, which start at 0."

    def mask(self, scores, threshold, training):
        return _straight_through((scores > threshold).to(scores.dtype), scores)

    def score_travel(self, threshold):
        return max(0.0, -threshold)  # scores start at 0 and are kept above the threshold


class SigmoidThreshold(PruningMethod):
    """Keep structures with `sigmoid(score) > threshold` (soft movement pruning, nn_pruning's hybrid)."""

    name = "sigmoied_threshold"
    batched_masks = True
    tensor_threshold = True
    threshold_range = (0.0, 1.0)
    threshold_help = "For sigmoied_threshold the threshold is compared with sigmoid(scores), which starts at 0.5."

    def mask(self, scores, threshold, training):
        return _straight_through((torch.sigmoid(scores) > threshold).to(scores.dtype), scores)

    def penalty_terms(self, scores):
        return torch.sigmoid(scores)

    def score_travel(self, threshold):
        # Scores start at 0 (sigmoid 0.5) and are masked at or below logit(threshold).
        if threshold >= 0.5:
            return 0.0
        return math.inf if threshold <= 0.0 else math.log((1.0 - threshold) / threshold)


class Magnitude(PruningMethod):
    """Keep the `threshold` fraction of structures with the largest weight magnitude; nothing is learnt."""

    name = "magnitude"
    learnable = False
    threshold_range = (0.0, 1.0)
    regularizations = ("disabled",)
    threshold_help = "For magnitude the threshold is the fraction of structures kept (1.0 keeps everything)."

    def mask(self, scores, threshold, training):
        return _top_fraction(scores, threshold)

    def penalty_terms(self, scores):
        raise RuntimeError("magnitude pruning has no scores to regularize")


class HardConcrete(PruningMethod):
    """L0 regularization through hard-concrete gates (Louizos et al. 2018).

    The scores are the gates' `log_alpha`. In training a stochastic gate in [0, 1] is sampled;
    in eval the gate is binary: kept where the noise-free gate exceeds 0.5, that is where
    `log_alpha > 0`. Sparsity is driven by
    the L0 penalty (`regularization="l0"`), not by the threshold, which this method ignores.
    """

    name = "l0"
    tensor_threshold = True  # the threshold is ignored
    regularizations = ("disabled", "l0")
    beta = 2.0 / 3.0
    gamma = -0.1
    zeta = 1.1
    initial_log_alpha = 3.0  # gates start open: P(gate > 0) is about 0.99

    def init_scores(self, shape, device=None, dtype=torch.float32):
        return torch.full(shape, self.initial_log_alpha, device=device, dtype=dtype)

    def mask(self, scores, threshold, training):
        if training:
            noise = torch.rand_like(scores).clamp_(1e-6, 1.0 - 1e-6)
            gate = torch.sigmoid((torch.log(noise) - torch.log1p(-noise) + scores) / self.beta)
        else:
            gate = torch.sigmoid(scores)
        gate = (gate * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)
        if training:
            return gate
        return (gate > 0.5).to(scores.dtype)

    def score_travel(self, threshold):
        # The evaluation gate closes at log_alpha <= 0, from its start at initial_log_alpha; the threshold is ignored.
        return self.initial_log_alpha

    def penalty_terms(self, scores):
        # The probability of each gate being open: their mean is the expected fraction of open gates.
        return torch.sigmoid(scores - self.beta * math.log(-self.gamma / self.zeta))


PRUNING_METHODS: dict[str, PruningMethod] = {
    method.name: method for method in (TopK(), Threshold(), SigmoidThreshold(), Magnitude(), HardConcrete())
}


def get_pruning_method(name: str) -> PruningMethod:
    """Return the pruning method called `name`.

    Raises:
        ValueError: For an unknown name; the message lists the known ones.
    """
    try:
        return PRUNING_METHODS[name]
    except KeyError:
        raise InputError(
            f"Unknown pruning method {name!r}. Choose one of: {', '.join(PRUNING_METHODS)}."
        ) from None
