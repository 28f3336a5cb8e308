"""The `nn-prune` command.

    nn-prune optimize IN OUT    bake and slim a checkpoint (patched, baked or zero-filled) into OUT
    nn-prune report CKPT        text summary and PNG pictures of a checkpoint's pruning
    nn-prune bench CKPT         dense vs slim latency, measured side by side
    nn-prune posttrain IN OUT   prune a fine-tuned checkpoint to a budget without retraining, and slim it

Each subcommand lives in `nn_prune_ext/commands/<name>.py`.
"""

from __future__ import annotations

import argparse
import sys

from .commands import bench, optimize, posttrain, report

__all__ = ["main"]

SUBCOMMANDS = (optimize, report, bench, posttrain)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="nn-prune", description="Structured pruning of transformers models.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in SUBCOMMANDS:
        command.add_parser(subparsers)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, OSError) as error:
        # Bad input (a folder that is no checkpoint, an unsupported architecture, a bad flag value):
        # the message says what to fix; a traceback would bury it.
        parser.exit(2, f"nn-prune {args.command}: error: {error}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
