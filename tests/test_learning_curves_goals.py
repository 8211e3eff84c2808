"""Issue 13's goals as `benchmarks/learning_curves.py` reads them from curves: which points count, and the verdicts."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
from curve_arms import GOALS, SEARCHED
from learning_curves import goal_rows


def result(curves: dict, counts: bool = True) -> dict:
    """An arm's report entry: (CPU-minutes, FD, step) points per scores key."""
    return {"curves": {1: [], 2: [], 4: [], SEARCHED: [], **curves}, "counts_for_goals": counts}


def test_each_goal_takes_the_best_counted_point_within_the_teachers_time():
    teacher_best, teacher_minutes = 2.0, 60.0
    results = {
        "CD N 6→18, mean of weights": result(
            {1: [(20.0, 3.2, 600)], 2: [(20.0, 3.0, 600)], SEARCHED: [(20.0, 2.2, 600)]}
        ),
        "CD half width": result({1: [(10.0, 2.1, 600)], 2: [(10.0, 1.0, 600)]}, counts=False),  # its own teacher
        "iCT 2200 steps": result({2: [(50.0, 5.0, 1760), (61.0, 3.0, 2200)], SEARCHED: [(50.0, 4.2, 1760)]}),
        "ECT from scratch": result({2: [(55.0, 3.9, 600)]}),
    }
    rows = dict(zip((goal[0] for goal in GOALS), goal_rows(results, teacher_best, teacher_minutes)[2:], strict=True))
    best_1, best_2, cd_1, ct_family, no_teacher = rows.values()
    # 3.2 / 2.0 = 1.6× against 1.5×: the half-width arm's 2.1 counts for no goal
    assert "| CD N 6→18, mean of weights, step 600 (20.0 CPU-min) | 3.20 | 1.60× | missed by 1.07× |" in best_1
    # 2 steps at the searched σ count for the 2-step goals: 2.2 / 2.0 = 1.10× ≤ 1.15×
    assert "| CD N 6→18, mean of weights, step 600, searched σ (20.0 CPU-min) | 2.20 | 1.10× | met |" in best_2
    assert "| 3.20 | 1.60× | met |" in cd_1
    # iCT's 3.0 at 61 CPU-minutes is past the teacher's 60; its searched 4.2 at step 1760 is the best in time
    assert "| iCT 2200 steps, step 1760, searched σ (50.0 CPU-min) | 4.20 | 2.10× | missed by 1.05× |" in ct_family
    assert "| ECT from scratch, step 600 (55.0 CPU-min) | 3.90 | 1.95× | met |" in no_teacher


def test_a_goal_without_a_counted_point_says_so():
    rows = goal_rows({"CD half width": result({1: [(10.0, 2.1, 600)]}, counts=False)}, 2.0, 60.0)
    assert all("not measured" in row for row in rows[2:])
