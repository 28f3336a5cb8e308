"""The `nn-prune` command.

    nn-prune optimize IN OUT    bake and slim a checkpoint (patched, baked or zero-filled) into OUT
    nn-prune report CKPT        text summary and PNG pictures of a checkpoint's pruning
    nn-prune bench CKPT         dense vs slim latency, measured side by side
    nn-prune posttrain IN OUT   prune a fine-tuned checkpoint to a budget without retraining, and slim it
    nn-prune heal IN OUT        the same, then heal the slim model by distillation from the checkpoint

Each subcommand lives in `nn_prune_ext/commands/<name>.py`. Exit statuses: 0 done; 2 a bad input
(a flag, a path, a checkpoint or data file); 1 an internal error, printed with its traceback (a bug to
report); 130 interrupted. A flag argparse refuses is reported by the subcommand's parser: its usage, then
`nn-prune <command>: error: <what>`. An `InputError` of the library is one line,
`nn-prune <command>: error: <what to fix>`.

Only `InputError` (and argparse's own refusals) become status 2. Other exceptions, `ValueError`
and `OSError` included, propagate: Python prints their traceback and exits with 1, and an in-process caller of
`main` gets the exception itself. Turning them into one line too would hide bugs as if they were the user's
mistake.
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
    """`parser.parse_args(argv)`, with errors after the subcommand reported by the subcommand's parser.

    Unknown arguments are refused by the subcommand's parser, so the line names the subcommand
    (`nn-prune bench: error: unrecognized arguments: ...`). A flag whose value argparse dropped is refused:
    argparse takes the value `--` of `--flag=--` for its end-of-options marker and leaves `[]` without
    calling the flag's type; no flag of `nn-prune` has an empty list as a valid value.

    Raises:
        SystemExit: 2, with the subcommand's usage and the error on stderr, for arguments argparse refuses.
    """
    args, unknown = parser.parse_known_args(argv)
    command = _subparser(parser, args.command)
    if unknown:
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    for dest, value in vars(args).items():
        if isinstance(value, list) and not value:
            command.error(f"argument --{dest.replace('_', '-')}: expected a value")
    return args


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The parser of subcommand `command` (argparse keeps no public handle on it)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]
    raise LookupError(f"the nn-prune parser has no subcommand {command!r}")


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
        parser.exit(2, f"nn-prune {args.command}: error: {_one_line(str(error)) or type(error).__name__}\n")
    except KeyboardInterrupt:
        parser.exit(130, f"nn-prune {args.command}: interrupted\n")


def _one_line(message: str) -> str:
    """`message` with its line breaks and runs of spaces made single spaces: one line for the terminal."""
    return " ".join(message.split())


if __name__ == "__main__":
    main(sys.argv[1:])
