"""The `cm` command in real subprocesses: a round trip, and one-line errors for bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import TINY
from torch_consistency.checkpoint import load_checkpoint

CM = [sys.executable, "-m", "torch_consistency"]


def cm(*args, cwd=None):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([*CM, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def sets(*overrides):
    return [item for override in overrides for item in ("--set", override)]


def test_round_trip_train_sample_eval(tmp_path):
    tiny = sets(*TINY, "train.total_steps=20")
    result = cm("train", "teacher", "--out", tmp_path / "teacher", "--no-progress", *tiny)
    assert result.returncode == 0, result.stderr
    student = [*tiny, *sets(f"cd.teacher={tmp_path / 'teacher'}")]
    result = cm("train", "cd", "--out", tmp_path / "wide", *student, *sets("network.width=64"))
    assert_one_line_error(
        result, "network.width = 64 cannot be set for a cd student", "(network.width = 32 in cd.teacher"
    )
    assert not (tmp_path / "wide").exists()
    result = cm("train", "cd", "--out", tmp_path / "cd", "--no-progress", *student, *sets("network.dropout=0.1"))
    assert result.returncode == 0, result.stderr
    network = load_checkpoint(tmp_path / "cd").config.network
    assert network.dropout == 0.1 and network.width == load_checkpoint(tmp_path / "teacher").config.network.width
    result = cm("sample", "--checkpoint", tmp_path / "cd", "--steps", "2", "--num", "64", "--out", tmp_path / "s")
    assert result.returncode == 0, result.stderr
    samples = np.load(tmp_path / "s" / "samples.npz")
    assert samples["samples"].shape == (64, 2) and int(samples["nfe"]) == 2
    assert (tmp_path / "s" / "samples.png").stat().st_size > 0
    result = cm("sample", "--checkpoint", tmp_path / "cd", "--ts", "0,9,17", "--num", "8", "--out", tmp_path / "ts")
    assert result.returncode == 0, result.stderr
    result = cm("eval", "--checkpoint", tmp_path / "cd", "--steps", "1,2", "--num", "100", "--out", tmp_path / "e")
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "e" / "results.json").read_text())
    assert [s["nfe"] for s in results["scores"]] == [1, 2]
    assert results["consistency_error"]["mean"] > 0
    result = cm(
        "sample", "--checkpoint", tmp_path / "teacher", "--teacher-steps", "5", "--num", "8", "--out", tmp_path / "t"
    )
    assert result.returncode == 0 and "9 NFE" in result.stdout


def test_resume_from_the_command_line(tmp_path):
    tiny = sets(*TINY, "train.total_steps=20", "train.checkpoint_every=10")
    assert cm("train", "ct", "--out", tmp_path / "run", "--no-progress", *tiny).returncode == 0
    result = cm("train", "--resume", tmp_path / "run", "--no-progress")
    assert result.returncode == 0, result.stderr


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["diffusion.sigma_min=80", "diffusion.sigma_max=1"], "sigma_min < sigma_max"),
        (["cd.num_points=1"], "num_points"),
        (["cd.target_ema=1.5"], "target_ema"),
        (["cd.solver=rk45"], "cd.solver"),
        (["cd.distance=lpips"], "cd.distance"),
        (["data.name=faces"], "data.name"),
    ],
)
def test_bad_config_values(tmp_path, overrides, fragment):
    result = cm("train", "cd", "--out", tmp_path / "run", *sets("cd.teacher=exact", *overrides))
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "run").exists()


def test_missing_and_foreign_checkpoints(tmp_path):
    result = cm("train", "cd", "--out", tmp_path / "run", *sets(f"cd.teacher={tmp_path / 'nothing'}"))
    assert_one_line_error(result, "does not exist")
    assert not (tmp_path / "run").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "weights.safetensors").write_bytes(b"\x00" * 64)
    result = cm("sample", "--checkpoint", foreign, "--out", tmp_path / "out")
    assert_one_line_error(result, "not a torch-consistency checkpoint")
    assert not (tmp_path / "out").exists()


def test_malformed_toml(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[train]\ntotal_steps = = 3\n")
    result = cm("train", "teacher", config, "--out", tmp_path / "run")
    assert_one_line_error(result, "not valid TOML")
    assert not (tmp_path / "run").exists()


def test_help_lists_the_commands():
    result = cm("--help")
    assert result.returncode == 0
    for command in ("train", "sample", "eval", "demo"):
        assert command in result.stdout


def test_the_quick_demo_writes_both_parts_into_one_report(tmp_path):
    """The 2-D part runs in this process and the digits part in a second one beside it: both reach the report."""
    out = tmp_path / "demo"
    result = cm("demo", "--quick", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "resource_tracker" not in result.stderr  # the second process exited by itself, not killed
    report = (out / "report.md").read_text()
    assert "## 2-D: eight Gaussians" in report and "## Images: scikit-learn digits (8×8)" in report
    results = json.loads((out / "results.json").read_text())
    assert {s["label"] for s in results["digits"]["scores"]} == {"teacher (Heun)", "CD", "CT"}
    assert {s["label"] for s in results["toy"]["scores"]} >= {"teacher (Heun)", "CD", "CT", "iCT"}
    assert (out / "toy" / "samples.png").stat().st_size and (out / "digits" / "samples.png").stat().st_size


@pytest.mark.parametrize(("section", "other"), [("toy", "digits"), ("digits", "toy")])
def test_the_demo_refuses_a_folder_holding_another_run_before_any_work(tmp_path, section, other):
    out = tmp_path / "demo"
    teacher = out / section / "teacher"
    steps = sets("train.total_steps=1", "train.checkpoint_every=1")
    assert cm("train", "teacher", f"{section}_teacher", "--out", teacher, "--no-progress", *steps).returncode == 0
    result = cm("demo", "--out", out)
    assert_one_line_error(result, f"{teacher} holds a different run")
    assert not (out / other).exists()
