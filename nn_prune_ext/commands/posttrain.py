"""`nn-prune posttrain IN OUT --data FILE`: prune a fine-tuned checkpoint without retraining (Kwon et al. 2022).

It reads calibration examples from a JSON-lines file, runs `post_training_prune` under a FLOPs or
latency budget and saves the slim checkpoint (with the tokenizer, and `posttrain.json`: the masks,
the cost against the budget, the tuning errors and the time of every stage).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict

from ..atomic_files import write_text_atomically
from .arguments import add_budget_arguments, checkpoint_config, checkpoint_folder, input_file, output_folder
from .data import add_data_arguments, examples_batches

RECORD_NAME = "posttrain.json"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "posttrain",
        help="prune a fine-tuned checkpoint to a FLOPs or latency budget without retraining, and slim it",
        description="Post-training pruning (Kwon et al. 2022): Fisher information of head and FFN-unit masks on "
        "calibration examples, mask search under the budget, rearrangement, least-squares tuning, then slimming. "
        f"Writes a slim checkpoint to OUT, with the tokenizer and {RECORD_NAME}.",
    )
    parser.add_argument("checkpoint", metavar="IN", help="fine-tuned checkpoint folder (a plain, unpatched model)")
    parser.add_argument("output", metavar="OUT", help="folder to write the slim checkpoint to (not an existing file)")
    add_budget_arguments(parser)
    parser.add_argument("--head-granularity", choices=("head", "group"), default="head",
                        help="prune query heads one by one, or whole key/value groups (GQA)")
    parser.add_argument("--no-rearrange", action="store_true", help="skip mask rearrangement")
    parser.add_argument("--no-tune", action="store_true", help="skip least-squares mask tuning")
    data = parser.add_argument_group("calibration data", "a JSON-lines file, one example object per line")
    data.add_argument("--data", required=True, help="JSON-lines file of calibration examples (about 2K is typical)")
    add_data_arguments(data, batch_size=32, max_batches=64)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    """Prune `args.checkpoint` to the budget on the `--data` examples and save the slim checkpoint to `args.output`.

    The paths are checked before torch is imported, every example (labels, token ids) before the model loads.
    """
    checkpoint_folder(args.checkpoint, "IN")
    output_folder(args.output, "OUT")
    input_file(args.data, "--data", "a JSON-lines file of calibration examples")
    config = checkpoint_config(args.checkpoint, "IN")
    from ..checkpoints import load_for_slimming  # torch: imported once the paths are known to be good
    from ..posttrain import PostTrainingArgs, post_training_prune
    from .measure import measure_and_record
    from .optimize import copy_tokenizer

    settings = PostTrainingArgs(
        flops_budget=args.flops_budget,
        latency_budget=args.latency_budget,
        latency_model=args.latency_model,
        head_granularity=args.head_granularity,
        rearrange=not args.no_rearrange,
        tune=not args.no_tune,
    )
    batches = examples_batches(args, args.data, config)  # a bad line stops the command before the model loads
    model = load_for_slimming(args.checkpoint)
    result = post_training_prune(model, batches, settings)
    print(result)
    print(result.model.slim_report)
    print(measure_and_record(model, result.model, batches[0]))
    result.model.save_pretrained(args.output)
    copy_tokenizer(args.checkpoint, args.output)
    record = {
        "arguments": asdict(settings),
        "calibration": {"file": os.path.abspath(args.data), "batches": len(batches), "seq_len": result.seq_len},
        "masks": result.masks.to_dict(),
        "cost": result.search.cost,
        "budget": result.search.budget,
        "dense_cost": result.search.dense_cost,  # of the input model, slim or dense
        "dense_model_cost": result.search.dense_model_cost,  # of the dense model; null when not known
        "tuning": [asdict(layer) for layer in result.tuning.layers] if result.tuning is not None else None,
        "stage_seconds": result.stage_seconds,
    }
    path = os.path.join(args.output, RECORD_NAME)
    write_text_atomically(path, json.dumps(record, indent=2))  # never a half-written record
    print(f"slim checkpoint written to {args.output}")
