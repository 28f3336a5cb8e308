"""`nn-prune heal IN OUT --data CALIB --train-data TRAIN --flops-budget B`: prune without retraining, then heal.

`prune_and_heal`: the post-training mask search at the budget, slimming, and a short distillation of
the slim model from the checkpoint itself (several rounds with `--rounds`). Saves the healed slim
checkpoint (with the tokenizer, and `heal.json`: per round the budget, the evaluation loss before and
after healing and the training metrics).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from typing import Any

from ..atomic_files import write_text_atomically
from .arguments import (
    add_budget_arguments,
    checkpoint_config,
    checkpoint_folder,
    input_file,
    output_folder,
    real_number,
    whole_number,
)
from .data import add_data_arguments, examples_batches

RECORD_NAME = "heal.json"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "heal",
        help="prune a fine-tuned checkpoint to a budget without retraining, slim it, then heal it by distillation",
        description="Post-training pruning to the budget (Fisher mask search, rearrangement, tuning), slimming, then "
        "a short fine-tuning of the slim model distilled from the checkpoint itself (the filled stage). With "
        f"--rounds, the budget is reached in several prune-and-heal steps. Writes a slim checkpoint to OUT, with the "
        f"tokenizer and {RECORD_NAME}.",
    )
    parser.add_argument("checkpoint", metavar="IN", help="fine-tuned checkpoint folder (a plain, unpatched model)")
    parser.add_argument("output", metavar="OUT",
                        help="folder to write the healed slim checkpoint to (not an existing file)")
    add_budget_arguments(parser)
    parser.add_argument("--rounds", type=whole_number(1), default=1,
                        help="prune-and-heal steps to reach the budget (default: 1)")
    healing = parser.add_argument_group("healing")
    healing.add_argument("--train-data", required=True, help="JSON-lines file of labelled training examples")
    healing.add_argument("--eval-data", help="JSON-lines file the loss is measured on before and after healing")
    healing.add_argument("--epochs", type=real_number(0, low_inclusive=False), default=1.0,
                         help="epochs of healing per round (default: 1)")
    healing.add_argument("--learning-rate", type=real_number(0, low_inclusive=False), default=5e-5,
                         help="learning rate of healing (default: 5e-5)")
    healing.add_argument("--train-max-batches", type=whole_number(1), default=10**9,
                         help="read at most this many batches of --train-data (default: all)")
    healing.add_argument("--work-dir", help="where the healing runs write their logs (default: OUT-healing)")
    data = parser.add_argument_group("calibration data", "JSON-lines files, one example object per line")
    data.add_argument("--data", required=True, help="JSON-lines file of calibration examples (about 2K is typical)")
    add_data_arguments(data, batch_size=32, max_batches=64)
    parser.set_defaults(run=run)


def _first(items: list[Any]) -> Any:
    """The collator of a data set whose items are whole batches already."""
    return items[0]


def run(args: argparse.Namespace) -> None:
    """Prune `args.checkpoint` to the budget, heal it and save it to `args.output`, checking every path first."""
    checkpoint_folder(args.checkpoint, "IN")
    output_folder(args.output, "OUT")
    for flag, path in (("--data", args.data), ("--train-data", args.train_data), ("--eval-data", args.eval_data)):
        if path is not None:
            input_file(path, flag)
    work_dir = args.work_dir or f"{os.path.abspath(args.output).rstrip(os.sep)}-healing"
    output_folder(work_dir, "--work-dir")  # the default too: OUT-healing may be a file already
    config = checkpoint_config(args.checkpoint, "IN")
    import torch  # imported once the paths are known to be good
    from transformers import TrainingArguments

    from ..checkpoints import load_for_slimming
    from ..heal import prune_and_heal
    from ..posttrain import PostTrainingArgs
    from .measure import measure_and_record
    from .optimize import copy_tokenizer

    # Every file is read and checked before the model loads: a bad line costs no loading time.
    calibration = examples_batches(args, args.data, config)
    training = copy.copy(args)
    training.max_batches = args.train_max_batches
    train_batches = examples_batches(training, args.train_data, config)
    eval_batches = examples_batches(training, args.eval_data, config) if args.eval_data else None
    model = load_for_slimming(args.checkpoint)
    training_args = TrainingArguments(
        work_dir, num_train_epochs=args.epochs, learning_rate=args.learning_rate, per_device_train_batch_size=1,
        per_device_eval_batch_size=1, save_strategy="no", report_to=[], logging_steps=max(1, len(train_batches) // 4),
        disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
    )
    result = prune_and_heal(
        model, calibration, train_batches, training_args,
        PostTrainingArgs(flops_budget=args.flops_budget, latency_budget=args.latency_budget,
                         latency_model=args.latency_model),
        rounds=args.rounds, eval_dataset=eval_batches, data_collator=_first,
    )
    print(result)
    print(f"last round's search: {result.rounds[-1].search}")  # its cost against the input and the dense model
    print(result.model.slim_report)
    print(measure_and_record(model, result.model, calibration[0]))
    result.model.save_pretrained(args.output)
    copy_tokenizer(args.checkpoint, args.output)
    record = {
        "budget": args.flops_budget if args.flops_budget is not None else args.latency_budget,
        "budget_kind": "flops" if args.flops_budget is not None else "latency",
        "rounds": [
            {"budget": step.budget, "cost": step.search.cost, "input_cost": step.search.dense_cost,
             "eval_before": step.metrics_before, "eval_after": step.metrics_after, "train": step.train_metrics}
            for step in result.rounds
        ],
    }
    path = os.path.join(args.output, RECORD_NAME)
    write_text_atomically(path, json.dumps(record, indent=2))  # never a half-written record
    print(f"healed slim checkpoint written to {args.output}")
