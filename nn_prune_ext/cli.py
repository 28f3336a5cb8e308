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

Only `InputError` (and argparse's own refusals) become status 2. Other exceptions, `ValueError` and
`OSError` included, propagate: Python prints their traceback and exits with 1, and an in-process caller
of `main` gets the exception itself. Turning them into one line too would hide bugs as if they were the
user's mistake.

Startup: this module, the command modules' parsers and `nn_prune_ext/__init__.py` import neither torch
nor transformers, and each command checks its paths before it imports them, so `--help`, a bad flag or a
missing file is answered without the seconds that importing torch and transformers takes
(tests/test_lazy_import.py checks that they stay unimported).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .commands import bench, heal, optimize, posttrain, report
from .validation import InputError

__all__ = ["main", "build_parser", "parse_arguments", "SubcommandParser"]

SUBCOMMANDS = (optimize, report, bench, posttrain, heal)


class SubcommandParser(argparse.ArgumentParser):
    """The parser of one subcommand: it refuses what it does not know itself, under its own usage.

    argparse hands the arguments that follow a subcommand to its parser with `parse_known_args` and leaves
    the unknown ones to the top-level parser, which printed `usage: nn-prune [-h] ...` for
    `nn-prune optimize --bogus IN OUT`. Refused here, the usage is the subcommand's.
    """

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """`ArgumentParser.parse_known_args`, refusing unknown arguments and flags whose value argparse dropped.

        argparse takes the value `--` of `--flag=--` for its end-of-options marker and leaves `[]` without
        calling the flag's type (`[[]]` for an appending flag such as `bench --batch-size`); no flag of
        `nn-prune` has an empty list as a valid value.

        Raises:
            SystemExit: 2, with the subcommand's usage and the error on stderr.
        """
        parsed, unknown = super().parse_known_args(args, namespace)
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}")
        for action in self._actions:
            value = getattr(parsed, action.dest, None)
            if action.option_strings and isinstance(value, list) and (not value or [] in value):
                self.error(f"argument {'/'.join(action.option_strings)}: expected a value")
        return parsed, unknown


def build_parser() -> argparse.ArgumentParser:
    """The `nn-prune` parser with every subcommand (built without importing torch or transformers)."""
    parser = argparse.ArgumentParser(prog="nn-prune", description="Structured pruning of transformers models.")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=SubcommandParser)
    for command in SUBCOMMANDS:
        command.add_parser(subparsers)
    return parser


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """`parser.parse_args(argv)`: errors after the subcommand are reported by its `SubcommandParser`.

    Raises:
        SystemExit: 2 for arguments argparse refuses; 0 after `--help`.
    """
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run `nn-prune` with `argv` (default: the command line).

    Raises:
        SystemExit: 2 for a bad input: a flag argparse refuses (the subcommand's usage and an error line on
            stderr) or an `InputError` (one line on stderr); 130 when interrupted. Other exceptions are bugs and
            propagate with their traceback.
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
