import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers.trainer_utils import get_last_checkpoint, sort_checkpoints

from nn_prune_ext import InputError, SparseArgs, SparseTrainer
from nn_prune_ext.training_checkpoints import (
    TRAINER_STATE_NAME,
    check_resumable,
    incomplete_reason,
    newest_complete_checkpoint,
    publish_checkpoint,
    remove_stale_staging,
    staging_run_dir,
)

from conftest import tiny_model
from kill_resume_train import STAGES
from test_trainer import tiny_dataset, training_args

pytestmark = pytest.mark.usefixtures("quiet_transformers")
HERE = os.path.dirname(__file__)


def _checkpoint(folder, step: int, complete: bool = True) -> str:
    path = os.path.join(folder, f"checkpoint-{step}")
    os.makedirs(path)
    with open(os.path.join(path, "model.safetensors"), "w") as handle:
        handle.write("weights")
    if complete:
        with open(os.path.join(path, TRAINER_STATE_NAME), "w") as handle:
            json.dump({"global_step": step}, handle)
    return path


# ----- a SparseTrainer run killed anywhere resumes to the masks of an uninterrupted run ---------------
@pytest.fixture(scope="module")
def kill_report(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("kills")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.path.dirname(HERE)}
    result = subprocess.run([sys.executable, os.path.join(HERE, "kill_resume_train.py"), str(work_dir)],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(work_dir / "report.json") as handle:
        return work_dir, json.load(handle)


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_kill_at_any_stage_resumes_to_the_masks_of_an_uninterrupted_run(kill_report, stage):
    work_dir, report = kill_report
    outcome = report[stage]
    assert outcome["signal"] == 9  # the run really was killed there
    assert outcome["incomplete_after_kill"] == {}  # no half-written checkpoint-N is ever visible
    visible = sorted((name for name in outcome["after_kill"] if name.startswith("checkpoint-")),
                     key=lambda name: int(name.split("-")[1]))
    assert outcome["resumed_from"] == visible[-1]  # the newest complete one
    assert [name for name in outcome["at_end"] if name.startswith("_")] == []  # no staging folder is left
    reference = load_file(str(work_dir / "uninterrupted.safetensors"))
    resumed = load_file(str(work_dir / f"{stage}.safetensors"))
    assert 0 < sum(mask.sum().item() for mask in reference.values()) < sum(m.numel() for m in reference.values())
    for key, mask in reference.items():
        assert torch.equal(resumed[key], mask), key


def test_the_kills_hit_inside_the_second_checkpoint_write(kill_report):
    _, report = kill_report
    # Killed before the staged checkpoint was renamed: only checkpoint-4 is there (plus the staging folder).
    assert report["before_publish"]["after_kill"] == ["_partial-checkpoint-8", "checkpoint-4"]
    assert report["after_publish"]["after_kill"] == ["checkpoint-4", "checkpoint-8"]  # not yet rotated
    assert report["after_rotation"]["after_kill"] == ["checkpoint-8"]


# ----- staging and publishing -------------------------------------------------------------------------
def test_staging_folders_are_invisible_to_the_trainers_own_checkpoint_lookups(tmp_path):
    _checkpoint(tmp_path, 4)
    os.makedirs(os.path.join(staging_run_dir(str(tmp_path), 8), "checkpoint-8"))
    assert get_last_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-4")
    assert sort_checkpoints(str(tmp_path)) == [str(tmp_path / "checkpoint-4")]


def test_publish_replaces_an_older_folder_of_the_same_name(tmp_path):
    old = _checkpoint(tmp_path, 8)
    staging = staging_run_dir(str(tmp_path), 8)
    new = _checkpoint(staging, 8)
    with open(os.path.join(new, "model.safetensors"), "w") as handle:
        handle.write("new weights")
    publish_checkpoint(staging, old)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-8"]
    with open(os.path.join(old, "model.safetensors")) as handle:
        assert handle.read() == "new weights"


def test_a_kill_between_the_two_renames_is_repaired_at_the_next_start(tmp_path):
    _checkpoint(tmp_path, 4)
    old = _checkpoint(tmp_path, 8)
    staging = staging_run_dir(str(tmp_path), 8)
    new = _checkpoint(staging, 8)
    with open(os.path.join(new, "model.safetensors"), "w") as handle:
        handle.write("new weights")
    script = (
        "import os, signal, sys\n"
        "from nn_prune_ext.training_checkpoints import publish_checkpoint\n"
        "rename = os.rename\n"
        "def kill_at_second(*args, calls=[]):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 2:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    rename(*args)\n"
        "os.rename = kill_at_second\n"
        "publish_checkpoint(sys.argv[1], sys.argv[2])\n"
    )
    result = subprocess.run([sys.executable, "-c", script, staging, old], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": os.path.dirname(HERE)})
    assert result.returncode == -9, result.stderr[-2000:]
    assert not os.path.exists(old)  # the window: nothing at the path ...
    assert newest_complete_checkpoint(str(tmp_path))[0] == str(tmp_path / "checkpoint-4")
    assert remove_stale_staging(str(tmp_path)) == [staging]  # ... until the next start renames the new copy in
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-4", "checkpoint-8"]
    with open(os.path.join(old, "model.safetensors")) as handle:
        assert handle.read() == "new weights"


def test_stale_staging_without_a_finished_write_is_removed(tmp_path):
    _checkpoint(tmp_path, 4)
    staging = staging_run_dir(str(tmp_path), 8)
    _checkpoint(staging, 8, complete=False)
    os.makedirs(tmp_path / "_partial-checkpoint-notastep")  # not ours: left alone
    assert remove_stale_staging(str(tmp_path)) == [staging]
    assert sorted(os.listdir(tmp_path)) == ["_partial-checkpoint-notastep", "checkpoint-4"]


# ----- choosing the checkpoint to resume from ---------------------------------------------------------
def test_the_newest_complete_checkpoint_is_chosen_and_incomplete_ones_are_named(tmp_path):
    _checkpoint(tmp_path, 4)
    _checkpoint(tmp_path, 8)
    _checkpoint(tmp_path, 12, complete=False)
    damaged = _checkpoint(tmp_path, 16)
    with open(os.path.join(damaged, TRAINER_STATE_NAME), "w") as handle:
        handle.write('{"global_st')
    found, passed_over = newest_complete_checkpoint(str(tmp_path))
    assert found == str(tmp_path / "checkpoint-8")
    assert passed_over == {
        str(tmp_path / "checkpoint-16"): passed_over[str(tmp_path / "checkpoint-16")],
        str(tmp_path / "checkpoint-12"): f"it has no {TRAINER_STATE_NAME}",
    }
    assert "cannot be read" in passed_over[str(tmp_path / "checkpoint-16")]
    assert incomplete_reason(str(tmp_path / "checkpoint-8")) is None


def test_an_incomplete_or_missing_checkpoint_given_explicitly_is_refused(tmp_path):
    with pytest.raises(InputError, match="trainer_state.json.*not completely written"):
        check_resumable(_checkpoint(tmp_path, 12, complete=False))
    with pytest.raises(InputError, match="is not a folder"):
        check_resumable(str(tmp_path / "checkpoint-99"))


def _trainer(output_dir, **overrides) -> SparseTrainer:
    sparse_args = SparseArgs.hybrid(2.0, attention_block_rows=16, attention_block_cols=16, final_threshold=0.5,
                                    initial_warmup=1, final_warmup=1)
    settings = dict(max_steps=6, save_strategy="steps", save_steps=2, learning_rate=5e-3)
    settings.update(overrides)
    return SparseTrainer(model=tiny_model("bert"), args=training_args(output_dir, **settings),
                         train_dataset=tiny_dataset(), eval_dataset=tiny_dataset(16, seed=1), sparse_args=sparse_args)


def test_resume_true_passes_over_a_half_written_checkpoint_of_another_writer(tmp_path):
    _trainer(tmp_path).train()
    # A plain Trainer killed while writing checkpoint-6 would leave this: no trainer_state.json.
    half = tmp_path / "checkpoint-6"
    (half / TRAINER_STATE_NAME).unlink()
    resumed = _trainer(tmp_path)
    resumed.train(resume_from_checkpoint=True)
    assert resumed._resumed_from == str(tmp_path / "checkpoint-4")
    assert resumed.state.global_step == 6
    assert incomplete_reason(str(half)) is None  # the resumed run wrote checkpoint-6 again, completely


def test_resume_true_without_a_complete_checkpoint_is_an_input_error(tmp_path):
    (tmp_path / "checkpoint-2").mkdir()
    with pytest.raises(InputError, match="holds no complete checkpoint-N folder .1 incomplete"):
        _trainer(tmp_path).train(resume_from_checkpoint=True)


def test_best_checkpoint_and_rotation_name_the_published_folders(tmp_path):
    trainer = _trainer(tmp_path, eval_strategy="steps", eval_steps=2, save_total_limit=2,
                       load_best_model_at_end=True, metric_for_best_model="loss", greater_is_better=False)
    trainer.train()
    best = trainer.state.best_model_checkpoint
    assert os.path.dirname(best) == str(tmp_path) and os.path.basename(best).startswith("checkpoint-")
    left = sorted(name for name in os.listdir(tmp_path) if not name.endswith(".json"))
    # The newest checkpoint and the best one survive the rotation; no staging folder is left.
    assert "checkpoint-6" in left and os.path.basename(best) in left and len(left) <= 2
    with open(tmp_path / "checkpoint-6" / TRAINER_STATE_NAME) as handle:
        assert json.load(handle)["best_model_checkpoint"] == best


def test_every_checkpoint_file_lands_in_the_published_folder(tmp_path):
    _trainer(tmp_path, save_steps=6).train()
    names = set(os.listdir(tmp_path / "checkpoint-6"))
    assert {TRAINER_STATE_NAME, "model.safetensors", "optimizer.pt", "rng_state.pth", "sparse_state.json",
            "mask_scores.safetensors"} <= names
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-6"]  # nothing beside it, no staging folder
