"""Reading the calibration batches every post-training method takes, refusing what is no list of batches."""

from __future__ import annotations

import itertools
import sys
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from ..arch import get_layout
from ..validation import InputError, check_whole

__all__ = ["read_batches", "check_batch_shapes"]


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
    check_whole(max_batches, f"{what}(max_batches=...)", minimum=1, optional=True)
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


def check_batch_shapes(model: nn.Module, batch: Mapping[str, Any], index: int) -> None:
    """Refuse a batch whose tensors disagree in shape, naming them, before torch fails on it mid-run.

    Run after `arch.check_batch` (which makes sure the model's input is there): token ids without their
    batch dimension, an `attention_mask` of another shape, or `labels` for another number of examples
    otherwise fail deep inside the model with a size mismatch or an unpacking error.

    Args:
        model: A model of a registered architecture.
        batch: One batch of inputs.
        index: Its position, for the message.

    Raises:
        InputError: Naming the batch, the tensors and their shapes.
    """
    if get_layout(model).input_kind == "pixels":
        main = batch["pixel_values"]
    else:
        main = batch["input_ids"]
        if main.dim() != 2:
            raise InputError(
                f"Batch {index}: input_ids have shape {tuple(main.shape)}, not [batch, sequence]: a single example "
                "needs its batch dimension (ids.unsqueeze(0)); use a collator that pads to one length."
            )
        mask = batch.get("attention_mask")
        if isinstance(mask, torch.Tensor) and tuple(mask.shape) != tuple(main.shape):
            raise InputError(
                f"Batch {index}: attention_mask has shape {tuple(mask.shape)} but input_ids {tuple(main.shape)}: pass "
                "a [batch, sequence] mask with 1 for real tokens and 0 for padding."
            )
    labels = batch.get("labels")
    if isinstance(labels, torch.Tensor) and (labels.dim() == 0 or labels.shape[0] != main.shape[0]):
        count = 1 if labels.dim() == 0 else labels.shape[0]
        raise InputError(
            f"Batch {index} has labels of shape {tuple(labels.shape)} ({count}) for {main.shape[0]} examples: give "
            "one label (or label sequence) per example."
        )
