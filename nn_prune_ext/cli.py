"""The `nn-prune` command.

    nn-prune optimize IN OUT    bake and slim a checkpoint (patched, baked or zero-filled) into OUT
    nn-prune report CKPT        text summary and PNG pictures of a checkpoint's pruning
    nn-prune bench CKPT         dense vs slim latency, measured side by side
    nn-prune posttrain IN OUT   prune a fine-tuned checkpoint to a budget without retraining, and slim it
    nn-prune heal IN OUT        the same, then heal the slim model by distillation from the checkpoint

Each subcommand lives in `nn_prune_ext/commands/<name>.py`. Exit statuses: 0 done; 2 a bad input
(a flag, a path, a checkpoint or data file: one line on stderr that says what to fix); 1 an
internal error, printed with its traceback (a bug to report); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from .commands import bench, heal, optimize, posttrain, report
from .validation import InputError

__all__ = ["main", "build_parser", "parse_arguments"]

SUBCOMMANDS = (optimize, report, bench, posttrain, heal)


def build_parser() -> argparse.ArgumentParser:
    """The `nn-prune` parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="nn-prune", description="Structured pruning of transformers models.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in SUBCOMMANDS:
        command.add_parser(subparsers)
    return parser


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """`parser.parse_args(argv)`, refusing a flag whose value argparse dropped.

    argparse takes the value `--` of `--flag=--` for its end-of-options marker and leaves `[]` without
    calling the flag's type; no flag of `nn-prune` has an empty list as a valid value.
    """
    args = parser.parse_args(argv)
    for dest, value in vars(args).items():
        if isinstance(value, list) and not value:
            parser.error(f"argument --{dest.replace('_', '-')}: expected a value")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run `nn-prune` with `argv` (default: the command line).

    Raises:
        SystemExit: 2 for a bad input, with one line on stderr; 130 when interrupted. Other exceptions are bugs
            and propagate with their traceback.
    """
    parser = build_parser()
    args = parse_arguments(parser, argv)
    try:
        args.run(args)
    except InputError as error:
        # Bad input (a folder that is no checkpoint, an unsupported architecture, a bad value in a file):
        # the message says what to fix, and a traceback would bury it. Anything else is a bug and keeps its
        # traceback (status 1), so it is not mistaken for the user's mistake.
        parser.exit(2, f"nn-prune {args.command}: error: {_one_line(str(error))}\n")
    except KeyboardInterrupt:
        parser.exit(130, f"nn-prune {args.command}: interrupted\n")


def _one_line(message: str) -> str:
    return " ".join(message.split())


if __name__ == "__main__":
    main(sys.argv[1:])
