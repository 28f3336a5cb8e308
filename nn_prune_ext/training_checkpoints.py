"""Training checkpoints that appear complete or not at all, and the choice of the one to resume from.

`Trainer` writes `checkpoint-N` in place, file after file, and `get_last_checkpoint` takes the
highest number without looking inside: a run killed while it writes a checkpoint could not be
resumed until someone deleted the half-written folder. `SparseTrainer` has the Trainer write each
checkpoint into a staging folder next to the others and renames it to `checkpoint-N` once every
process has written its part, so a `checkpoint-N` is always complete. Resuming takes the newest
complete one (checkpoints of other writers are checked for their `trainer_state.json`, the file
the Trainer writes last) and removes staging folders that a killed run left.
"""

from __future__ import annotations

import json
import os
import re
import shutil

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .validation import InputError

__all__ = [
    "TRAINER_STATE_NAME",
    "checkpoint_folder",
    "staging_run_dir",
    "remove_stale_staging",
    "publish_checkpoint",
    "incomplete_reason",
    "newest_complete_checkpoint",
    "check_resumable",
]

TRAINER_STATE_NAME = "trainer_state.json"  # written last by Trainer._save_checkpoint
# A leading "_": the Trainer's pushes to the Hub ignore "_*", and neither `get_last_checkpoint` nor the
# checkpoint rotation (both look for "checkpoint-*") sees it.
_STAGING_PREFIX = f"_partial-{PREFIX_CHECKPOINT_DIR}-"
_CHECKPOINT_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
_STAGING_NAME = re.compile(rf"^{re.escape(_STAGING_PREFIX)}(\d+)$")
_REPLACED = "replaced"  # where publish_checkpoint moves an older folder of the same name


def checkpoint_folder(step: int) -> str:
    """The name of the Trainer's checkpoint folder of `step` (`checkpoint-<step>`)."""
    return f"{PREFIX_CHECKPOINT_DIR}-{step}"


def staging_run_dir(run_dir: str, step: int) -> str:
    """The folder that takes the place of `run_dir` while the checkpoint of `step` is written.

    The Trainer writes the checkpoint to `<staging>/checkpoint-<step>`; `publish_checkpoint` moves it to
    `<run_dir>/checkpoint-<step>`. The name depends on the step only, so every process finds the same one.
    """
    return os.path.join(run_dir, f"{_STAGING_PREFIX}{step}")


def remove_stale_staging(run_dir: str) -> list[str]:
    """Remove the staging folders in `run_dir` (left by a run killed while it wrote a checkpoint).

    A run killed between the two renames of `publish_checkpoint` left a complete checkpoint in its staging
    folder and none at `checkpoint-N`: that one is renamed into place rather than removed. Call this only
    where no checkpoint of this run is being written (at the start of training).

    Returns:
        The staging folders removed.
    """
    if not os.path.isdir(run_dir):
        return []
    removed = []
    for name in sorted(os.listdir(run_dir)):
        match = _STAGING_NAME.match(name)
        if match is None:
            continue
        staging = os.path.join(run_dir, name)
        final = os.path.join(run_dir, checkpoint_folder(int(match.group(1))))
        staged = os.path.join(staging, os.path.basename(final))
        # "replaced" is moved aside only once every process has written its part: the staged copy is complete.
        if os.path.isdir(os.path.join(staging, _REPLACED)) and os.path.isdir(staged) and not os.path.lexists(final):
            os.rename(staged, final)
        shutil.rmtree(staging, ignore_errors=True)
        removed.append(staging)
    return removed


def publish_checkpoint(staging: str, checkpoint: str) -> None:
    """Rename the complete checkpoint staged in `staging` to `checkpoint`, then remove `staging`.

    A folder already at `checkpoint` (of an earlier run in the same output folder) is moved into `staging`
    first and removed with it. A kill at any point leaves `checkpoint` complete or absent, and at most a
    staging folder that the next training start removes (or, killed between the two renames, renames into
    place: `remove_stale_staging`).

    Args:
        staging: The staging run folder (`staging_run_dir`).
        checkpoint: The final `checkpoint-N` path.
    """
    staged = os.path.join(staging, os.path.basename(checkpoint))
    if os.path.lexists(checkpoint):
        os.rename(checkpoint, os.path.join(staging, _REPLACED))
    os.rename(staged, checkpoint)
    _sync_directory(os.path.dirname(os.path.abspath(checkpoint)))
    shutil.rmtree(staging, ignore_errors=True)


def _sync_directory(path: str) -> None:
    """Make a rename in `path` durable; best effort (some systems cannot open a folder)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def incomplete_reason(folder: str) -> str | None:
    """Why the checkpoint `folder` cannot be resumed from, or None when it is complete.

    A checkpoint is complete when its `trainer_state.json`, the file the Trainer writes last, is there and
    reads as JSON. Checkpoints that `SparseTrainer` published always are; this catches half-written
    folders of a plain `Trainer` or of older releases.
    """
    path = os.path.join(folder, TRAINER_STATE_NAME)
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except FileNotFoundError:
        return f"it has no {TRAINER_STATE_NAME}"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"its {TRAINER_STATE_NAME} cannot be read ({error})"
    if not isinstance(state, dict) or "global_step" not in state:
        return f"its {TRAINER_STATE_NAME} records no global_step"
    return None


def newest_complete_checkpoint(output_dir: str) -> tuple[str | None, dict[str, str]]:
    """The complete `checkpoint-N` folder of `output_dir` with the highest N.

    Args:
        output_dir: The training output folder.

    Returns:
        The checkpoint (None when there is none), and the newer folders passed over with the reason for each.
    """
    if not os.path.isdir(output_dir):
        return None, {}
    steps = {
        int(match.group(1)): name
        for name in os.listdir(output_dir)
        if (match := _CHECKPOINT_NAME.match(name)) and os.path.isdir(os.path.join(output_dir, name))
    }
    passed_over = {}
    for step in sorted(steps, reverse=True):
        folder = os.path.join(output_dir, steps[step])
        reason = incomplete_reason(folder)
        if reason is None:
            return folder, passed_over
        passed_over[folder] = reason
    return None, passed_over


def check_resumable(folder: str) -> None:
    """Refuse an explicit `resume_from_checkpoint` folder that is missing or incomplete.

    Raises:
        InputError: Naming the folder and what it lacks.
    """
    if not os.path.isdir(folder):
        raise InputError(f"resume_from_checkpoint={folder!r} is not a folder. Give a checkpoint-N folder, or True.")
    reason = incomplete_reason(folder)
    if reason is not None:
        raise InputError(
            f"Cannot resume from {folder}: {reason}, so it was not completely written (a run killed while saving it?). "
            "Resume from an earlier checkpoint, or pass resume_from_checkpoint=True to take the newest complete one."
        )
