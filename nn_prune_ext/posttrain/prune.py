"""`post_training_prune`: Fisher mask search, rearrangement and tuning in one call, then slimming.

```python
from nn_prune_ext.posttrain import PostTrainingArgs, post_training_prune

result = post_training_prune(model, batches, PostTrainingArgs(flops_budget=0.6))
result.model.save_pretrained("slim")   # a slim checkpoint like any other
print(result)                          # kept sizes, cost, reconstruction errors, time per stage
```
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from ..arch import check_batch, get_layout, tokens_per_example
from ..flops import dense_layer_shapes, kept_layer_shapes, model_flops
from ..importance import collect_mask_gradients, to_device
from ..masks import StructureMasks
from ..slim import prune_with_masks
from ..patch import require_unpatched
from .costs import CostModel, FlopsCost
from .batches import check_batch_shapes, read_batches
from .latency import LatencyTable, measure_latency_table
from .rearrange import rearrange_masks
from .search import SearchResult, dense_cost, search_masks
from .tune import TuningResult, tune_masks
from .units import GRANULARITIES, PruningUnits, UnitGradients
from ..validation import InputError, NonFiniteError, check_fields, check_instance, first_non_finite, refuse_unknown_keywords, settings_with

__all__ = ["PostTrainingArgs", "PostTrainingResult", "post_training_prune", "mean_sequence_length", "with_labels"]

LATENCY_MODELS = ("table", "work")


@refuse_unknown_keywords  # a misspelled budget would otherwise be Python's bare TypeError
@dataclass
class PostTrainingArgs:
    """Settings of post-training pruning (Kwon et al. 2022). Give one budget: FLOPs or latency."""

    flops_budget: float | None = field(
        default=None,
        metadata={"help": "Keep at most this fraction of the input model's transformer-layer FLOPs (e.g. 0.6), "
                  "counted at the calibration data's mean sequence length (a slim input is pruned further: the "
                  "fraction is of its own FLOPs, not of the dense model's)."},
    )
    latency_budget: float | None = field(
        default=None,
        metadata={"help": "Keep at most this fraction of the input model's layer latency, from a lookup table "
                  "measured on the current device (e.g. 0.5)."},
    )
    head_granularity: str = field(
        default="head",
        metadata={"help": "'head' prunes query heads one by one; 'group' prunes whole key/value groups "
                  "(grouped-query attention: no padding heads in the slim model). Same thing without GQA."},
    )
    rearrange: bool = field(
        default=True, metadata={"help": "Rearrange the searched masks inside each layer (per-batch gradients)."}
    )
    tune: bool = field(
        default=True,
        metadata={"help": "Fit per-head and per-unit scales by least squares against the dense model's layer "
                  "outputs and fold them into the weights."},
    )
    max_tune_scale: float = field(
        default=10.0, metadata={"help": "Reject a layer's tuning when a fitted scale exceeds this in magnitude."}
    )
    max_batches: int | None = field(
        default=None, metadata={"help": "Use at most this many calibration batches (default: all)."}
    )
    latency_batch_size: int = field(
        default=8, metadata={"help": "Batch size at which the latency lookup table is measured."}
    )
    latency_model: str = field(
        default="table",
        metadata={"help": "What a latency budget is counted with: 'table' (one layer timed at every head count and a "
                  "grid of FFN widths, Kwon et al.) or 'work' (the speed model: all of a layer's work, fixed costs "
                  "included, with rates fitted on this device; nn_prune_ext.speed)."},
    )

    def __post_init__(self):
        check_fields(self)
        budgets = {name: getattr(self, name) for name in ("flops_budget", "latency_budget")}
        given = [(name, value) for name, value in budgets.items() if value is not None]
        if len(given) != 1:
            raise InputError(
                "Give exactly one budget: flops_budget (a fraction of the dense FLOPs) or latency_budget (a fraction "
                f"of the dense latency); got flops_budget={self.flops_budget}, latency_budget={self.latency_budget}."
            )
        ((name, budget),) = given
        if not 0 < budget <= 1:
            raise InputError(
                f"PostTrainingArgs.{name} is a fraction of the dense model's cost in (0, 1]; got {budget} (a budget "
                "of 0 would remove every head and FFN unit). Pass e.g. 0.6."
            )
        if self.head_granularity not in GRANULARITIES:
            raise InputError(f"head_granularity must be one of {', '.join(GRANULARITIES)}, got {self.head_granularity!r}.")
        if self.max_tune_scale <= 0:
            raise InputError(f"max_tune_scale must be positive, got {self.max_tune_scale}.")
        if self.max_batches is not None and self.max_batches < 1:
            raise InputError(f"max_batches must be at least 1 (or None for all batches), got {self.max_batches}.")
        if self.latency_model not in LATENCY_MODELS:
            raise InputError(f"latency_model must be one of {', '.join(LATENCY_MODELS)}, got {self.latency_model!r}.")
        if self.latency_batch_size < 1:
            raise InputError(f"latency_batch_size must be at least 1, got {self.latency_batch_size}.")


@dataclass
class PostTrainingResult:
    """What `post_training_prune` produced.

    Args:
        model: The slim model (from `optimize_model`, with its `slim_report`).
        masks: The final masks (tuned scales included) on the input model.
        search: The search's masks (before rearrangement and tuning), cost and budget.
        tuning: The per-layer reconstruction errors, or `None` without tuning.
        seq_len: The sequence length FLOPs were counted at.
        stage_seconds: Wall-clock seconds of each stage.
    """

    model: nn.Module
    masks: StructureMasks
    search: SearchResult
    tuning: TuningResult | None
    seq_len: int
    stage_seconds: dict[str, float]

    @property
    def searched_masks(self) -> StructureMasks:
        """The masks the search chose, before rearrangement and tuning."""
        return self.search.masks

    def __str__(self) -> str:
        rows = [str(self.search), f"sequence length for costs: {self.seq_len}"]
        if self.tuning is not None:
            rows.append(str(self.tuning))
        rows.append("seconds per stage: " + ", ".join(f"{k} {v:.2f}" for k, v in self.stage_seconds.items()))
        return "\n".join(rows)


def mean_sequence_length(model: nn.Module, batches: list[Mapping[str, Any]]) -> int:
    """Mean number of real tokens per example (`arch.tokens_per_example`)."""
    tokens = sequences = 0
    for batch in batches:
        batch_tokens, examples = tokens_per_example(model, batch)
        tokens += batch_tokens
        sequences += examples
    if not sequences:
        raise InputError("No calibration batches: pass at least one batch of model inputs.")
    return max(1, round(tokens / sequences))


@torch.no_grad()
def with_labels(model: nn.Module, batch: Mapping[str, Any]) -> dict[str, Any]:
    """`batch` with `labels`: its own, or for unlabelled data the model's own targets.

    A generative model (`model.can_generate()`) predicts its input: labels are the input ids
    (padding ignored). Any other model gets its own predicted class per sequence or token, so
    the gradients are those of the model's confidence in what it predicts.
    """
    if "labels" in batch:
        return dict(batch)
    batch = dict(batch)
    mask = batch.get("attention_mask")
    if getattr(model, "can_generate", lambda: False)():
        labels = batch["input_ids"].clone()
        if mask is not None:
            labels[mask == 0] = -100
        batch["labels"] = labels
        return batch
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # the model's own predictions, without dropout
    try:
        outputs = model(**to_device(batch, device))
    finally:
        model.train(was_training)
    logits = getattr(outputs, "logits", None)
    if logits is None:
        raise InputError(
            "The batches carry no labels and the model returns no logits to predict them from: add `labels` "
            "to the batches (or use a model with a task head)."
        )
    if logits.shape[-1] == 1:
        raise InputError(
            "The batches carry no labels and the model has a single output (regression): its own prediction is "
            "no target. Add `labels` to the batches."
        )
    labels = logits.argmax(dim=-1).cpu()
    if labels.dim() == 2 and mask is not None:
        labels[mask.cpu() == 0] = -100
    batch["labels"] = labels
    return batch


def _cost_model(
    model: nn.Module,
    structure: PruningUnits,
    args: PostTrainingArgs,
    seq_len: int,
    latency_table: LatencyTable | None,
) -> CostModel:
    if args.flops_budget is not None:
        return FlopsCost(shapes=structure.shapes, seq_len=seq_len)
    if args.latency_model == "work":
        from ..speed import calibrate_speed_model  # imported here: nn_prune_ext.speed imports this package

        speed = calibrate_speed_model(model, batch_size=args.latency_batch_size, seq_len=seq_len)
        return speed.layer_cost_model(model)
    table = latency_table or measure_latency_table(model, batch_size=args.latency_batch_size, seq_len=seq_len)
    return table.cost_model()


def _dense_model_cost(model: nn.Module, args: PostTrainingArgs, seq_len: int, input_cost: float) -> float | None:
    """The cost of the dense model `model` comes from, for `SearchResult.dense_model_cost`.

    `input_cost` when `model` is dense (no layer slimmed or dropped); for a slim model under a FLOPs
    budget the FLOPs of the dense layers its config records (`flops.dense_layer_shapes`); `None` for
    a slim model under a latency budget, since the dense model's latency was never measured.
    """
    dense_shapes = dense_layer_shapes(model)
    if kept_layer_shapes(model) == dense_shapes:
        return input_cost
    if args.flops_budget is not None:
        return float(model_flops(dense_shapes, seq_len))
    return None


@torch.no_grad()
def _check_finite_outputs(slim: nn.Module, batch: Mapping[str, Any], args: PostTrainingArgs) -> None:
    """Refuse a slim model whose outputs on calibration batch 0 are not finite (one forward pass).

    The weights were checked finite, and slimming checks the slim model on a made-up probe input;
    real data with fitted scales (or half precision) can still overflow where the probe did not.

    Raises:
        NonFiniteError: Naming the output and the settings to change.
    """
    was_training = slim.training
    slim.eval()
    try:
        outputs = slim(**to_device(batch, next(slim.parameters()).device))
    finally:
        slim.train(was_training)
    name = next((name for name in ("logits", "last_hidden_state") if isinstance(getattr(outputs, name, None), torch.Tensor)), None)
    if name is not None and not bool(torch.isfinite(getattr(outputs, name)).all()):
        raise NonFiniteError(
            f"The pruned model's {name} on calibration batch 0 are NaN or infinite, although the input model's "
            f"weights and loss were finite: retry with {'tune=False or ' if args.tune else ''}a larger budget, or run "
            "the model in float32."
        )


def post_training_prune(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    args: PostTrainingArgs | None = None,
    *,
    latency_table: LatencyTable | None = None,
    **overrides: Any,
) -> PostTrainingResult:
    """Prune a fine-tuned model to a FLOPs or latency budget without retraining, and slim it.

    Stages (Kwon et al. 2022): per-batch mask gradients and their Fisher information, the mask
    search under the budget, rearrangement inside each layer, tuning of the kept heads' and units'
    scales by least squares, and `optimize_model`. The input model is not modified.

    Args:
        model: A fine-tuned, unpatched model of a registered architecture that computes a loss
            from `labels` (sequence classification, causal LM, ...).
        batches: Calibration batches of model inputs (Kwon et al. use about 2K examples); with
            `labels`, or without for the model's own predictions (see `with_labels`).
        args: The settings; keyword `overrides` build or update them (`flops_budget=0.6`).
        latency_table: A latency table measured before (`measure_latency_table`), reused instead
            of measuring one for a latency budget.

    Returns:
        A `PostTrainingResult` with the slim model, the masks and the time of every stage.

    Raises:
        InputError: Before any work, for settings out of range or unknown, no batches, or a batch
            the model cannot take (its input missing, token ids outside the vocabulary, labels
            outside the classes, shapes that disagree).
        NonFiniteError: For a NaN or infinite weight (before any work), a non-finite loss or mask
            gradient (naming the batch), or a pruned model whose outputs are not finite.
    """
    args = settings_with(PostTrainingArgs, args, overrides, "post_training_prune",
                         "pass PostTrainingArgs(flops_budget=...) or the settings as keywords (flops_budget=0.6)")
    check_instance(latency_table, LatencyTable, "post_training_prune: latency_table", optional=True,
                   hint="make one with measure_latency_table")
    require_unpatched(model, "post_training_prune")
    layout = get_layout(model)
    layout.require_removable_heads("post_training_prune (its search trades heads against FFN units)")
    layout.require_prunable_ffn("post_training_prune (its search trades heads against FFN units)")
    if args.tune:
        layout.require_single_stack("post_training_prune's mask tuning", "pass tune=False")
    bad = first_non_finite(model.named_parameters())
    if bad is not None:
        raise NonFiniteError(
            f"The model's {bad} holds NaN or infinite values, so the pruned model would output NaN: reload the "
            "checkpoint (and check how it was trained or converted)."
        )
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    # Every batch is checked before the first forward pass: a bad batch 40 must not cost the 39 before it.
    batches = read_batches(batches, "post_training_prune", args.max_batches)
    for index, batch in enumerate(batches):
        check_batch(model, batch, index)
        check_batch_shapes(model, batch, index)
    batches = [with_labels(model, batch) for batch in batches]
    seq_len = mean_sequence_length(model, batches)
    gradients = collect_mask_gradients(model, batches)
    structure = PruningUnits.for_model(model, args.head_granularity)
    unit_gradients = UnitGradients.from_gradients(gradients, structure)
    head_fisher, unit_fisher = unit_gradients.fisher()
    seconds["gradients"] = time.perf_counter() - start

    start = time.perf_counter()
    cost = _cost_model(model, structure, args, seq_len, latency_table)
    seconds["cost model"] = time.perf_counter() - start  # measuring a latency table, if needed
    start = time.perf_counter()
    fraction = args.flops_budget if args.flops_budget is not None else args.latency_budget
    search = search_masks(head_fisher, unit_fisher, structure, cost, fraction * dense_cost(structure, cost))
    search = replace(search, dense_model_cost=_dense_model_cost(model, args, seq_len, search.dense_cost))
    masks = search.masks
    seconds["search"] = time.perf_counter() - start

    if args.rearrange:
        start = time.perf_counter()
        masks = rearrange_masks(masks, unit_gradients, structure)
        seconds["rearrange"] = time.perf_counter() - start
    tuning = None
    if args.tune:
        start = time.perf_counter()
        tuning = tune_masks(model, masks, batches, max_scale=args.max_tune_scale)
        masks = tuning.masks
        seconds["tune"] = time.perf_counter() - start
    start = time.perf_counter()
    slim = prune_with_masks(model, masks)
    _check_finite_outputs(slim, batches[0], args)
    seconds["slim"] = time.perf_counter() - start
    return PostTrainingResult(
        model=slim,
        masks=masks,
        search=search,
        tuning=tuning,
        seq_len=seq_len,
        stage_seconds=seconds,
    )
