"""The sparsity schedule: cubic threshold and penalty weight as functions of the optimizer step.

The schedule is a pure function of the step, so its whole state is the Trainer's
`global_step`: a resumed run sees the same thresholds as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

from .args import SparseArgs, require_sparse_args
from .validation import InputError, check_real, check_whole

__all__ = ["SparsitySchedule"]


@dataclass(frozen=True)
class SparsitySchedule:
    """Cubic schedule (Zhu & Gupta 2017, as in movement pruning) with warmups in steps.

    For optimizer step `s`, with `p = clip((s - initial_warmup) / (total - initial_warmup -
    final_warmup), 0, 1)`, progress is `1 - (1 - p) ** 3`; the threshold moves from initial to
    final with it and the penalty weight rises from 0 to `final_lambda` with it.

    Args:
        initial_threshold: Threshold until `initial_warmup_steps`.
        final_threshold: Threshold for the last `final_warmup_steps`.
        attention_final_threshold: Final threshold of the attention linears, when it differs.
        total_steps: Number of optimizer steps of the run.
        initial_warmup_steps: Steps held at the initial threshold.
        final_warmup_steps: Final steps held at the final threshold.
        final_lambda: Penalty weight at full progress.
    """

    initial_threshold: float
    final_threshold: float
    total_steps: int
    initial_warmup_steps: int = 0
    final_warmup_steps: int = 0
    final_lambda: float = 0.0
    attention_final_threshold: float | None = None

    def __post_init__(self):
        # Checked before the arithmetic below: NaN passes `< 1` and gives NaN thresholds, a fractional step
        # count or a negative warmup bends the ramp without a word, and text fails as a TypeError.
        check_whole(self.total_steps, "SparsitySchedule.total_steps (optimizer steps of the run)", 1)
        for name in ("initial_warmup_steps", "final_warmup_steps"):
            check_whole(getattr(self, name), f"SparsitySchedule.{name}", 0)
        for name in ("initial_threshold", "final_threshold"):
            check_real(getattr(self, name), f"SparsitySchedule.{name}")
        check_real(self.attention_final_threshold, "SparsitySchedule.attention_final_threshold", optional=True)
        check_real(self.final_lambda, "SparsitySchedule.final_lambda", minimum=0)
        if self.initial_warmup_steps + self.final_warmup_steps >= self.total_steps:
            raise InputError(
                f"initial_warmup ({self.initial_warmup_steps} steps) + final_warmup ({self.final_warmup_steps} steps) "
                f"leave no step of the {self.total_steps}-step run for the threshold to move: shorten the warmups "
                "(fractions such as 0.1 scale with the run) or train longer."
            )

    @classmethod
    def from_args(cls, sparse_args: SparseArgs, total_steps: int) -> "SparsitySchedule":
        """The schedule of `sparse_args` for a run of `total_steps` optimizer steps.

        Raises:
            InputError: If `sparse_args` is not a `SparseArgs`, `total_steps` is not a whole number >= 1, or
                the warmups leave no step of the run for the thresholds to move.
        """
        require_sparse_args(sparse_args, "SparsitySchedule.from_args: sparse_args")
        initial_warmup, final_warmup = sparse_args.warmup_steps(total_steps)
        return cls(
            initial_threshold=sparse_args.initial_threshold,
            final_threshold=sparse_args.final_threshold,
            total_steps=total_steps,
            initial_warmup_steps=initial_warmup,
            final_warmup_steps=final_warmup,
            final_lambda=sparse_args.regularization_final_lambda,
            attention_final_threshold=sparse_args.attention_final_threshold,
        )

    def progress(self, step: int) -> float:
        """Fraction of the schedule done at optimizer step `step`, in [0, 1]."""
        ramp = self.total_steps - self.initial_warmup_steps - self.final_warmup_steps
        linear = min(1.0, max(0.0, (step - self.initial_warmup_steps) / ramp))
        return 1.0 - (1.0 - linear) ** 3

    def threshold(self, step: int) -> float:
        """The FFN threshold (the attention one too unless `attention_final_threshold` is set)."""
        return self.initial_threshold + (self.final_threshold - self.initial_threshold) * self.progress(step)

    def thresholds(self, step: int) -> tuple[float, float]:
        """The `(attention, FFN)` thresholds at optimizer step `step`, both moving with the same progress."""
        final = self.final_threshold if self.attention_final_threshold is None else self.attention_final_threshold
        attention = self.initial_threshold + (final - self.initial_threshold) * self.progress(step)
        return attention, self.threshold(step)

    def regularization_lambda(self, step: int) -> float:
        return self.final_lambda * self.progress(step)
