import os
import shutil
import subprocess
import sys

import pytest
import torch
import transformers
from packaging.version import Version
from safetensors.torch import load_file

HERE = os.path.dirname(__file__)
LAUNCHER = os.path.join(os.path.dirname(sys.executable), "accelerate")

pytestmark = pytest.mark.skipif(shutil.which("accelerate") is None and not os.path.exists(LAUNCHER),
                                reason="accelerate CLI not installed")


def _launch(output_dir, *flags: str) -> subprocess.CompletedProcess:
    # On a CPU machine `--multi_gpu` starts two gloo processes; `--cpu --num_processes 2` would start one.
    command = [LAUNCHER, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
               os.path.join(HERE, "ddp_train.py"), str(output_dir), *flags]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": os.path.dirname(HERE)}
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


def _ranks(output_dir) -> list[dict[str, torch.Tensor]]:
    return [load_file(str(output_dir / f"masks_rank{rank}.safetensors")) for rank in (0, 1)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("ddp")
    result = _launch(output_dir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return _ranks(output_dir)


def test_two_process_ddp_ends_with_identical_masks(uninterrupted):
    ranks = uninterrupted
    assert ranks[0]["world_size"].item() == 2
    assert set(ranks[0]) == set(ranks[1])
    masks = [key for key in ranks[0] if key.startswith("mask_")]
    assert masks
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    kept = sum(ranks[0][key].sum().item() for key in masks)
    assert 0 < kept < sum(ranks[0][key].numel() for key in masks)  # it really pruned


@pytest.mark.skipif(Version(transformers.__version__) < Version("5.18"),
                    reason="transformers < 5.18 loads a CPU DDP run's optimizer state to 'cpu:0', which torch cannot "
                    "restore; GPU runs resume")
def test_a_two_process_run_killed_inside_a_checkpoint_resumes_to_the_same_masks(uninterrupted, tmp_path):
    killed = _launch(tmp_path, "--kill-in-checkpoint")
    assert killed.returncode != 0  # rank 1 died while writing checkpoint-8; the launcher stopped rank 0
    assert sorted(os.listdir(tmp_path)) == ["_partial-checkpoint-8", "checkpoint-4"]
    resumed = _launch(tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert sorted(name for name in os.listdir(tmp_path) if not name.startswith("masks_")) == ["checkpoint-4", "checkpoint-8"]
    for rank, state in enumerate(_ranks(tmp_path)):
        assert state["resumed_from_step"].item() == 4
        for key in uninterrupted[0]:
            if key.startswith("mask_"):
                assert torch.equal(state[key], uninterrupted[0][key]), (rank, key)
            elif key.startswith("scores_"):
                torch.testing.assert_close(state[key], uninterrupted[0][key])
