"""Prune, then heal: post-training masks at a budget, slimming, and a short distillation from the dense model.

Today's strongest structured-pruning results are made this way (Minitron, Sheared-LLaMA: prune by
importance, then distil): the fast Fisher search of `post_training_prune` picks what to remove
without training, `optimize_model` removes it, and `SparseTrainer` in the "filled" stage
(`SparseArgs.filled`: no pruning, distillation from a teacher) lets the slim model recover. The
iterative variant reaches the budget in several smaller steps with healing between, so that each
search measures importance on a model that has recovered from the previous cut.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from torch import nn
from transformers import TrainingArguments

from .args import SparseArgs
from .posttrain import PostTrainingArgs, SearchResult, post_training_prune
from .slim import SlimReport
from .trainer import SparseTrainer
from .validation import InputError

__all__ = ["HealRound", "HealResult", "prune_and_heal"]


@dataclass
class HealRound:
    """One prune-and-heal step.

    Args:
        budget: The fraction of its input model's cost this step kept.
        search: The mask search (its `cost` and `dense_cost` are those of this step's input).
        slim_report: What slimming removed.
        metrics_before: Evaluation metrics of the slim model before healing (empty without `eval_dataset`).
        metrics_after: The same after healing.
        train_metrics: The healing run's training metrics.
        steps: The healing run's optimizer steps.
    """

    budget: float
    search: SearchResult
    slim_report: SlimReport
    metrics_before: dict[str, float]
    metrics_after: dict[str, float]
    train_metrics: dict[str, float]
    steps: int = 0


@dataclass
class HealResult:
    """What `prune_and_heal` produced: the healed slim model and a record per step."""

    model: nn.Module
    rounds: list[HealRound]

    def __str__(self) -> str:
        rows = []
        for index, step in enumerate(self.rounds, start=1):
            before = step.metrics_before.get("eval_loss")
            after = step.metrics_after.get("eval_loss")
            loss = f"; eval loss {before:.4f} -> {after:.4f}" if before is not None and after is not None else ""
            rows.append(f"round {index}: kept {step.budget:.3f} of its input's cost{loss}")
        return "\n".join(rows)


def prune_and_heal(
    model: nn.Module,
    calibration_batches: Iterable[Mapping[str, Any]],
    train_dataset: Any,
    training_args: TrainingArguments,
    prune_args: PostTrainingArgs | None = None,
    *,
    rounds: int = 1,
    sparse_args: SparseArgs | None = None,
    teacher_model: nn.Module | None = None,
    **trainer_kwargs: Any,
) -> HealResult:
    """Prune `model` to a budget without retraining, slim it, and heal the slim model by distillation.

    With `rounds > 1`, each round keeps `budget ** (1 / rounds)` of the cost of the model it starts from
    (costs compound: the search of a later round counts the slim model's sizes), and heals before the
    next search. The input model is not modified; it is the teacher unless `teacher_model` is given.

    Args:
        model: A fine-tuned, unpatched model of a registered architecture.
        calibration_batches: Batches for the mask search (`post_training_prune`).
        train_dataset: The data the slim model heals on, as for `Trainer`.
        training_args: The healing run's `TrainingArguments` (each round trains for all of them; with several
            rounds, round `r` writes to `<output_dir>/round-<r>`).
        prune_args: The budget and search settings (`PostTrainingArgs(flops_budget=0.5)`).
        rounds: Prune-and-heal steps to reach the budget.
        sparse_args: The healing settings, a "filled" stage (`prune=False`); default `SparseArgs.filled()`.
        teacher_model: The model to distil from; default the input model.
        **trainer_kwargs: Passed to `SparseTrainer` (`eval_dataset`, `data_collator`, `compute_metrics`, ...).

    Returns:
        A `HealResult` with the healed slim model and one `HealRound` per round.

    Raises:
        InputError: For no budget, `rounds < 1`, or `sparse_args` that would prune while healing.
    """
    if not isinstance(prune_args, PostTrainingArgs):
        raise InputError(
            f"prune_and_heal needs a budget: pass prune_args=PostTrainingArgs(flops_budget=...), got "
            f"{type(prune_args).__name__}."
        )
    if isinstance(calibration_batches, Mapping):
        raise InputError("calibration_batches is one batch: pass a list of batches (e.g. [batch]).")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise InputError(f"rounds must be a whole number >= 1, got {rounds!r}.")
    sparse_args = sparse_args if sparse_args is not None else SparseArgs.filled()
    if sparse_args.prune:
        raise InputError("Healing fine-tunes the slim model without pruning: pass SparseArgs.filled(...) (prune=False).")
    teacher = teacher_model if teacher_model is not None else model
    calibration = list(calibration_batches)
    target = prune_args.flops_budget if prune_args.flops_budget is not None else prune_args.latency_budget
    budget = target ** (1.0 / rounds)
    budget_field = "flops_budget" if prune_args.flops_budget is not None else "latency_budget"
    step_args = dataclasses.replace(prune_args, **{budget_field: budget})
    trainable = {name: parameter.requires_grad for name, parameter in teacher.named_parameters()}
    was_training = teacher.training
    current, records = model, []
    try:
        for index in range(1, rounds + 1):
            pruned = post_training_prune(current, calibration, step_args)
            slim = pruned.model.train()
            round_args = training_args
            if rounds > 1:
                round_args = dataclasses.replace(
                    training_args, output_dir=os.path.join(training_args.output_dir, f"round-{index}")
                )
            trainer = SparseTrainer(model=slim, args=round_args, train_dataset=train_dataset, sparse_args=sparse_args,
                                    teacher_model=teacher, **trainer_kwargs)
            evaluating = trainer.eval_dataset is not None
            before = trainer.evaluate() if evaluating else {}
            trained = trainer.train()
            after = trainer.evaluate() if evaluating else {}
            records.append(HealRound(budget, pruned.search, slim.slim_report, before, after, dict(trained.metrics),
                                     trained.global_step))
            current = trainer.model
    finally:
        # The trainer freezes its teacher and puts it in eval mode; the caller's model gets both back.
        for name, parameter in teacher.named_parameters():
            parameter.requires_grad_(trainable[name])
        teacher.train(was_training)
    return HealResult(model=current.eval(), rounds=records)
