"""`sparse_state.json`: what a `SparseTrainer` checkpoint records of its pruning, read back from any version.

The file holds the `SparseArgs` of the run and where the schedule stood (step, thresholds, penalty
weight). It carries the format and the nn_prune_ext release that wrote it, so that a checkpoint of
an older release is read (fields it lacks take their defaults) and one of a newer release is
refused with both releases named, instead of failing on an unexpected keyword deep inside.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from .args import SparseArgs
from .atomic_files import write_text_atomically
from .validation import InputError

__all__ = ["SPARSE_STATE_NAME", "FORMAT_VERSION", "write_sparse_state", "read_sparse_state", "saved_sparse_args"]

SPARSE_STATE_NAME = "sparse_state.json"
# Raise when the meaning of a key changes; new keys with defaults need no new format.
FORMAT_VERSION = 1


def _package_version() -> str:
    from . import __version__  # late: the package imports this module

    return __version__


def write_sparse_state(folder: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write `state` as `sparse_state.json` in `folder`, atomically (a temporary file, then a rename).

    Args:
        folder: The checkpoint folder.
        state: What `SparsityController.state()` returns; the format and the writing release are added.
    """
    payload = {**state, "format_version": FORMAT_VERSION, "nn_prune_ext_version": _package_version()}
    path = os.path.join(folder, SPARSE_STATE_NAME)
    write_text_atomically(path, json.dumps(payload, indent=2, sort_keys=True))


def read_sparse_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a `sparse_state.json` written by this or another release of nn_prune_ext.

    Args:
        path: The file, or the checkpoint folder holding it.

    Returns:
        The recorded state; its `"sparse_args"` entry is a complete `SparseArgs` dict (fields that an older
        release did not write take their defaults).

    Raises:
        InputError: The file is missing or damaged, or was written by a newer release in a format or with
            `SparseArgs` fields this release does not know; the message names the file and both releases.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, SPARSE_STATE_NAME)
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except FileNotFoundError:
        raise InputError(f"{path} does not exist: the folder is not a SparseTrainer checkpoint of a patched model.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(
            f"{path} cannot be read ({error}): the checkpoint is damaged. Use an earlier checkpoint of the run."
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("sparse_args"), dict):
        raise InputError(f"{path} holds no 'sparse_args' object: the checkpoint is damaged or not nn_prune_ext's.")
    writer = state.get("nn_prune_ext_version", "an early release")
    ours = _package_version()
    format_version = state.get("format_version", 1)
    if not isinstance(format_version, int) or format_version > FORMAT_VERSION:
        raise InputError(
            f"{path} was written by nn_prune_ext {writer} in format {format_version!r}; nn_prune_ext {ours} reads "
            f"formats up to {FORMAT_VERSION}. Upgrade nn_prune_ext (pip install -U nn_prune_ext) to read it."
        )
    known = {field.name for field in dataclasses.fields(SparseArgs)}
    unknown = sorted(set(state["sparse_args"]) - known)
    if unknown:
        raise InputError(
            f"{path} sets SparseArgs fields that nn_prune_ext {ours} does not know: {unknown} (written by nn_prune_ext "
            f"{writer}). Upgrade nn_prune_ext to read this checkpoint."
        )
    defaults = SparseArgs().to_dict()
    return {**state, "sparse_args": {**defaults, **state["sparse_args"]}}


def saved_sparse_args(state: dict[str, Any], path: str | os.PathLike) -> SparseArgs:
    """The `SparseArgs` that `read_sparse_state` returned, validated, with the file named in any error.

    Args:
        state: What `read_sparse_state(path)` returned.
        path: The file it was read from, for messages.

    Raises:
        InputError: A recorded value is not valid.
    """
    try:
        return SparseArgs(**state["sparse_args"])
    except ValueError as error:  # InputError, or a cross-field check of SparseArgs.validate
        raise InputError(f"{os.fspath(path)}: {error}") from None
