"""benchmarks/guidance.py end to end on digits with a tiny budget (--quick), in a real subprocess."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "guidance.py"


def test_the_guidance_benchmark_runs_end_to_end_and_checks_its_goals(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--runs", str(tmp_path / "runs"), "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
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
