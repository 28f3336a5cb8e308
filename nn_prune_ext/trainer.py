"""`SparseTrainer`: `transformers.Trainer` that prunes while it fine-tunes.

Replace `Trainer` with `SparseTrainer` and add `sparse_args`; nothing else changes. The
trainer patches the model (unless it is patched already), wraps the optimizer in a
`ScoreOptimizer`, moves the threshold along its schedule once per optimizer step, evaluates
with the final threshold, optionally distils from a teacher, and logs density, threshold,
penalty and distillation losses through the Trainer's own logging.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
from typing import Any, Iterable, Iterator

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import Trainer, TrainerCallback

from .args import SparseArgs, require_sparse_args
from .atomic_files import atomic_path
from .distill import distillation_loss
from .non_finite import NonFiniteGuard
from .optim import ScoreOptimizer, find_score_optimizer
from .patch import densities, is_patched, iter_mask_scores, patch_model, set_thresholds
from .schedule import SparsitySchedule
from .scores.methods import get_pruning_method
from .slim.classes import stock_class
from .sparse_state import SPARSE_STATE_NAME, read_sparse_state, saved_sparse_args, write_sparse_state
from .training_checkpoints import (
    TRAINER_STATE_NAME,
    check_resumable,
    checkpoint_folder,
    newest_complete_checkpoint,
    publish_checkpoint,
    remove_stale_staging,
    staging_run_dir,
)
from .transformers_internals import loss_is_per_batch_mean, rotate_checkpoints
from .validation import InputError

__all__ = ["SparseTrainer", "SparsityController", "SPARSE_STATE_NAME", "MASK_SCORES_NAME", "too_short_to_prune"]

logger = logging.getLogger(__name__)

# The mask scores under the model's own parameter names. The weights file has them too, but some
# families' save_pretrained writes older key names there (ViT), which only from_pretrained maps back.
MASK_SCORES_NAME = "mask_scores.safetensors"
SCORES_MARKER = ".mask_scores."  # in the state-dict name of every score tensor
# SparseArgs fields a resumed run may change: they do not shape the schedule or the masks (one may switch on
# skipping precisely to get past a bad step).
RESUME_NEUTRAL_FIELDS = frozenset({"skip_non_finite_steps", "eval_with_current_patch_params"})


class SparsityController:
    """Moves a patched model's thresholds along the schedule of `sparse_args`.

    Args:
        sparse_args: The pruning arguments.
    """

    def __init__(self, sparse_args: SparseArgs):
        self.sparse_args = sparse_args
        self.schedule: SparsitySchedule | None = None
        self.step = 0

    def start(self, model: nn.Module, total_steps: int, step: int) -> None:
        """Build the schedule for a run of `total_steps` and apply step `step` (non-zero on resume)."""
        self.schedule = SparsitySchedule.from_args(self.sparse_args, total_steps)
        self.set_step(model, step)

    def threshold(self, step: int | None = None) -> float:
        """The FFN threshold at `step` (default: the current step)."""
        return self.thresholds(step)[1]

    def thresholds(self, step: int | None = None) -> tuple[float, float]:
        """The `(attention, FFN)` thresholds at `step` (default: the current step)."""
        if self.schedule is None:
            return self.sparse_args.initial_threshold, self.sparse_args.initial_threshold
        return self.schedule.thresholds(self.step if step is None else step)

    def set_step(self, model: nn.Module, step: int) -> None:
        self.step = step
        attention, dense = self.thresholds()
        set_thresholds(model, attention=attention, dense=dense)

    def regularization_lambda(self) -> float:
        if self.schedule is None or self.sparse_args.regularization == "disabled":
            return 0.0
        return self.schedule.regularization_lambda(self.step)

    @contextlib.contextmanager
    def evaluation(self, model: nn.Module) -> Iterator[None]:
        """Evaluate with the final threshold, unless `eval_with_current_patch_params`."""
        if self.sparse_args.eval_with_current_patch_params:
            yield
            return
        attention, dense = self.sparse_args.final_thresholds()
        set_thresholds(model, attention=attention, dense=dense)
        try:
            yield
        finally:
            attention, dense = self.thresholds()
            set_thresholds(model, attention=attention, dense=dense)

    def state(self) -> dict[str, Any]:
        """What a checkpoint records of the pruning state (the schedule itself is a function of the step)."""
        return {
            "sparse_args": self.sparse_args.to_dict(),
            "step": self.step,
            "threshold": self.threshold(),
            "attention_threshold": self.thresholds()[0],
            "regularization_lambda": self.regularization_lambda(),
            "total_steps": self.schedule.total_steps if self.schedule else None,
        }


def too_short_to_prune(
    sparse_args: SparseArgs, total_steps: int, kinds: Iterable[str] = ("attention", "dense")
) -> str | None:
    """Why a run of `total_steps` optimizer steps cannot prune anything of `kinds`, or `None` if it can.

    Methods with a learnt threshold (`sigmoied_threshold`, `threshold`, `l0`) mask a structure only once its
    score has moved from where it starts past the final threshold, and Adam moves a score by about
    `mask_scores_learning_rate` per optimizer step at most (exactly that on a first step, less under a
    decaying learning rate). A run shorter than distance / rate steps therefore leaves every score of that
    kind on the kept side: its masks stay full, and `optimize_model` has nothing to remove.

    Args:
        sparse_args: The pruning arguments.
        total_steps: Optimizer steps of the run.
        kinds: The score kinds the model has (`"attention"`, `"dense"`).

    Returns:
        A message naming each kind that cannot be pruned, the steps it needs and the fix; `None` when every
        kind can (or prunes by a kept fraction: `topK`, `magnitude`).
    """
    attention_final, dense_final = sparse_args.final_thresholds()
    settings = {"attention": (sparse_args.attention_pruning_method, attention_final),
                "dense": (sparse_args.dense_pruning_method, dense_final)}
    rate = sparse_args.mask_scores_learning_rate
    kinds = [kind for kind in ("attention", "dense") if kind in set(kinds)]
    short: dict[tuple[str, float, float, float], list[str]] = {}  # (method, threshold, distance, steps) -> kinds
    for kind in kinds:
        name, threshold = settings[kind]
        travel = get_pruning_method(name).score_travel(threshold)
        if not travel:  # None: a kept fraction; 0.0: masked from the start
            continue
        needed = math.inf if rate == 0 else math.ceil(travel / rate)
        if total_steps < needed:
            short.setdefault((name, threshold, travel, needed), []).append(kind)
    if not short:
        return None
    reasons = []
    for (name, threshold, travel, needed), short_kinds in short.items():
        scores = " and ".join("attention" if kind == "attention" else "FFN" for kind in short_kinds)
        target = "" if name == "l0" else f" to the final threshold {threshold:g}"  # l0 ignores the threshold
        steps = "never happens" if math.isinf(needed) else f"takes at least {needed} steps"
        reasons.append(f"the {scores} scores ({name}) must move {travel:.2f} from their start{target} before a "
                       f"structure is masked, which {steps}")
    short_kinds = sum(short.values(), [])
    if len(short_kinds) == len(kinds):
        pruned = "anything"
    else:
        pruned = "the attention" if "attention" in short_kinds else "the FFNs"
    return (f"This run of {total_steps} optimizer steps is too short to prune {pruned}: " + "; ".join(reasons)
            + f", since Adam moves a score by about mask_scores_learning_rate={rate:g} per step at most. Train "
            "longer or raise mask_scores_learning_rate.")


class _SparsityCallback(TrainerCallback):
    def __init__(self, trainer: "SparseTrainer"):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer._check_resumed_state(state.max_steps)
        self.trainer.controller.start(self.trainer.model, state.max_steps, state.global_step)
        kinds = sorted({group.kind for group in iter_mask_scores(self.trainer.model)})
        warning = too_short_to_prune(self.trainer.sparse_args, state.max_steps, kinds)
        if warning:
            logger.warning(warning)

    def on_step_end(self, args, state, control, **kwargs):
        # global_step now names the optimizer step whose forward passes come next.
        self.trainer.controller.set_step(self.trainer.model, state.global_step)


def _write_scores_atomically(path: str, model: nn.Module) -> None:
    scores = {
        name: tensor.detach().cpu().contiguous()
        for name, tensor in model.state_dict(keep_vars=True).items()
        if SCORES_MARKER in name
    }
    with atomic_path(path) as temporary:
        save_file(scores, temporary)


class SparseTrainer(Trainer):
    """A `transformers.Trainer` that prunes the model while fine-tuning it.

    Args:
        model: As for `Trainer`; patched in place unless already patched.
        args: The `TrainingArguments`.
        *trainer_args: The other positional arguments of `Trainer`.
        sparse_args: The pruning arguments (`SparseArgs()` defaults when omitted).
        teacher_model: A teacher for distillation; otherwise `sparse_args.distil_teacher_name_or_path`
            is loaded with the student's class, if set.
        **trainer_kwargs: The other keyword arguments of `Trainer` (`model_init` included).
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        args=None,
        *trainer_args,
        sparse_args: SparseArgs | None = None,
        teacher_model: nn.Module | None = None,
        **trainer_kwargs,
    ):
        if sparse_args is not None:
            require_sparse_args(sparse_args, "sparse_args")
        self.sparse_args = sparse_args if sparse_args is not None else SparseArgs()
        self.sparse_args.validate()
        self.controller = SparsityController(self.sparse_args)
        self.teacher = teacher_model
        self._distil_sums: dict[str, torch.Tensor | int] = {}  # running sums since the last log, and their count
        self._score_optimizer: ScoreOptimizer | None = None
        self._staging_run_dir: str | None = None  # set while a checkpoint is written
        if model is not None:
            self._prepare_student(model)
        super().__init__(model, args, *trainer_args, **trainer_kwargs)
        # The trained model, or a wrapper around it: the guard only looks for the scores inside, and
        # unwrapping at every step would cost more than its checks.
        self.non_finite_guard = NonFiniteGuard(lambda: self.model,
                                               skip_steps=self.sparse_args.skip_non_finite_steps)
        self.add_callback(self.non_finite_guard)
        if self.sparse_args.prune:
            self.add_callback(_SparsityCallback(self))
        if self.teacher is not None:
            self._place_teacher()

    # ----- resuming ----------------------------------------------------------------------
    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        """`Trainer.train`; `resume_from_checkpoint=True` takes the newest *complete* checkpoint.

        Staging folders of checkpoints that a killed run was writing are removed first.
        """
        if self.args.should_save:
            for folder in remove_stale_staging(self.args.output_dir):
                logger.warning("Removed %s, a checkpoint that a stopped run did not finish writing.", folder)
        if resume_from_checkpoint is True:
            resume_from_checkpoint = self._newest_complete_checkpoint()
        elif isinstance(resume_from_checkpoint, (str, os.PathLike)):
            resume_from_checkpoint = os.fspath(resume_from_checkpoint)
            check_resumable(resume_from_checkpoint)
        self._resumed_from = resume_from_checkpoint
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _newest_complete_checkpoint(self) -> str:
        found, passed_over = newest_complete_checkpoint(self.args.output_dir)
        for folder, reason in passed_over.items():
            logger.warning("Not resuming from %s: %s.", folder, reason)
        if found is None:
            raise InputError(
                f"resume_from_checkpoint=True, but {self.args.output_dir} holds no complete checkpoint-N folder"
                + (f" ({len(passed_over)} incomplete)" if passed_over else "")
                + ". Start without resume_from_checkpoint, or give the checkpoint folder."
            )
        return found

    def _check_resumed_state(self, total_steps: int) -> None:
        """Refuse to resume a checkpoint whose pruning schedule differs from this run's."""
        folder = getattr(self, "_resumed_from", None)
        path = os.path.join(folder, SPARSE_STATE_NAME) if isinstance(folder, str) else None
        if path is None or not os.path.isfile(path):
            return
        saved = read_sparse_state(path)
        saved_args = saved_sparse_args(saved, path).to_dict()
        differences = [
            f"{key}: checkpoint {saved_args[key]!r}, now {value!r}"
            for key, value in self.sparse_args.to_dict().items()
            if key not in RESUME_NEUTRAL_FIELDS and saved_args[key] != value
        ]
        if saved.get("total_steps") not in (None, total_steps):
            differences.append(f"total optimizer steps: checkpoint {saved['total_steps']}, now {total_steps}")
        if differences:
            raise InputError(
                f"Cannot resume from {folder}: its pruning schedule differs from this run's ("
                + "; ".join(differences)
                + "). Resume with the original sparse_args and training length, or start without "
                "resume_from_checkpoint."
            )

    # ----- model set-up ----------------------------------------------------------------
    def _prepare_student(self, model: nn.Module) -> None:
        if not self.sparse_args.prune and is_patched(model):
            raise ValueError(
                "sparse_args.prune is False but the model is patched for pruning: slim it first with "
                "nn_prune_ext.optimize_model (or bake_model), then fine-tune the result."
            )
        if self.sparse_args.prune and not is_patched(model):
            patch_model(model, self.sparse_args)
        if self.teacher is None and self.sparse_args.distil_teacher_name_or_path:
            # A slim student's teacher is usually the dense model: load it with the stock class.
            self.teacher = stock_class(type(model)).from_pretrained(self.sparse_args.distil_teacher_name_or_path)

    def _place_teacher(self) -> None:
        self.teacher.to(self.args.device).eval()
        self.teacher.requires_grad_(False)
        loss_is_per_batch_mean(self)  # compute_loss returns per-batch means when distilling

    def call_model_init(self, trial=None) -> nn.Module:
        model = super().call_model_init(trial)
        self._prepare_student(model)
        if self.teacher is not None and hasattr(self, "args"):
            self._place_teacher()
        return model

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        optimizer = self._create_score_optimizer(model)
        if self.sparse_args.skip_non_finite_steps:
            self.non_finite_guard.install(optimizer)
        return optimizer

    def _create_score_optimizer(self, model=None) -> torch.optim.Optimizer:
        super().create_optimizer(model)
        if not self.sparse_args.prune:
            return self.optimizer
        # A second train() finds accelerate's wrapper around the ScoreOptimizer of the first.
        existing = find_score_optimizer(self.optimizer)
        if existing is not None:
            self.optimizer = existing
        else:
            if self.lr_scheduler is not None:
                raise ValueError(
                    "SparseTrainer adds a parameter group for the mask scores to your optimizer, after which the "
                    "scheduler you passed no longer matches it. Pass optimizers=(optimizer, None) and let the "
                    "Trainer build the scheduler, or wrap the optimizer yourself in nn_prune_ext.ScoreOptimizer "
                    "before building the scheduler."
                )
            self.optimizer = ScoreOptimizer(
                self.optimizer,
                list(iter_mask_scores(self.model if model is None else model)),
                learning_rate=self.sparse_args.mask_scores_learning_rate,
                regularization_lambda=self.controller.regularization_lambda,
                kind_multipliers={
                    "attention": self.sparse_args.attention_lambda,
                    "dense": self.sparse_args.dense_lambda,
                },
            )
        self._score_optimizer = self.optimizer
        return self.optimizer

    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.non_finite_guard.check_loss(loss, self.state.global_step + 1)
        return loss

    # ----- loss ------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.teacher is None or not model.training:
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        # Both terms are per-batch means: the task loss is asked without `num_items_in_batch`
        # (whether a model honours it cannot be told from outside), and the Trainer knows it
        # (`loss_is_per_batch_mean`, with the teacher), so it divides the sum for gradient accumulation.
        task_loss, outputs = super().compute_loss(model, dict(inputs), return_outputs=True, num_items_in_batch=None)
        with torch.no_grad():
            teacher_outputs = self.teacher(**{key: value for key, value in inputs.items() if key != "labels"})
        distil = distillation_loss(
            outputs, teacher_outputs, self.sparse_args.distil_temperature, inputs.get("attention_mask")
        )
        loss = self.sparse_args.distil_alpha_ce * task_loss + self.sparse_args.distil_alpha_teacher * distil
        for name, value in (("distil_loss", distil), ("task_loss", task_loss)):
            self._distil_sums[name] = self._distil_sums.get(name, 0.0) + value.detach()
        self._distil_sums["count"] = self._distil_sums.get("count", 0) + 1
        return (loss, outputs) if return_outputs else loss

    # ----- evaluation and logging ----------------------------------------------------
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """`Trainer._save`, plus `sparse_state.json` beside a patched model's weights.

        Every save goes through here (`save_model`, checkpoints, `push_to_hub`), before any upload,
        so every saved folder of a patched model is one `load_for_slimming` and
        `nn-prune optimize` accept.
        """
        super()._save(output_dir, state_dict)
        if self.args.should_save and is_patched(self.model):
            folder = output_dir if output_dir is not None else self.args.output_dir
            _write_scores_atomically(os.path.join(folder, MASK_SCORES_NAME), self.accelerator.unwrap_model(self.model))
            write_sparse_state(folder, self.controller.state())

    # ----- checkpoints that appear complete or not at all --------------------------------
    def _get_output_dir(self, trial) -> str:
        # While a checkpoint is written, the Trainer's run folder is its staging folder (see _save_checkpoint).
        return self._staging_run_dir if self._staging_run_dir is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        """`Trainer._save_checkpoint`, written to a staging folder and renamed to `checkpoint-N` when complete.

        Every process writes its part (the main one the model and trainer state, each one its RNG state)
        under the staging folder; after all have, the saving process renames it into place and only then
        rotates old checkpoints, so a kill at any moment leaves the newest complete checkpoint resumable.
        """
        run_dir = super()._get_output_dir(trial)
        staging = staging_run_dir(run_dir, self.state.global_step)
        final = os.path.join(run_dir, checkpoint_folder(self.state.global_step))
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)  # left by a killed run that saved this step
        self.accelerator.wait_for_everyone()
        self._staging_run_dir = staging
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_run_dir = None
        self.accelerator.wait_for_everyone()
        staged = os.path.join(staging, os.path.basename(final))
        # The Trainer named the best checkpoint by where it was written; every process keeps the published name.
        best = self.state.best_model_checkpoint
        renamed_best = best is not None and os.path.dirname(os.path.abspath(best)) == os.path.abspath(staging)
        if renamed_best:
            self.state.best_model_checkpoint = os.path.join(run_dir, os.path.basename(best))
        if self.args.should_save:
            if not os.path.isfile(os.path.join(staged, TRAINER_STATE_NAME)):
                raise RuntimeError(
                    f"Trainer._save_checkpoint wrote no {TRAINER_STATE_NAME} under {staged}: transformers no longer "
                    "writes checkpoints under Trainer._get_output_dir (see nn_prune_ext/transformers_internals.py)."
                )
            if renamed_best:
                self.state.save_to_json(os.path.join(staged, TRAINER_STATE_NAME))
            publish_checkpoint(staging, final)
            rotate_checkpoints(run_dir, self.args.save_total_limit, self.state.best_model_checkpoint)
        self.accelerator.wait_for_everyone()

    def evaluation_loop(self, *args, **kwargs):
        if not self.sparse_args.prune:
            return super().evaluation_loop(*args, **kwargs)
        with self.controller.evaluation(self.model):
            return super().evaluation_loop(*args, **kwargs)

    def _density_metrics(self) -> dict[str, float]:
        return {f"density_{kind}": value for kind, value in densities(self.model).items()}

    def evaluation_density(self) -> dict[str, float]:
        """Density per kind under the thresholds that evaluation uses."""
        with self.controller.evaluation(self.model):
            return self._density_metrics()

    def sparsity_metrics(self) -> dict[str, float]:
        """Density per kind, threshold, penalty weight and last penalty, for the training logs."""
        metrics = self._density_metrics()
        attention, dense = self.controller.thresholds()
        metrics["threshold"] = dense
        if self.sparse_args.attention_final_threshold is not None:
            metrics["attention_threshold"] = attention
        metrics["regularization_lambda"] = self.controller.regularization_lambda()
        if self._score_optimizer is not None and self._score_optimizer.last_penalty is not None:
            metrics["regularization_penalty"] = float(self._score_optimizer.last_penalty)
        return metrics

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if is_patched(self.model):
            prefix = next((key.split("_", 1)[0] for key in logs if key.startswith(("eval_", "test_"))), None)
            if prefix is None:
                logs.update(self.sparsity_metrics())
            else:
                # Evaluation metrics: the density the evaluation ran with, under the metric prefix.
                logs.update({f"{prefix}_{key}": value for key, value in self.evaluation_density().items()})
        if self.non_finite_guard.skipped_steps and not any(key.startswith(("eval_", "test_")) for key in logs):
            logs["non_finite_steps_skipped"] = self.non_finite_guard.skipped_steps
        count = self._distil_sums.pop("count", 0)
        if count:
            for name in ("distil_loss", "task_loss"):
                logs[name] = float(self._distil_sums.pop(name)) / count
        super().log(logs, start_time)
