"""Kills slim `save_pretrained` calls at chosen points (run by test_slim_modeling_slim.py).

    python kill_slim_save.py WORK_DIR

For each stage of `STAGES`, a forked child saves a slim model to `WORK_DIR/<stage>/slim` with a tokenizer
file beside it, records the weights of that save (`old.safetensors`), changes the weights (`new.safetensors`)
and saves again with a SIGKILL planted at that stage. The parent only forks and waits (no torch computation of
its own, so forking stays safe) and writes `WORK_DIR/report.json`: per stage, the signal that ended the child
and what the folder held after the kill.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys

sys.path.insert(0, os.path.dirname(__file__))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from nn_prune_ext import optimize_model  # noqa: E402
from nn_prune_ext.slim import modeling_slim  # noqa: E402

from slim_helpers import masked_model  # noqa: E402


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_in(name: str, after: bool = False) -> None:
    original = getattr(modeling_slim, name)

    def wrapper(*args, **kwargs):
        if not after:
            _kill()
        result = original(*args, **kwargs)
        _kill()
        return result

    setattr(modeling_slim, name, wrapper)


def _kill_at_rename(number: int, after: bool = False) -> None:
    """The fallback without an exchange, killed at its `number`-th rename (before it, or once it is done)."""
    modeling_slim._exchange = lambda first, second: False
    rename, calls = os.rename, []

    def counting_rename(source, destination):
        calls.append(source)
        if len(calls) == number and not after:
            _kill()
        rename(source, destination)
        if len(calls) == number:
            _kill()

    os.rename = counting_rename


def _kill_while_removing_the_old_copy() -> None:
    """Swapped in one step, then killed after the first file of the old folder was deleted."""
    exchange = modeling_slim._exchange

    def exchange_then_plant(first, second):
        done = exchange(first, second)
        unlink = os.unlink

        def unlink_then_kill(*args, **kwargs):
            unlink(*args, **kwargs)
            _kill()

        os.unlink = unlink_then_kill  # shutil.rmtree deletes with os.unlink
        return done

    modeling_slim._exchange = exchange_then_plant


def _kill_while_writing(model, directory) -> None:
    with open(os.path.join(directory, "half-written.bin"), "wb") as handle:
        handle.write(b"\0" * 1000)
    _kill()


STAGES = {
    "while_writing": lambda: modeling_slim.SAVE_HOOKS.append(_kill_while_writing),
    "keeping_old_files": lambda: _kill_in("_keep_unwritten_files"),
    "before_exchange": lambda: _kill_in("_exchange"),
    "after_exchange": lambda: _kill_in("_exchange", after=True),
    "removing_old_copy": _kill_while_removing_the_old_copy,
    "between_fallback_renames": lambda: _kill_at_rename(2),
    "after_fallback_renames": lambda: _kill_at_rename(2, after=True),
}
# Which checkpoint is at the path after the kill (the one between the fallback renames only after a recovery).
EXPECTED = {stage: "old" for stage in STAGES} | {
    "after_exchange": "new", "removing_old_copy": "new", "after_fallback_renames": "new"
}


def _weights(model) -> dict:
    return {name: value.detach().clone().contiguous() for name, value in model.state_dict().items()}


def _run(stage: str, folder: str) -> None:
    torch.set_num_threads(1)
    slim = optimize_model(masked_model("bert"))
    target = os.path.join(folder, "slim")
    slim.save_pretrained(target)
    with open(os.path.join(target, "tokenizer.json"), "w", encoding="utf-8") as handle:
        handle.write("{}")
    save_file(_weights(slim), os.path.join(folder, "old.safetensors"))
    with torch.no_grad():
        for parameter in slim.parameters():
            parameter.add_(1.0)
    save_file(_weights(slim), os.path.join(folder, "new.safetensors"))
    STAGES[stage]()
    slim.save_pretrained(target)
    os._exit(3)  # the kill did not come


def main(work_dir: str) -> None:
    report = {}
    for stage in STAGES:
        folder = os.path.join(work_dir, stage)
        os.makedirs(folder)
        pid = os.fork()
        if pid == 0:
            try:
                _run(stage, folder)
            finally:
                os._exit(4)
        _, status = os.waitpid(pid, 0)
        report[stage] = {
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else -os.WEXITSTATUS(status),
            "after_kill": sorted(os.listdir(folder)),
        }
    with open(os.path.join(work_dir, "report.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)


if __name__ == "__main__":
    shutil.rmtree(sys.argv[1], ignore_errors=True)
    os.makedirs(sys.argv[1])
    main(sys.argv[1])
