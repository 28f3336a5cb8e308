#!/usr/bin/env python
"""Prune a fine-tuned sequence classifier without retraining, slim it, then heal it by distillation.

    python examples/text_classification/run_prune_and_heal.py \
        --model_name_or_path demo_output/dense --dataset_name wordnet_nouns \
        --flops_budget 0.4 --rounds 2 --num_train_epochs 1 --learning_rate 5e-5 \
        --do_train --do_eval --output_dir out/heal

The model must already be fine-tuned on the task (the dense model `make demo` leaves in
`demo_output/dense` is). `prune_and_heal` runs, `--rounds` times, the Fisher mask search of
`post_training_prune` on `--calibration_examples` training examples (each round keeps
`budget ** (1/rounds)` of its input's cost; every `PostTrainingArgs` field is a flag:
`--flops_budget` or `--latency_budget`, `--no_tune`, ...), removes what it masked with
`optimize_model`, and distils the slim model from the input model for the training arguments'
epochs (`SparseArgs.filled`). The input model and the healed slim model are evaluated the same
way and printed side by side; the slim model is saved with the tokenizer to `<output_dir>/slim`.
Data, labels and metrics work as in `run_text_classification.py`, whose loaders this script uses.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accelerate import PartialState
from transformers import DataCollatorWithPadding, HfArgumentParser, Trainer, TrainingArguments, set_seed

from nn_prune_ext import PostTrainingArgs, prune_and_heal, summary

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the text-classification example's loaders
from run_text_classification import (  # noqa: E402
    SLIM_DIR,
    DataArguments,
    ExampleArguments,
    ModelArguments,
    classification_metrics,
    load_and_encode,
    setup_logging,
)

logger = logging.getLogger(__name__)
DEFAULT_BUDGET = 0.4


@dataclass
class HealArguments:
    """The prune-and-heal steps and their calibration data."""

    rounds: int = field(default=2, metadata={"help": "Prune-and-heal steps to reach the budget."})
    calibration_examples: int = field(
        default=2048, metadata={"help": "Training examples the mask search measures importance on."}
    )

    def __post_init__(self):
        if self.rounds < 1 or self.calibration_examples < 1:
            raise ValueError(f"--rounds and --calibration_examples must be at least 1, got {self.rounds} and "
                             f"{self.calibration_examples}.")


ARGUMENT_TYPES = (ModelArguments, DataArguments, ExampleArguments, HealArguments, PostTrainingArgs, TrainingArguments)


def parse_arguments(argv: list[str] | None = None) -> tuple:
    """The six argument dataclasses; without a budget flag, `--flops_budget 0.4`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not any(flag.startswith(("--flops_budget", "--latency_budget")) for flag in argv):
        argv = [*argv, "--flops_budget", str(DEFAULT_BUDGET)]
    return HfArgumentParser(ARGUMENT_TYPES, allow_abbrev=False).parse_args_into_dataclasses(args=argv)


def side_by_side(dense: dict[str, float], slim: dict[str, float]) -> str:
    """The input model's evaluation against the healed slim model's: loss and every metric."""
    names = [key[len("eval_"):] for key in dense if key.startswith("eval_") and key in slim
             and not key.endswith(("runtime", "per_second"))]
    lines = [f"{'':<24} {'input model':>14} {'healed slim':>14}"]
    lines += [f"{name:<24} {dense[f'eval_{name}']:>14.4f} {slim[f'eval_{name}']:>14.4f}" for name in names]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the example; returns the evaluation of both models (`dense_*`, `slim_*`) and the rounds' budgets."""
    model_args, data_args, example_args, heal_args, prune_args, training_args = parse_arguments(argv)
    if not training_args.do_train:
        raise ValueError("Healing trains the slim model: pass --do_train (and --do_eval to compare the models).")
    setup_logging(training_args)
    set_seed(training_args.seed)
    tokenizer, model, encoded = load_and_encode(model_args, data_args, training_args)
    collator = DataCollatorWithPadding(tokenizer)
    evaluation = dict(
        eval_dataset=encoded.get(data_args.eval_split_name), data_collator=collator, processing_class=tokenizer,
        compute_metrics=classification_metrics(
            example_args.metric_name_or_path, example_args.metric_average, model_args.cache_dir
        ),
    )
    train = encoded["train"]
    sample = train.shuffle(seed=training_args.seed).select(range(min(heal_args.calibration_examples, len(train))))
    size = training_args.per_device_train_batch_size
    calibration = [collator(sample[start : start + size]) for start in range(0, len(sample), size)]

    results: dict[str, Any] = {}
    if training_args.do_eval:
        results.update({f"dense_{key}": value for key, value in
                        Trainer(model=model, args=training_args, **evaluation).evaluate().items()})
    healed = prune_and_heal(model, calibration, train, training_args, prune_args, rounds=heal_args.rounds, **evaluation)
    print(healed)
    results["budgets"] = [step.budget for step in healed.rounds]
    slim = healed.model
    if training_args.do_eval:
        slim_metrics = Trainer(model=slim, args=training_args, **evaluation).evaluate()
        results.update({f"slim_{key}": value for key, value in slim_metrics.items()})
        dense_metrics = {key[len("dense_"):]: value for key, value in results.items() if key.startswith("dense_")}
        if training_args.process_index == 0:
            print("input model against the healed slim model:\n" + side_by_side(dense_metrics, slim_metrics))
    if training_args.process_index == 0:
        print(summary(slim))  # kept against the dense model, over every round
        slim_dir = Path(training_args.output_dir) / SLIM_DIR
        slim.save_pretrained(slim_dir)
        tokenizer.save_pretrained(slim_dir)
        print(f"slim checkpoint and tokenizer written to {slim_dir}")
    return results


if __name__ == "__main__":
    main()
    PartialState().destroy_process_group()
