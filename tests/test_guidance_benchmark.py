"""benchmarks/guidance.py end to end on digits with a tiny budget (--quick), in a real subprocess."""

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import torch
from safetensors.torch import save_file

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "guidance.py"
CONFIGS = Path(__file__).parent.parent / "src" / "torch_consistency" / "configs"


def run_quick(runs: Path, out: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--runs", str(runs), "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_the_guidance_benchmark_runs_end_to_end_and_checks_its_goals(tmp_path):
    out = tmp_path / "out"
    result = run_quick(tmp_path / "runs", out)
    results = json.loads((out / "results.json").read_text())
    rows = {(r["model"], r["w"], r["steps"]): r for r in results["rows"]}
    for w in (0.0, 1.0, 2.0, 4.0):
        assert rows[("teacher", w, None)]["nfe"] == (5 if w in (0.0, 1.0) else 10)  # Heun 3 levels; CFG doubles
        for steps in (1, 2):
            assert rows[("guided CD", w, steps)]["nfe"] == steps
    assert {("CD", None, 1), ("CD", None, 2)} <= set(rows)
    assert all(0 <= r["label_rate"] <= 1 and r["fd"] > 0 for r in results["rows"])
    # every goal is decided from the rows: 4 w's × 2 step counts × (label rate, FD), and the two 1-step label rates
    goals = results["goals"]
    assert len(goals) == 18
    teacher, student = rows[("teacher", 2.0, None)], rows[("guided CD", 2.0, 1)]
    label_goal = next(g for g in goals if g["text"].startswith("w = 2, 1 step(s): guided student's label rate"))
    assert label_goal["met"] == (abs(student["label_rate"] - teacher["label_rate"]) <= 0.02)
    fd_goal = next(g for g in goals if g["text"].startswith("w = 2, 1 step(s): guided student's FD"))
    assert fd_goal["met"] == (student["fd"] <= 1.5 * teacher["fd"])
    assert sum(line.startswith(("met: ", "MISSED: ")) for line in result.stdout.splitlines()) == 18
    readme = (out / "README.md").read_text()
    assert "| 4 |" in readme and "benchmarks/guidance.py --quick" in readme and (out / "samples.png").stat().st_size


def test_a_rerun_reads_the_teachers_rows_from_the_cache(tmp_path):
    """The teacher's rows are kept under RUNS/cache, one file per w; a rerun reads them instead of sampling again (a
    row altered in its file comes back altered) and reproduces every other row. The students sample 2 steps at the
    σ's of the bundled configs, even from reused runs whose checkpoints do not carry them."""
    runs = tmp_path / "runs"
    run_quick(runs, tmp_path / "first")
    first = json.loads((tmp_path / "first" / "results.json").read_text())["rows"]
    bundled = tomllib.loads((CONFIGS / "mnist_cd_cfg.toml").read_text())["sampling"]["sigmas_2"]
    assert len(bundled) == 2
    for meta_path in (runs / "cd-cfg").rglob("meta.json"):  # as if the run had been trained before the σ's existed
        meta = json.loads(meta_path.read_text())
        assert meta["config"]["sampling"]["sigmas_2"] == bundled
        meta["config"]["sampling"]["sigmas_2"] = []
        meta_path.write_text(json.dumps(meta))
    assert len(list((runs / "cache").glob("teacher-row-*.safetensors"))) == 4
    [kept] = (runs / "cache").glob("teacher-row-*-w4-*.safetensors")
    row = next(r for r in first if r["model"] == "teacher" and r["w"] == 4.0)
    save_file(
        {"one_per_class": torch.zeros(10, 1, 8, 8)}, str(kept), metadata={"row": json.dumps({**row, "fd": 123.0})}
    )
    run_quick(runs, tmp_path / "second")
    second = json.loads((tmp_path / "second" / "results.json").read_text())["rows"]
    assert [r for r in second if r["fd"] != 123.0] == [r for r in first if r is not row]
    assert next(r for r in second if r["model"] == "teacher" and r["w"] == 4.0)["fd"] == 123.0
    students = json.loads((tmp_path / "second" / "results.json").read_text())["students"]
    assert students["guided CD"]["sigmas_2"] == bundled
