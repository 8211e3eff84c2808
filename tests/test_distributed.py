"""Two gloo processes under torchrun against one process with the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import TINY
from torch_consistency.checkpoint import load_checkpoint


def run(out, processes, *overrides):
    sets = [item for override in (*TINY, *overrides) for item in ("--set", override)]
    command = [*(["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]), "-m"]
    command = [sys.executable, *command, "torch_consistency", "train", "ct", "--out", str(out), "--no-progress", *sets]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_two_ranks_match_one_process_with_the_same_global_batch(tmp_path):
    overrides = ("train.total_steps=6", "train.checkpoint_every=3", "optim.batch_size=16", "ct.mu0=0.5")
    run(tmp_path / "two", 2, *overrides)  # the loop checks at every checkpoint that both ranks hold equal weights
    run(tmp_path / "one", 1, *overrides)
    two, one = load_checkpoint(tmp_path / "two"), load_checkpoint(tmp_path / "one")
    assert two.step == one.step == 6
    for weight_set, tensors in one.weights.items():
        for name, tensor in tensors.items():
            assert torch.allclose(tensor, two.weights[weight_set][name], atol=1e-5, rtol=0), (weight_set, name)
    # both logged the loss of the whole global batch (rank 0 averages it over the ranks)
    logged = [[json.loads(line)["loss"] for line in (tmp_path / run / "log.jsonl").open()] for run in ("one", "two")]
    assert logged[0] == pytest.approx(logged[1], abs=1e-5)
