"""Kills a `SparseTrainer` run at chosen points, resumes each, and records what happened (run by test_training_checkpoints.py).

    python kill_resume_train.py WORK_DIR

One process imports everything once and forks a child per run, so that each kill costs a training
run rather than an import of torch and transformers. The parent runs no torch computation itself
(forking after one would be unsafe). For each stage in `STAGES` a child trains with a SIGKILL planted
at that stage of the second checkpoint write (or between checkpoints); a second child resumes with
`resume_from_checkpoint=True` and writes its final masks. `WORK_DIR/report.json` records, per stage,
the signal that ended the killed child, what the output folder held after the kill (and which of its
checkpoints were incomplete), the checkpoint
the resumed run chose and what the folder held at the end.
"""

from __future__ import annotations

import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(__file__))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import Trainer, TrainerCallback  # noqa: E402
from transformers.trainer_callback import TrainerState  # noqa: E402

import nn_prune_ext.trainer as trainer_module  # noqa: E402
from nn_prune_ext import SparseArgs, SparseTrainer  # noqa: E402
from nn_prune_ext.training_checkpoints import incomplete_reason  # noqa: E402

from conftest import tiny_model  # noqa: E402
from test_trainer import eval_masks, tiny_dataset, training_args  # noqa: E402

MAX_STEPS, SAVE_STEPS, KILLED_SAVE = 12, 4, 2  # checkpoints at 4, 8, 12; kills inside the one of step 8


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_on_call(owner, name: str, after: bool = False) -> None:
    """Replace `owner.name` with a function that SIGKILLs at its KILLED_SAVE-th call (before it runs, or after)."""
    original = getattr(owner, name)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == KILLED_SAVE and not after:
            _kill()
        result = original(*args, **kwargs)
        if calls["n"] == KILLED_SAVE and after:
            _kill()
        return result

    setattr(owner, name, wrapper)


def _half_written_trainer_state() -> None:
    original = TrainerState.save_to_json
    calls = {"n": 0}

    def save_to_json(self, json_path):
        calls["n"] += 1
        if calls["n"] == KILLED_SAVE:
            text = json.dumps(self.__dict__, default=str)
            with open(json_path, "w", encoding="utf-8") as handle:
                handle.write(text[: len(text) // 2])
                handle.flush()
            _kill()
        return original(self, json_path)

    TrainerState.save_to_json = save_to_json


class _KillAtStep(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == SAVE_STEPS + 2:
            _kill()


# Each stage plants its kill; the order follows a checkpoint write.
STAGES = {
    "between_checkpoints": None,  # _KillAtStep
    "before_weights": lambda: _kill_on_call(Trainer, "_save"),
    "after_weights": lambda: _kill_on_call(trainer_module, "_write_scores_atomically"),
    "before_sparse_state": lambda: _kill_on_call(trainer_module, "write_sparse_state"),
    "before_optimizer": lambda: _kill_on_call(Trainer, "_save_optimizer_and_scheduler"),
    "before_rng_state": lambda: _kill_on_call(Trainer, "_save_rng_state"),
    "inside_trainer_state": _half_written_trainer_state,
    "before_publish": lambda: _kill_on_call(trainer_module, "publish_checkpoint"),
    "after_publish": lambda: _kill_on_call(trainer_module, "publish_checkpoint", after=True),
    "after_rotation": lambda: _kill_on_call(trainer_module, "rotate_checkpoints", after=True),
}


def _trainer(output_dir: str, kill_between_checkpoints: bool = False) -> SparseTrainer:
    torch.set_num_threads(1)
    sparse_args = SparseArgs.hybrid(2.0, attention_block_rows=16, attention_block_cols=16, final_threshold=0.5,
                                    initial_warmup=2, final_warmup=2)
    args = training_args(output_dir, max_steps=MAX_STEPS, save_strategy="steps", save_steps=SAVE_STEPS,
                         save_total_limit=1, learning_rate=5e-3)
    callbacks = [_KillAtStep()] if kill_between_checkpoints else None
    return SparseTrainer(model=tiny_model("llama"), args=args, train_dataset=tiny_dataset(), sparse_args=sparse_args,
                         callbacks=callbacks)


def _write_masks(trainer: SparseTrainer, path: str) -> None:
    save_file({f"mask_{i}": mask.contiguous() for i, mask in enumerate(eval_masks(trainer.model))}, path)


def _in_child(run) -> int:
    """Run `run()` in a forked child; returns the signal that ended it (0 for a normal exit)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            run()
        except BaseException as error:  # reported through the exit status; the parent asserts on it
            print(f"child failed: {error!r}", file=sys.stderr)
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return os.WTERMSIG(status)
    if os.WEXITSTATUS(status) != 0:
        raise SystemExit(f"a child run failed with status {os.WEXITSTATUS(status)}")
    return 0


def _listing(folder: str) -> list[str]:
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def main(work_dir: str) -> None:
    report = {}

    def uninterrupted():
        trainer = _trainer(os.path.join(work_dir, "uninterrupted"))
        trainer.train()
        _write_masks(trainer, os.path.join(work_dir, "uninterrupted.safetensors"))

    _in_child(uninterrupted)
    for stage, plant in STAGES.items():
        output_dir = os.path.join(work_dir, stage)

        def killed():
            if plant is not None:
                plant()
            _trainer(output_dir, kill_between_checkpoints=plant is None).train()

        def resumed():
            trainer = _trainer(output_dir)
            trainer.train(resume_from_checkpoint=True)
            with open(os.path.join(work_dir, f"{stage}.resumed_from"), "w", encoding="utf-8") as handle:
                handle.write(os.path.basename(trainer._resumed_from))
            _write_masks(trainer, os.path.join(work_dir, f"{stage}.safetensors"))

        signal_number = _in_child(killed)
        after_kill = _listing(output_dir)
        incomplete = {
            name: incomplete_reason(os.path.join(output_dir, name)) for name in after_kill if name.startswith("checkpoint-")
        }
        _in_child(resumed)
        with open(os.path.join(work_dir, f"{stage}.resumed_from"), encoding="utf-8") as handle:
            resumed_from = handle.read()
        report[stage] = {
            "signal": signal_number,
            "after_kill": after_kill,
            "incomplete_after_kill": {name: reason for name, reason in incomplete.items() if reason is not None},
            "resumed_from": resumed_from,
            "at_end": _listing(output_dir),
        }
    with open(os.path.join(work_dir, "report.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main(sys.argv[1])
