"""`nn-prune optimize IN OUT`: bake and slim a checkpoint into a slim checkpoint."""

from __future__ import annotations

import argparse
import os

from .arguments import checkpoint_config, checkpoint_folder, output_folder


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "optimize",
        help="remove the heads and FFN units a checkpoint's masks or zeros emptied, and save a slim checkpoint",
        description="Bake (for a SparseTrainer checkpoint of a patched model) and slim a checkpoint. IN may be a "
        "SparseTrainer checkpoint (with sparse_state.json), a baked or zero-filled checkpoint of a supported "
        "architecture, or a slim checkpoint.",
    )
    parser.add_argument("input", metavar="IN", help="checkpoint folder to slim (with its config.json)")
    parser.add_argument("output", metavar="OUT", help="folder to write the slim checkpoint to (not an existing file)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    """Slim checkpoint `args.input` into `args.output`; both paths are checked before the model is loaded."""
    checkpoint_folder(args.input, "IN")
    output_folder(args.output, "OUT")
    checkpoint_config(args.input, "IN")
    from ..checkpoints import load_for_slimming  # torch: imported once the paths are known to be good
    from ..slim import optimize_model

    model = load_for_slimming(args.input)
    slim = optimize_model(model, inplace=True)
    print(slim.slim_report)
    slim.save_pretrained(args.output)
    if copy_tokenizer(args.input, args.output):
        print("tokenizer copied")
    print(f"slim checkpoint written to {args.output}")


def copy_tokenizer(source: str, target: str) -> bool:
    """Save the tokenizer of checkpoint `source` beside the slim weights, if it has one.

    Slimming changes no vocabulary, and a checkpoint without its tokenizer is one users cannot
    run. transformers v5 builds an empty tokenizer from a folder without tokenizer files instead
    of failing, hence the check for `tokenizer_config.json`.

    Returns:
        Whether a tokenizer was copied.
    """
    if not os.path.isfile(os.path.join(source, "tokenizer_config.json")):
        return False
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    return True
