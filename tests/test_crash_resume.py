"""A run killed with SIGKILL at random moments resumes from its last complete checkpoint, bit for bit."""

import json
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import TINY
from torch_consistency.checkpoint import load_checkpoint
from torch_consistency.configs import load_config
from torch_consistency.errors import ConfigError
from torch_consistency.training.loop import train as train_run

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


def load_config_and_train(overrides, run_dir):
    train_run(load_config(None, ["train.method=ct", *overrides]), run_dir, progress=False)


def test_a_run_killed_during_its_first_checkpoint_write_resumes_from_step_zero(tmp_path):
    """Killed while writing its first checkpoint, a run holds only checkpoints/.tmp-step-…, config.json and
    log.jsonl. --resume starts it again from step 0, says so, and ends bit-identical to an uninterrupted run."""
    big = [*TINY, "network.width=768", "network.depth=2", "train.total_steps=3", "train.checkpoint_every=1"]
    overrides = [item for override in big for item in ("--set", override)]
    train = [sys.executable, "-m", "torch_consistency", "train", "ct", "--no-progress", *overrides, "--out"]
    reference = tmp_path / "reference"
    assert subprocess.run([*train, str(reference)], capture_output=True).returncode == 0
    for attempt in range(10):  # poll for the temporary folder of the first write and kill the run inside it
        crashed = tmp_path / f"crashed-{attempt}"
        process = subprocess.Popen([*train, str(crashed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while process.poll() is None and not list((crashed / "checkpoints").glob(".tmp-step-00000001-*")):
            time.sleep(0.0005)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if sorted(p.name for p in (crashed / "checkpoints").iterdir()) == [f".tmp-step-00000001-{process.pid}"]:
            break
    else:
        pytest.fail("could not kill the run during its first checkpoint write")
    assert sorted(p.name for p in crashed.iterdir()) == ["checkpoints", "config.json", "log.jsonl"]

    with pytest.raises(ConfigError, match="already holds a run; resume it"):  # a new run may not reuse the folder
        load_config_and_train(big, crashed)
    resumed = subprocess.run([*command("--resume", str(crashed))], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "has no complete checkpoint" in resumed.stdout and "starting it again from step 0" in resumed.stdout

    expected, got = load_checkpoint(reference), load_checkpoint(crashed)
    assert got.step == expected.step == 3
    for weight_set, tensors in expected.weights.items():
        for name, tensor in tensors.items():
            assert torch.equal(tensor, got.weights[weight_set][name]), (weight_set, name)
    assert (reference / "log.jsonl").read_text().count("\n") == (crashed / "log.jsonl").read_text().count("\n") == 3
    losses = [[json.loads(line)["loss"] for line in (run / "log.jsonl").open()] for run in (reference, crashed)]
    assert losses[0] == losses[1]
    assert not any(p.name.startswith(".tmp-") for p in (crashed / "checkpoints").iterdir())
