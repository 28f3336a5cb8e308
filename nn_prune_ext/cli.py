"""The `nn-prune` command.

    nn-prune optimize IN OUT    bake and slim a checkpoint (patched, baked or zero-filled) into OUT
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _optimize(args: argparse.Namespace) -> None:
    from .checkpoints import load_for_slimming
    from .slim import optimize_model

    model = load_for_slimming(args.input)
    slim = optimize_model(model, inplace=True)
    print(slim.slim_report)
    slim.save_pretrained(args.output)
    print(f"slim checkpoint written to {args.output}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="nn-prune", description="Structured pruning of transformers models.")
    commands = parser.add_subparsers(dest="command", required=True)
    optimize = commands.add_parser(
        "optimize",
        help="remove the heads and FFN units a checkpoint's masks or zeros emptied, and save a slim checkpoint",
        description="Bake (for a SparseTrainer checkpoint of a patched model) and slim a checkpoint. IN may be a "
        "SparseTrainer checkpoint (with sparse_state.json), a baked or zero-filled checkpoint of a supported "
        "architecture, or a slim checkpoint.",
    )
    optimize.add_argument("input", help="checkpoint folder to slim")
    optimize.add_argument("output", help="folder to write the slim checkpoint to")
    optimize.set_defaults(run=_optimize)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main(sys.argv[1:])
