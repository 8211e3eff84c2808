"""The README's and docs/results' claims say what the committed tables show, and name commands that exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
RESULTS = ROOT / "docs" / "results"


def test_the_heun_claim_is_what_its_table_shows():
    rows = [line.split() for line in (RESULTS / "heun_accuracy.txt").read_text().splitlines()[1:] if line.strip()]
    # columns: name, d=, K=, std=, error at 18, 40 and 80 levels, the 40→80 ratio
    ratios = {" ".join(row[:4]): float(row[7]) for row in rows}  # "eight_gaussians d=2 K=8 std=0.01": 2.1
    for row in rows:  # the ratio column is the ratio of the (3-digit) errors beside it
        assert abs(float(row[7]) - float(row[5]) / float(row[6])) < 0.06
    sharpest = min(ratios, key=ratios.get)
    others = sorted(value for key, value in ratios.items() if key != sharpest)
    claim = " ".join(README.split())  # the README wraps lines
    assert f"falls {others[0]:.1f}–{others[-1]:.1f}× when its steps double" in claim
    assert f"on {len(others)} mixtures, but only {ratios[sharpest]:.1f}× on the sharpest" in claim.replace("five", "5")
    assert sharpest.startswith("eight_gaussians") and f"std {sharpest.split('std=')[1]})" in claim


def test_every_results_folder_names_a_committed_command():
    index = (RESULTS / "README.md").read_text()
    scripts = set(re.findall(r"benchmarks/[\w/]+\.py", index))
    assert {"benchmarks/consistency_error.py", "benchmarks/ect_q_sweep.py"} <= scripts
    assert all((ROOT / script).is_file() for script in scripts), scripts
    table = (RESULTS / "consistency-error" / "results.md").read_text()
    assert "python benchmarks/consistency_error.py" in table and table.count("| method |") == 1  # one table, one run
