"""Reading the calibration batches every post-training method takes, refusing what is no list of batches."""

from __future__ import annotations

import itertools
import sys
from typing import Any, Iterable, Mapping

import torch

from ..validation import InputError, check_number

__all__ = ["read_batches"]


def read_batches(batches: Any, what: str, max_batches: int | None = None) -> list[Any]:
    """The calibration batches as a list, at most `max_batches` of them.

    One batch passed instead of a list of batches is the common slip: iterating a dict yields its
    keys, which would then be refused as "batch 0 is a str" or fail inside the model.

    Args:
        batches: An iterable of batches (a list, a `DataLoader`).
        what: The calling function's name, for the messages.
        max_batches: Read at most this many (None: all).

    Returns:
        The batches read.

    Raises:
        InputError: For a single batch, a tensor, text, None or anything not iterable, a `max_batches`
            that is not a whole number >= 1, and for no batches at all.
    """
    check_number(f"{what}(max_batches=...)", max_batches, whole=True, minimum=1, allow_none=True)
    if isinstance(batches, Mapping):
        raise InputError(
            f"{what} takes an iterable of batches (a list or a DataLoader), got a single batch (a "
            f"{type(batches).__name__} with keys {sorted(map(str, batches))}): wrap it in a list, [batch]."
        )
    if batches is None or isinstance(batches, (str, bytes, torch.Tensor)) or not isinstance(batches, Iterable):
        raise InputError(
            f"{what} takes an iterable of batches (a list or a DataLoader of dicts of tensors), got "
            f"{type(batches).__name__}."
        )
    # islice takes no stop beyond sys.maxsize; a larger limit means "all" just the same.
    stop = None if max_batches is None else min(int(max_batches), sys.maxsize)
    read = list(itertools.islice(batches, stop))
    if not read:
        raise InputError(f"{what} got no batches (an empty list or data loader): pass at least one batch of model inputs.")
    return read
