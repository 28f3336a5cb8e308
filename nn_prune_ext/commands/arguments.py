"""Argument types and path checks shared by the `nn-prune` subcommands.

Each numeric flag parses through a type that refuses NaN, infinities and values out of range, so a
bad value stops at parsing (one line, status 2) instead of meaning something else later (`--max-length 0`
once meant "no truncation") or failing deep inside torch.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Callable

from ..validation import InputError

__all__ = ["whole_number", "real_number", "checkpoint_folder", "output_folder", "add_budget_arguments"]


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got {value}")
        return value

    parse.__name__ = f"whole number >= {minimum}"
    return parse


def real_number(low: float, high: float = math.inf, *, low_inclusive: bool = True) -> Callable[[str], float]:
    """An argparse type: a finite real number in `[low, high]` (`(low, high]` unless `low_inclusive`)."""
    interval = f"{'[' if low_inclusive else '('}{low:g}, {high:g}{']' if math.isfinite(high) else ')'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in {interval}, got {text!r}") from None
        inside = (value >= low if low_inclusive else value > low) and value <= high
        if not math.isfinite(value) or not inside:
            raise argparse.ArgumentTypeError(f"must be a finite number in {interval}, got {text!r}")
        return value

    parse.__name__ = f"number in {interval}"
    return parse


def checkpoint_folder(path: str, flag: str = "checkpoint") -> str:
    """Refuse a checkpoint argument that is no folder with a `config.json`, before anything loads.

    Raises:
        InputError: Naming the path and how to get a checkpoint folder.
    """
    if not os.path.isdir(path):
        raise InputError(
            f"{flag} {path!r} is not a folder. Give the folder that save_pretrained or SparseTrainer wrote; download "
            "a Hub model first (e.g. `hf download NAME --local-dir DIR`)."
        )
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise InputError(f"{flag} {path!r} holds no config.json, so it is not a checkpoint folder.")
    return path


def output_folder(path: str, flag: str = "output") -> str:
    """Refuse an output path that is an existing file (or below one), before anything is loaded or written.

    Raises:
        InputError: Naming the path; the file is left as it is.
    """
    if os.path.lexists(path) and not os.path.isdir(path):
        raise InputError(f"{flag} {path!r} is an existing file, not a folder: give a folder path (it is left as it is).")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):  # ends at the root at the latest
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise InputError(f"{flag} {path!r} lies below {parent!r}, which is a file: give a folder path.")
    return path


def add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    """`--flops-budget` or `--latency-budget` (one of them, required): the fraction of the dense cost to keep;
    `--latency-model`: how a latency budget is counted."""
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--flops-budget", type=real_number(0, 1, low_inclusive=False),
                        help="fraction of the dense layers' FLOPs to keep, in (0, 1], e.g. 0.6")
    budget.add_argument("--latency-budget", type=real_number(0, 1, low_inclusive=False),
                        help="fraction of the dense layers' latency to keep, in (0, 1], measured here")
    parser.add_argument("--latency-model", choices=("table", "work"), default="table",
                        help="how a latency budget is counted: 'table' times one layer at every head count and a grid "
                        "of FFN widths; 'work' uses the speed model fitted here (fixed costs of whole blocks included)")
