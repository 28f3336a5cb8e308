"""Stop training at the first NaN or infinity in the loss, the mask scores' gradients or the scores.

One non-finite step turns every weight it touches into NaN; a threshold on NaN scores then prunes
everything (or topK keeps an arbitrary half), and the Trainer's `logging_nan_inf_filter` hides the
loss from the logs. So `SparseTrainer` checks every micro-batch's loss, the scores' gradients
before each optimizer step and the scores after it, and raises `NonFiniteError` naming the step.
With `SparseArgs.skip_non_finite_steps` a step whose loss or gradients are not finite is skipped
instead, as mixed precision's loss scaling skips overflowing steps.
"""

from __future__ import annotations

import logging
import types
from typing import Callable

import torch
from torch import nn
from transformers import TrainerCallback

from .patch import iter_mask_scores
from .validation import NonFiniteError, first_non_finite

__all__ = ["NonFiniteGuard"]

logger = logging.getLogger(__name__)

_ADVICE = (
    "Lower learning_rate or mask_scores_learning_rate, check the batch for extreme values, or set "
    "SparseArgs.skip_non_finite_steps=True to skip such steps."
)


def _parameter_name(model: nn.Module, parameter: torch.Tensor) -> str:
    """The name of `parameter` in `model` (looked up only once something is wrong: it walks every parameter)."""
    return next((name for name, candidate in model.named_parameters() if candidate is parameter), "mask scores")


class NonFiniteGuard(TrainerCallback):
    """Checks the loss, gradients and scores of a `SparseTrainer` run for NaN and infinities.

    Args:
        model: Returns the trained model (unwrapped), whose mask scores are checked.
        skip_steps: Skip a step whose loss or gradients are not finite instead of raising.
    """

    def __init__(self, model: Callable[[], nn.Module], skip_steps: bool):
        self.model = model
        self.skip_steps = skip_steps
        self.skipped_steps = 0
        self._skip_pending = False
        self._guarded: set[int] = set()  # ids of the optimizers whose step is guarded already

    # ----- the loss of each micro-batch ---------------------------------------------------
    def check_loss(self, loss: torch.Tensor, step: int) -> None:
        """Raise (or mark the step for skipping) when a micro-batch's `loss` is not finite.

        Args:
            loss: The micro-batch loss `training_step` returned.
            step: The optimizer step the micro-batch belongs to (1-based).
        """
        if bool(torch.isfinite(loss.detach()).all()):
            return
        if self.skip_steps:
            self._skip_pending = True
            return
        raise NonFiniteError(f"Training stopped at optimizer step {step}: the loss is {loss.detach().float().mean().item()}. {_ADVICE}")

    # ----- gradients, before the optimizer steps -------------------------------------------
    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        model = self.model()
        step = state.global_step + 1
        if self.skip_steps:
            # A skipped step must leave every weight as it was, so every gradient is checked (as GradScaler does).
            bad = None if self._skip_pending else first_non_finite((n, p.grad) for n, p in model.named_parameters())
            if self._skip_pending or bad is not None:
                self._skip_pending = True
                self.skipped_steps += 1
                logger.warning(
                    "Skipping optimizer step %d: %s is not finite (skip_non_finite_steps=True; %d skipped so far).",
                    step, "the loss" if bad is None else f"the gradient of {bad}", self.skipped_steps,
                )
            return
        bad = first_non_finite((s.scores, s.scores.grad) for s in iter_mask_scores(model))
        if bad is not None:
            raise NonFiniteError(
                f"Training stopped at optimizer step {step}: the gradient of {_parameter_name(model, bad)} is not "
                f"finite. {_ADVICE}"
            )

    def take_skip(self) -> bool:
        """Whether the optimizer step about to run is to be skipped (and forget it for the next one)."""
        pending, self._skip_pending = self._skip_pending, False
        return pending

    # ----- scores, after the optimizer stepped -------------------------------------------
    def on_optimizer_step(self, args, state, control, **kwargs):
        model = self.model()
        bad = first_non_finite((s.scores, s.scores.detach()) for s in iter_mask_scores(model))
        if bad is not None:
            raise NonFiniteError(
                f"Training stopped at optimizer step {state.global_step + 1}: {_parameter_name(model, bad)} holds NaN "
                f"or infinite values after the step, so its masks would be frozen pruned or kept. {_ADVICE}"
            )

    def install(self, optimizer: torch.optim.Optimizer) -> None:
        """Make `optimizer.step` a no-op for the steps `take_skip` marks.

        A bound method (not a plain function) replaces `step`: torch's LR schedulers wrap `optimizer.step`
        through its `__func__`.
        """
        if id(optimizer) in self._guarded:  # a second train() reuses the optimizer
            return
        self._guarded.add(id(optimizer))
        original = optimizer.step
        guard = self

        def step(optimizer_self, *args, **kwargs):
            if guard.take_skip():
                return None
            return original(*args, **kwargs)

        optimizer.step = types.MethodType(step, optimizer)
