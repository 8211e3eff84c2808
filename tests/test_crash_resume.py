"""A run killed with SIGKILL at random moments resumes from its last complete checkpoint, bit for bit."""

import json
import random
import signal
import subprocess
import sys
import time

import torch

from helpers import TINY
from torch_consistency.training.checkpoint import load_checkpoint

OVERRIDES = [
    *TINY,
    "train.total_steps=60",
    "train.checkpoint_every=1",
    "train.keep_checkpoints=2",
    "network.dropout=0.1",
]


def command(*args):
    sets = [item for override in OVERRIDES for item in ("--set", override)]
    return [
        sys.executable,
        "-m",
        "torch_consistency",
        "train",
        *args,
        "--no-progress",
        *([] if "--resume" in args else sets),
    ]


def log_lines(run_dir):
    path = run_dir / "log.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


def start(args):
    return subprocess.Popen(command(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_sigkill_at_random_moments_then_resume_matches_an_uninterrupted_run(tmp_path):
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    assert subprocess.run(command("ct", "--out", str(reference)), capture_output=True).returncode == 0

    rng = random.Random(0)
    kills, kills_during_write = 0, 0
    process = start(["ct", "--out", str(crashed)])
    while kills < 5 or kills_during_write < 1:
        assert kills < 30, "could not kill the run during a checkpoint write"
        seen = log_lines(crashed)
        while process.poll() is None and (log_lines(crashed) <= seen or not (crashed / "checkpoints").exists()):
            time.sleep(0.01)
        if process.poll() is not None:  # finished before we killed it: start over from scratch is not needed
            break
        time.sleep(rng.uniform(0.0, 0.05))
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        kills_during_write += any(p.name.startswith(".tmp-") for p in (crashed / "checkpoints").iterdir())
        process = start(["--resume", str(crashed)])
    _, errors = process.communicate(timeout=300)
    assert process.returncode == 0, errors
    assert kills >= 5 and kills_during_write >= 1, (kills, kills_during_write)

    expected, got = load_checkpoint(reference), load_checkpoint(crashed)
    assert got.step == expected.step == 60
    for weight_set, tensors in expected.weights.items():
        for name, tensor in tensors.items():
            assert torch.equal(tensor, got.weights[weight_set][name]), (weight_set, name)
    losses = [[json.loads(line)["loss"] for line in (run / "log.jsonl").open()] for run in (reference, crashed)]
    assert len(losses[0]) == 60 and losses[0] == losses[1]
    assert not any(p.name.startswith(".tmp-") for p in (crashed / "checkpoints").iterdir())
