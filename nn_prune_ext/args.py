"""`SparseArgs`: every knob of pruning while fine-tuning, as command-line-ready dataclass fields.

Field names follow nn_pruning's `SparseTrainingArguments` wherever the meaning is the same, so
an nn_pruning command line mostly carries over; docs/migration.md lists the differences.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .scores.methods import PruningMethod, get_pruning_method
from .validation import InputError, check_fields, check_instance, check_real, check_whole, refuse_unknown_keywords

__all__ = ["SparseArgs", "ATTENTION_GRANULARITIES", "DENSE_GRANULARITIES", "REGULARIZATIONS", "require_sparse_args"]

ATTENTION_GRANULARITIES = ("block", "row", "col", "head")
DENSE_GRANULARITIES = ("block", "row", "col", "unit")
REGULARIZATIONS = ("disabled", "l1", "l0")
# nn_pruning spelled "FFN rows shared with the down projection's columns" as a method suffix.
_NN_PRUNING_DENSE_SUFFIXES = {"1d_alt": "unit"}


@refuse_unknown_keywords  # a misspelled field would otherwise be Python's bare TypeError
@dataclass
class SparseArgs:
    """Arguments of movement pruning while fine-tuning.

    Thresholds follow a cubic schedule from `initial_threshold` to `final_threshold`, held at
    the initial value for `initial_warmup` and at the final one for the last `final_warmup`
    optimizer steps. Their meaning depends on the method: the kept fraction for `topK` and
    `magnitude`, a bound on `sigmoid(score)` for `sigmoied_threshold`, a bound on the raw score
    for `threshold`; `l0` ignores them and is driven by the L0 penalty.
    """

    prune: bool = field(
        default=True,
        metadata={
            "help": "Prune while training. False fine-tunes the model as it is, optionally distilling from a "
            "teacher: the 'filled' stage that fine-tunes a slimmed model again (see SparseArgs.filled)."
        },
    )
    mask_scores_learning_rate: float = field(
        default=1e-2, metadata={"help": "Learning rate of the mask scores (their own optimizer group, no weight decay)."}
    )
    dense_pruning_method: str = field(
        default="topK",
        metadata={
            "help": "Pruning method of the FFN linears: topK, threshold, sigmoied_threshold, magnitude or l0. "
            "nn_pruning's 'sigmoied_threshold:1d_alt' is accepted and sets dense_granularity='unit'."
        },
    )
    attention_pruning_method: str = field(
        default="topK",
        metadata={"help": "Pruning method of the attention linears: topK, threshold, sigmoied_threshold, magnitude or l0."},
    )
    attention_granularity: str = field(
        default="block",
        metadata={
            "help": "What one attention score covers: 'block' (attention_block_rows x attention_block_cols of q/k/v, "
            "transposed for the output projection), 'row', 'col', or 'head' (a whole head of q/k/v/o)."
        },
    )
    dense_granularity: str = field(
        default="block",
        metadata={
            "help": "What one FFN score covers: 'block' (dense_block_rows x dense_block_cols of the up projection, "
            "transposed for the down projection), 'row', 'col', or 'unit' (an FFN unit: a row of up/gate and the "
            "matching column of down, sharing one score)."
        },
    )
    attention_output_with_dense: bool = field(
        default=False,
        metadata={"help": "Prune the attention output projection with the dense method and block size."},
    )
    shared_qkv_scores: bool = field(
        default=False,
        metadata={"help": "One score grid shared by q, k and v (block/row/col granularity, same shapes only)."},
    )
    bias_mask: bool = field(
        default=True,
        metadata={"help": "Also mask the bias of linears whose mask covers whole rows, so pruned rows output 0."},
    )
    dense_block_rows: int = field(default=1, metadata={"help": "Block rows of the FFN up projection."})
    dense_block_cols: int = field(default=1, metadata={"help": "Block columns of the FFN up projection."})
    attention_block_rows: int = field(default=1, metadata={"help": "Block rows of the q/k/v projections."})
    attention_block_cols: int = field(default=1, metadata={"help": "Block columns of the q/k/v projections."})
    initial_threshold: float = field(default=1.0, metadata={"help": "Threshold at the start of the schedule."})
    final_threshold: float = field(default=0.5, metadata={"help": "Threshold at the end of the schedule."})
    attention_final_threshold: float | None = field(
        default=None,
        metadata={
            "help": "Final threshold of the attention linears when it differs from the FFN's (e.g. different "
            "target sparsities with topK); None: final_threshold. Both move on the same cubic schedule."
        },
    )
    initial_warmup: float = field(
        default=0.1,
        metadata={
            "help": "Optimizer steps held at initial_threshold before the cubic schedule starts: a whole number >= 1 "
            "is a step count, a value in [0, 1) a fraction of all training steps. Independent of warmup_steps."
        },
    )
    final_warmup: float = field(
        default=0.2,
        metadata={"help": "Last optimizer steps held at final_threshold, as steps (>= 1) or a fraction (< 1)."},
    )
    regularization: str = field(
        default="disabled",
        metadata={"help": "Penalty on the scores: 'disabled', 'l1' (of sigmoid(scores) for sigmoied_threshold) or 'l0'."},
    )
    regularization_final_lambda: float = field(
        default=0.0,
        metadata={"help": "Penalty weight at the end of the schedule; it rises with the threshold's cubic progress."},
    )
    attention_lambda: float = field(default=1.0, metadata={"help": "Multiplier of the attention scores' penalty."})
    dense_lambda: float = field(default=1.0, metadata={"help": "Multiplier of the FFN scores' penalty."})
    eval_with_current_patch_params: bool = field(
        default=False,
        metadata={"help": "Evaluate with the current threshold instead of final_threshold."},
    )
    distil_teacher_name_or_path: str | None = field(
        default=None, metadata={"help": "Teacher model (path or Hub id) for distillation; none by default."}
    )
    distil_alpha_ce: float = field(default=0.5, metadata={"help": "Weight of the task loss under distillation."})
    distil_alpha_teacher: float = field(default=0.5, metadata={"help": "Weight of the distillation loss."})
    distil_temperature: float = field(default=2.0, metadata={"help": "Softmax temperature of the distillation loss."})
    skip_non_finite_steps: bool = field(
        default=False,
        metadata={
            "help": "Skip an optimizer step whose loss or mask-score gradients are NaN or infinite (as mixed "
            "precision's loss scaling does) instead of stopping training with an error naming the step."
        },
    )

    def __post_init__(self):
        check_fields(self)  # before the method name is parsed: None or a number has no partition()
        method, _, suffix = self.dense_pruning_method.partition(":")
        if suffix:
            if suffix not in _NN_PRUNING_DENSE_SUFFIXES:
                raise InputError(
                    f"Unknown suffix {suffix!r} in dense_pruning_method={self.dense_pruning_method!r}; nn_pruning's "
                    f"'1d_alt' is the one supported. Prefer dense_granularity='unit'."
                )
            self.dense_pruning_method = method
            self.dense_granularity = _NN_PRUNING_DENSE_SUFFIXES[suffix]
        self.validate()

    # ----- derived views ---------------------------------------------------------------
    @property
    def attention_method(self) -> PruningMethod:
        return get_pruning_method(self.attention_pruning_method)

    @property
    def dense_method(self) -> PruningMethod:
        return get_pruning_method(self.dense_pruning_method)

    def methods_in_use(self) -> dict[str, PruningMethod]:
        return {"attention_pruning_method": self.attention_method, "dense_pruning_method": self.dense_method}

    # ----- validation ------------------------------------------------------------------
    def validate(self) -> None:
        """Check the arguments together; raises `ValueError` (`InputError` for a non-finite or non-numeric
        value) naming the fix."""
        check_fields(self)
        methods = self.methods_in_use()  # raises on unknown method names
        _check_choice("attention_granularity", self.attention_granularity, ATTENTION_GRANULARITIES)
        _check_choice("dense_granularity", self.dense_granularity, DENSE_GRANULARITIES)
        _check_choice("regularization", self.regularization, REGULARIZATIONS)
        for name in ("dense_block_rows", "dense_block_cols", "attention_block_rows", "attention_block_cols"):
            value = getattr(self, name)
            if value < 1:  # (a whole number: check_fields)
                raise InputError(f"{name} must be a positive integer, got {value!r}.")
        for arg_name, method in methods.items():
            names = ["initial_threshold", "final_threshold"]
            if arg_name == "attention_pruning_method" and self.attention_final_threshold is not None:
                names[1] = "attention_final_threshold"
            for threshold_name in names:
                method.check_threshold(getattr(self, threshold_name), f"{threshold_name} (with {arg_name}={method.name})")
            # Unbounded methods (threshold, l0) take any finite threshold, but the schedule interpolates between
            # the two: 1e308 and -1e308 are finite, their difference is not, and every threshold would be NaN.
            if not math.isfinite(float(getattr(self, names[1])) - float(self.initial_threshold)):
                raise InputError(
                    f"{names[1]}={getattr(self, names[1])} and initial_threshold={self.initial_threshold} are too far "
                    "apart for the schedule to move between them (their difference overflows a float): use "
                    f"thresholds on the scale of the scores of {arg_name}={method.name!r}."
                )
            if self.regularization not in method.regularizations:
                raise InputError(
                    f"regularization={self.regularization!r} does not apply to {arg_name}={method.name!r}; "
                    f"use one of {method.regularizations}."
                )
        if self.attention_output_with_dense and self.dense_granularity == "unit":
            raise InputError(
                "attention_output_with_dense=True prunes the attention output like an FFN matrix, which has no FFN "
                "units: set dense_granularity to 'block', 'row' or 'col', or attention_output_with_dense=False."
            )
        for name in ("initial_warmup", "final_warmup"):
            value = getattr(self, name)
            if value < 0 or (value >= 1 and not float(value).is_integer()):
                raise InputError(
                    f"{name}={value} is neither a fraction of training in [0, 1) nor a whole number of steps >= 1."
                )
        for name in ("regularization_final_lambda", "attention_lambda", "dense_lambda", "mask_scores_learning_rate"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.distil_alpha_ce < 0 or self.distil_alpha_teacher < 0 or self.distil_alpha_ce + self.distil_alpha_teacher == 0:
            raise InputError("distil_alpha_ce and distil_alpha_teacher must be >= 0 and not both 0.")
        if not self.distil_temperature > 0:
            raise InputError(f"distil_temperature must be > 0, got {self.distil_temperature}.")

    def final_thresholds(self) -> tuple[float, float]:
        """The final `(attention, FFN)` thresholds."""
        attention = self.final_threshold if self.attention_final_threshold is None else self.attention_final_threshold
        return attention, self.final_threshold

    def warmup_steps(self, total_steps: int) -> tuple[int, int]:
        """Resolve `initial_warmup` and `final_warmup` to step counts for a run of `total_steps`.

        Args:
            total_steps: Optimizer steps of the whole run (a whole number >= 1).

        Returns:
            The `(initial, final)` warmup steps.

        Raises:
            InputError: If `total_steps` is not a whole number >= 1 (0 would silently give no warmup).
        """
        total_steps = check_whole(total_steps, "SparseArgs.warmup_steps(total_steps=...)", 1)
        return _to_steps(self.initial_warmup, total_steps), _to_steps(self.final_warmup, total_steps)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ----- presets ---------------------------------------------------------------------
    @classmethod
    def hybrid(cls, regularization_final_lambda: float = 10.0, **overrides: Any) -> "SparseArgs":
        """nn_pruning's hybrid setup: 32x32 attention blocks, FFN units, sigmoied threshold, L1.

        Args:
            regularization_final_lambda: Final weight of the L1 penalty; larger prunes more.
            **overrides: Any other `SparseArgs` field.
        """
        settings = dict(
            attention_pruning_method="sigmoied_threshold",
            dense_pruning_method="sigmoied_threshold",
            attention_granularity="block",
            attention_block_rows=32,
            attention_block_cols=32,
            dense_granularity="unit",
            attention_output_with_dense=False,
            initial_threshold=0.0,
            final_threshold=0.1,
            regularization="l1",
            regularization_final_lambda=regularization_final_lambda,
        )
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def filled(cls, distil_teacher_name_or_path: str | None = None, **overrides: Any) -> "SparseArgs":
        """nn_pruning's "filled" stage: fine-tune a slim model again, without pruning, with distillation.

        Use it on the output of `optimize_model`, with the dense fine-tuned model as the teacher
        (`SparseTrainer(..., teacher_model=dense)` or `distil_teacher_name_or_path`). The heads and
        FFN units the slim model kept are trained, nothing more is removed, and checkpoints stay
        slim checkpoints.

        Args:
            distil_teacher_name_or_path: The teacher to load, unless `teacher_model` is given to
                the trainer.
            **overrides: Any other `SparseArgs` field (`distil_alpha_teacher`, `distil_temperature`...).
        """
        settings: dict[str, Any] = dict(
            prune=False, regularization="disabled", distil_teacher_name_or_path=distil_teacher_name_or_path
        )
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def struct(cls, regularization_final_lambda: float = 10.0, **overrides: Any) -> "SparseArgs":
        """Fully structured pruning: whole attention heads and FFN units, sigmoied threshold, L1.

        Args:
            regularization_final_lambda: Final weight of the L1 penalty; larger prunes more.
            **overrides: Any other `SparseArgs` field.
        """
        settings = dict(attention_granularity="head")
        settings.update(overrides)
        return cls.hybrid(regularization_final_lambda, **settings)

    @classmethod
    def auto_slim(
        cls, ffn2_sparsity: float | None = None, mha_sparsity: float | None = None, **overrides: Any
    ) -> "SparseArgs":
        """Intel Neural Compressor's auto-slim from target sparsities: FFN units and whole heads, topK.

        The second FFN projection loses `ffn2_sparsity` of its input columns (FFN units, which
        takes the matching rows of the first projection with them) and every layer loses
        `mha_sparsity` of its attention heads. Both are pruned by movement scores with topK (the
        threshold is the kept fraction) on a cubic schedule from keeping everything to keeping
        `1 - sparsity`, without a penalty. Per layer topK keeps `floor((1 - sparsity) * n)` of
        `n` heads or units. Under grouped-query attention query heads and key/value heads are
        ranked separately (each keeps that fraction), and a query head whose key/value head is
        removed goes with it, so more than `mha_sparsity` of the heads can go. Slim the trained
        model with `optimize_model`.

        The two thresholds move on one cubic schedule to their own final values
        (`final_threshold` for the FFN, `attention_final_threshold` for the heads); a sparsity
        of 0 or `None` leaves that part whole.

        Args:
            ffn2_sparsity: Fraction of FFN units to remove, in [0, 1).
            mha_sparsity: Fraction of attention heads to remove, in [0, 1).
            **overrides: Any other `SparseArgs` field (warmups, `mask_scores_learning_rate`...).

        Raises:
            InputError: For a sparsity that is not a number in [0, 1), or no sparsity above 0.
        """
        sparsities = {"ffn2_sparsity": ffn2_sparsity, "mha_sparsity": mha_sparsity}
        for name, value in sparsities.items():
            check_real(value, f"SparseArgs.auto_slim({name}=...)", optional=True)  # text would be a TypeError below
            if value is not None and not 0.0 <= value < 1.0:
                raise InputError(
                    f"{name}={value} is not a fraction in [0, 1): it is the share of "
                    f"{'FFN units' if name == 'ffn2_sparsity' else 'attention heads'} to remove."
                )
        if not any(sparsities.values()):
            raise InputError(
                "auto_slim got no sparsity to prune to: pass ffn2_sparsity and mha_sparsity in (0, 1), "
                "e.g. SparseArgs.auto_slim(ffn2_sparsity=0.5, mha_sparsity=0.5)."
            )
        settings = dict(
            attention_pruning_method="topK",
            dense_pruning_method="topK",
            attention_granularity="head",
            dense_granularity="unit",
            attention_output_with_dense=False,
            initial_threshold=1.0,
            # topK's threshold is the kept fraction; 1.0 keeps a part whole.
            final_threshold=1.0 - (ffn2_sparsity or 0.0),
            attention_final_threshold=1.0 - (mha_sparsity or 0.0),
            regularization="disabled",
            regularization_final_lambda=0.0,
        )
        settings.update(overrides)
        return cls(**settings)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"{name}={value!r} is not one of {', '.join(choices)}.")


def _to_steps(value: float, total_steps: int) -> int:
    if value < 1:
        return int(math.floor(value * total_steps))
    return int(value)


def require_sparse_args(value: Any, name: str) -> SparseArgs:
    """`value` if it is a `SparseArgs`, else an `InputError` naming `name` and how to build one."""
    return check_instance(value, SparseArgs, name, hint="build one with SparseArgs(...) or a preset such as SparseArgs.hybrid()")
