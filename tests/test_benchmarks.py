"""The benchmark scripts that make figures in docs/results, run end to end with a tiny budget."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from torch_consistency.checkpoint import load_checkpoint
from torch_consistency.configs import config_path, load_config
from torch_consistency.training.loop import train

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from mmd_noise import ratio_of_means  # noqa: E402


def run_script(name: str, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, str(BENCHMARKS / name), *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    return result


def test_ect_q_sweep_trains_each_arm_as_documented_and_writes_the_table(tmp_path):
    teacher = ["network.kind=unet", "network.preset=tiny", "data.name=digits", "data.holdout_fraction=0.2",
               "optim.batch_size=8", "train.total_steps=2"]  # fmt: skip
    train(load_config(None, teacher), tmp_path / "teacher", progress=False)
    run_script(
        "ect_q_sweep.py", "--dataset", "digits", "--teacher", tmp_path / "teacher", "--steps", "4", "--every", "2",
        "--score-every", "2", "--num", "20", "--arms", "q=2,stage=2", "q=16,lr=1e-4", "--set", "optim.batch_size=8",
        "--runs", tmp_path / "runs",
        "--out", tmp_path / "out",
    )  # fmt: skip
    # each arm is the bundled digits_ect run with the arm's q, stage length (one stage if none) and lr
    staged, single = (load_checkpoint(tmp_path / "runs" / name).config for name in ("2-a-stage-every-2-steps",
                                                                                   "16-lr-0.0001"))  # fmt: skip
    assert (staged.ect.q, staged.ect.stage_steps, staged.optim.lr) == (2.0, 2, 2e-4)  # digits_ect's lr
    assert (single.ect.q, single.ect.stage_steps, single.optim.lr) == (16.0, 100_000, 1e-4)
    assert single.train.total_steps == 4 and single.train.method == "ect" and single.optim.batch_size == 8
    results = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert set(results) == {"2, a stage every 2 steps", "16, lr 0.0001"}
    assert all(set(r["two_step"]) == {"2", "4"} and len(r["two_step"]["4"]) == 2 for r in results.values())
    report = (tmp_path / "out" / "results.md").read_text()
    assert "| q | 2 | 4 | 1 step at 4 |" in report
    row = next(line for line in report.splitlines() if line.startswith("| 16, lr 0.0001 |"))
    assert row.split("|")[3].strip() == f"{results['16, lr 0.0001']['two_step']['4'][0]:.2f}"
    assert "benchmarks/ect_q_sweep.py --dataset digits" in report  # the command that made it


def test_consistency_error_benchmark_writes_every_row_and_the_summary_from_its_runs(tmp_path):
    run_script(
        "consistency_error.py", "--steps", "4", "--teacher-steps", "2", "--batch", "16", "--width", "16",
        "--depth", "1", "--samples", "30", "--ode-steps", "8", "--out", tmp_path,
    )  # fmt: skip
    short = load_checkpoint(tmp_path / "ct-short").config.ct
    toy = load_config(config_path("toy_ct")).ct
    assert short == toy  # the recipe of the bundled toy_ct
    paper = load_checkpoint(tmp_path / "ct").config.ct
    assert (paper.s0, paper.s1, paper.mu0, paper.distance) == (2, 150, 0.9, "l2")  # and the paper's
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    assert list(results) == ["cd", "ct", "ct-short", "ict", "ect", "sct", "scd"]
    report = (tmp_path / "results.md").read_text()
    rows = [line.split("|")[1].strip() for line in report.splitlines() if line.startswith("| ") and "---" not in line]
    toy_label = (
        f"ct (s0 = {toy.s0}, s1 = {toy.s1}, mu0 = {toy.mu0}, schedule = {toy.schedule}, distance = "
        f"{toy.distance}, weighting = {toy.weighting}, toy_ct's)"
    )
    assert rows[1:] == ["cd", "ct", toy_label, "ict", "ect", "sct", "scd"]
    cd_row = next(line for line in report.splitlines() if line.startswith("| cd |"))
    assert cd_row.split("|")[2].strip() == f"{results['cd']['relative_error']:.4f}"
    assert f"CD (distilling the exact denoiser) reaches {results['cd']['relative_error']:.3f}" in report
    verdicts = next(line for line in report.splitlines() if line.startswith("CD (distilling"))
    assert verdicts.count(toy_label) == 1  # within 2× of CD or beyond it, not both
    assert "benchmarks/consistency_error.py --steps 4" in report


def test_the_noise_studys_ratio_of_means_and_its_delta_method_error():
    # model MMD² 3, 5 (mean 4, variance 2), teacher 1.5, 1, 0.5 (mean 1, variance 0.25): √(4 / 1) = 2, and
    # se = ½ · 2 · √(2 / (2 · 4²) + 0.25 / (3 · 1²)) = √(0.0625 + 0.083333...) = 0.381881...
    ratio, error = ratio_of_means([3.0, 5.0], [1.5, 1.0, 0.5])
    assert ratio == pytest.approx(2.0) and error == pytest.approx(0.3818813, rel=1e-6)
