"""The optimizer wrapper that owns the mask scores: their learning rate and their penalty.

`ScoreOptimizer` wraps any `torch.optim.Optimizer` (the Trainer's AdamW, a user's own). It
moves the scores into a parameter group of their own (`mask_scores_learning_rate`, no weight
decay) and, at each `step`, adds the gradient of the scheduled L1/L0 penalty to the scores'
gradients before the wrapped optimizer steps. Applying the penalty here rather than in the
loss keeps it out of the autograd graph of every micro-batch, counts it once per optimizer
step whatever the gradient accumulation, and leaves the gradient clipping of the task loss
untouched. Accelerate's `AcceleratedOptimizer` (and its GradScaler) wrap this one as any other.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from .scores.masked_linear import MaskScores
from .validation import InputError

__all__ = ["ScoreOptimizer", "SCORES_GROUP_NAME", "find_score_optimizer"]

SCORES_GROUP_NAME = "mask_scores"


class ScoreOptimizer(torch.optim.Optimizer):
    """Wrap `optimizer`, giving the mask scores their own group and their scheduled penalty.

    A GradScaler unscales this wrapper's gradients and skips steps with overflows the usual
    way, even around a fused optimizer that could take the scale itself: the penalty must be
    added to unscaled gradients.

    Args:
        optimizer: The optimizer to wrap. Score parameters it already holds are moved out of
            their groups (before any step, so no state is lost).
        mask_scores: The score groups of the patched model.
        learning_rate: Learning rate of the scores.
        regularization_lambda: Returns the current penalty weight (0 disables the penalty).
        kind_multipliers: Penalty multiplier per score kind (`attention_lambda`, `dense_lambda`).
    """

    # Read by torch.amp.GradScaler.step; without it, `__getattr__` would expose the wrapped fused
    # optimizer's True and the scaler would hand grad_scale/found_inf to this wrapper, which
    # does not forward them.
    _step_supports_amp_scaling = False

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        mask_scores: Sequence[MaskScores],
        learning_rate: float,
        regularization_lambda: Callable[[], float] = lambda: 0.0,
        kind_multipliers: dict[str, float] | None = None,
    ):
        # Deliberately not calling Optimizer.__init__: state and groups live in the wrapped optimizer.
        self.optimizer = optimizer
        self.regularization_lambda = regularization_lambda
        self.kind_multipliers = dict(kind_multipliers or {})
        self.mask_scores = [scores for scores in mask_scores if scores.scores is not None]
        self.last_penalty: torch.Tensor | None = None
        self._buckets: list[tuple[list[MaskScores], torch.Tensor]] = []
        self._buckets_key: tuple | None = None
        score_params = [scores.scores for scores in self.mask_scores]
        score_ids = {id(param) for param in score_params}
        if any(id(param) in score_ids and param in optimizer.state for group in optimizer.param_groups for param in group["params"]):
            raise InputError("Wrap the optimizer before its first step: the scores already have optimizer state.")
        for group in optimizer.param_groups:
            group["params"] = [param for param in group["params"] if id(param) not in score_ids]
        if score_params:
            optimizer.add_param_group(
                {"params": score_params, "lr": learning_rate, "weight_decay": 0.0, "name": SCORES_GROUP_NAME}
            )

    # ----- delegation: the wrapped optimizer holds all state ----------------------------
    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value):
        self.optimizer.param_groups = value

    @property
    def state(self):
        return self.optimizer.state

    @property
    def defaults(self):
        return self.optimizer.defaults

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict):
        self.optimizer.load_state_dict(state_dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group) -> None:
        self.optimizer.add_param_group(param_group)

    def __getattr__(self, name):
        # Only reached for attributes this wrapper lacks (train()/eval() of schedule-free optimizers, ...).
        if name == "optimizer":
            raise AttributeError(name)
        return getattr(self.optimizer, name)

    def __getstate__(self):
        return self.__dict__

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"ScoreOptimizer({self.optimizer!r})"

    # ----- the penalty ------------------------------------------------------------------
    def _penalty_buckets(self) -> list[tuple[list[MaskScores], torch.Tensor]]:
        """The score tensors per method (and device and dtype), with each score's weight in the penalty.

        A score of group `g` weighs `multiplier(kind of g) / (numel(g) * number of groups)`, so that the
        weighted sum over a bucket's concatenated scores is its share of the mean over groups of
        `multiplier * method.penalty(scores)`. The weights change only with `kind_multipliers`.
        """
        key = (tuple(sorted(self.kind_multipliers.items())),
               tuple((scores.scores.device, scores.scores.dtype) for scores in self.mask_scores))
        if self._buckets_key == key:
            return self._buckets
        grouped: dict[tuple, list[MaskScores]] = {}
        for scores in self.mask_scores:
            grouped.setdefault((scores.method, scores.scores.device, scores.scores.dtype), []).append(scores)
        buckets = []
        for (_, device, dtype), members in grouped.items():
            weights = torch.cat([
                torch.full((scores.scores.numel(),), self.kind_multipliers.get(scores.kind, 1.0)
                           / (scores.scores.numel() * len(self.mask_scores)), device=device, dtype=dtype)
                for scores in members
            ])
            buckets.append((members, weights))
        self._buckets, self._buckets_key = buckets, key
        return buckets

    def penalty(self) -> torch.Tensor:
        """The unweighted penalty: mean over score groups of kind multiplier x method penalty.

        One concatenation and one elementwise penalty per pruning method, not a few operations per
        score group: this runs at every optimizer step.
        """
        total = None
        for members, weights in self._penalty_buckets():
            method = members[0].method
            flat = torch.cat([scores.scores.reshape(-1) for scores in members]) if len(members) > 1 else (
                members[0].scores.reshape(-1))
            term = torch.dot(method.penalty_terms(flat), weights)
            total = term if total is None else total + term
        return total

    @torch.no_grad()
    def apply_penalty(self) -> None:
        """Add `lambda * d(penalty)/d(scores)` to the scores' gradients."""
        weight = float(self.regularization_lambda())
        if weight == 0.0 or not self.mask_scores:
            return
        params = [scores.scores for scores in self.mask_scores]
        with torch.enable_grad():
            penalty = self.penalty()
            grads = torch.autograd.grad(penalty, params)
        if all(param.grad is not None for param in params):
            torch._foreach_add_([param.grad for param in params], grads, alpha=weight)
        else:
            for param, grad in zip(params, grads):
                if param.grad is None:
                    param.grad = grad.mul(weight)
                else:
                    param.grad.add_(grad, alpha=weight)
        self.last_penalty = penalty.detach()

    def step(self, closure=None):
        self.apply_penalty()
        return self.optimizer.step(closure)


def find_score_optimizer(optimizer) -> ScoreOptimizer | None:
    """The `ScoreOptimizer` inside a chain of wrappers (accelerate's `AcceleratedOptimizer`, ...)."""
    seen = set()
    while optimizer is not None and id(optimizer) not in seen:
        if isinstance(optimizer, ScoreOptimizer):
            return optimizer
        seen.add(id(optimizer))
        optimizer = optimizer.__dict__.get("optimizer")
    return None
