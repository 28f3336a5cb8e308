"""Argument types and path checks shared by the `nn-prune` subcommands.

Each numeric flag parses through a type that refuses NaN, infinities and values out of range, so a
bad value stops at parsing (one line, status 2) instead of meaning something else later (`--max-length 0`
once meant "no truncation") or failing deep inside torch. Paths are checked before any model is loaded,
so a typo costs no loading time and an existing file is never overwritten.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Callable

from ..validation import InputError

__all__ = [
    "LARGEST_COUNT",
    "whole_number",
    "real_number",
    "checkpoint_folder",
    "checkpoint_config",
    "output_folder",
    "output_file",
    "input_file",
    "add_budget_arguments",
]

# The largest count a flag takes. torch refuses more on some paths (`torch.set_num_threads(2**31)` raises
# "Overflow when unpacking long"), the tokenizers refuse a `max_length` beyond 64 bits with an
# OverflowError, and no real run needs more.
LARGEST_COUNT = 2**31 - 1

HUB_HINT = "download a Hub model first (e.g. `hf download NAME --local-dir DIR`) and give DIR"


def whole_number(minimum: int, maximum: int = LARGEST_COUNT) -> Callable[[str], int]:
    """An argparse type: a whole number in `[minimum, maximum]`.

    Args:
        minimum: The smallest value taken.
        maximum: The largest value taken (default `LARGEST_COUNT`).

    Returns:
        The parsing function; its `minimum` and `maximum` attributes give the range (the tests and the fuzz
        read them).
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a whole number from {minimum} to {maximum}, got {text!r}"
            ) from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be a whole number from {minimum} to {maximum}, got {value}")
        return value

    parse.__name__ = f"whole number from {minimum} to {maximum}"
    parse.minimum, parse.maximum = minimum, maximum
    return parse


def real_number(low: float, high: float = math.inf, *, low_inclusive: bool = True) -> Callable[[str], float]:
    """An argparse type: a finite real number in `[low, high]` (`(low, high]` unless `low_inclusive`).

    Returns:
        The parsing function; its `low`, `high` and `low_inclusive` attributes give the range.
    """
    interval = f"{'[' if low_inclusive else '('}{low:g}, {high:g}{']' if math.isfinite(high) else ')'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in {interval}, got {text!r}") from None
        inside = (value >= low if low_inclusive else value > low) and value <= high
        # NaN compares False with everything and would pass a `not (value < low)` test: check it by name.
        if not math.isfinite(value) or not inside:
            raise argparse.ArgumentTypeError(f"must be a finite number in {interval}, got {text!r}")
        return value

    parse.__name__ = f"number in {interval}"
    parse.low, parse.high, parse.low_inclusive = low, high, low_inclusive
    return parse


def checkpoint_folder(path: str, flag: str = "IN") -> str:
    """Refuse a checkpoint argument that is no folder with a `config.json` and safetensors weights, before anything loads.

    Args:
        path: The argument's value.
        flag: How the argument is named in the message (`IN`, `CKPT`).

    Raises:
        InputError: Naming the argument, the path and how to get a checkpoint folder.
    """
    if not os.path.isdir(path):
        what = "a file" if os.path.exists(path) else "no such folder"
        raise InputError(
            f"{flag} {path!r} is not a folder ({what}). Give the folder that save_pretrained or SparseTrainer "
            f"wrote, or {HUB_HINT}."
        )
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise InputError(
            f"{flag} {path!r} holds no config.json, so it is not a checkpoint folder. Give the folder that "
            f"save_pretrained or SparseTrainer wrote, or {HUB_HINT}."
        )
    # transformers would fail with an OSError after reading the config; nn_prune_ext loads no pickled weights.
    if not any(name.endswith(".safetensors") for name in os.listdir(path)):
        raise InputError(
            f"{flag} {path!r} holds a config.json but no .safetensors weights. Save the model with save_pretrained "
            "(safetensors is its default), or download the Hub model's weights too (`hf download NAME --local-dir "
            "DIR`); pickled .bin weights are not loaded."
        )
    return path


def checkpoint_config(path: str, flag: str = "IN"):
    """The config of checkpoint folder `path`, read before the weights so that the data can be checked against it.

    Args:
        path: The argument's value.
        flag: How the argument is named in the messages.

    Returns:
        `transformers.AutoConfig.from_pretrained(path)`.

    Raises:
        InputError: For a path that is no checkpoint folder (`checkpoint_folder`), or a `config.json` that
            transformers cannot read (not JSON, an unknown `model_type`).
    """
    checkpoint_folder(path, flag)
    import transformers  # here, after the folder check: the other checks of this module need no transformers

    try:
        return transformers.AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as error:
        reason = " ".join(str(error).split())[:300]
        raise InputError(
            f"{flag} {path!r}: its config.json cannot be read ({reason}). Give a checkpoint folder that "
            f"save_pretrained wrote with a supported transformers release, or {HUB_HINT}."
        ) from None


def output_folder(path: str, flag: str = "OUT") -> str:
    """Refuse an output folder path that is an existing file (or below one), before anything is loaded or written.

    Raises:
        InputError: Naming the argument and the path; the file is left as it is.
    """
    if os.path.lexists(path) and not os.path.isdir(path):
        raise InputError(
            f"{flag} {path!r} is an existing file, not a folder: give a folder path (the file is left as it is)."
        )
    _check_parent(path, flag, "folder")
    return path


def output_file(path: str, flag: str) -> str:
    """Refuse an output file path that is an existing folder (or below a file), before any work starts.

    An existing file is overwritten, as the flag's help says.

    Raises:
        InputError: Naming the argument and the path.
    """
    if os.path.isdir(path):
        raise InputError(f"{flag} {path!r} is an existing folder: give the path of a file to write.")
    _check_parent(path, flag, "file")
    return path


def input_file(path: str, flag: str, kind: str = "a JSON-lines file of examples") -> str:
    """Refuse an input file argument that is missing, a folder or unreadable.

    Raises:
        InputError: Naming the argument, the path and what it should be.
    """
    if not os.path.isfile(path):
        what = "a folder" if os.path.isdir(path) else "no such file"
        raise InputError(f"{flag} {path!r} is not a file ({what}): give {kind}.")
    if not os.access(path, os.R_OK):
        raise InputError(f"{flag} {path!r} is not readable (permission denied): give {kind} you can read.")
    return path


def _check_parent(path: str, flag: str, kind: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):  # ends at the root at the latest
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise InputError(f"{flag} {path!r} lies below {parent!r}, which is a file: give a {kind} path.")


def add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    """`--flops-budget` or `--latency-budget` (one of them, required): the fraction of the dense cost to keep;
    `--latency-model`: how a latency budget is counted."""
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--flops-budget", type=real_number(0, 1, low_inclusive=False),
                        help="fraction of the input model's layer FLOPs to keep, in (0, 1], e.g. 0.6")
    budget.add_argument("--latency-budget", type=real_number(0, 1, low_inclusive=False),
                        help="fraction of the input model's layer latency to keep, in (0, 1], measured here")
    parser.add_argument("--latency-model", choices=("table", "work"), default="table",
                        help="how a latency budget is counted: 'table' times one layer at every head count and a grid "
                        "of FFN widths; 'work' uses the speed model fitted here (fixed costs of whole blocks included)")
