import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

HERE = os.path.dirname(__file__)


@pytest.mark.skipif(shutil.which("accelerate") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "accelerate")), reason="accelerate CLI not installed")
def test_two_process_ddp_ends_with_identical_masks(tmp_path):
    launcher = os.path.join(os.path.dirname(sys.executable), "accelerate")
    # On a CPU machine `--multi_gpu` starts two gloo processes; `--cpu --num_processes 2` would start one.
    command = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
               os.path.join(HERE, "ddp_train.py"), str(tmp_path)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [load_file(str(tmp_path / f"masks_rank{rank}.safetensors")) for rank in (0, 1)]
    assert ranks[0]["world_size"].item() == 2
    assert set(ranks[0]) == set(ranks[1])
    masks = [key for key in ranks[0] if key.startswith("mask_")]
    assert masks
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    kept = sum(ranks[0][key].sum().item() for key in masks)
    assert 0 < kept < sum(ranks[0][key].numel() for key in masks)  # it really pruned
