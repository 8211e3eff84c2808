"""Issue 13's goals as `benchmarks/learning_curves.py` reads them from curves: which points count, and the verdicts."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
from curve_arms import GOALS, SEARCHED
from learning_curves import carried_entries, goal_rows


def result(curves: dict, counts: bool = True, teacher_minutes: float = 60.0) -> dict:
    """An arm's report entry: (CPU-minutes, FD, step) points per scores key, and the teacher's minutes on the machine
    that trained the arm."""
    curves = {1: [], 2: [], 4: [], SEARCHED: [], **curves}
    return {"curves": curves, "counts_for_goals": counts, "teacher_minutes": teacher_minutes}


def test_each_goal_takes_the_best_counted_point_within_the_teachers_time():
    teacher_best = 2.0
    results = {
        "CD N 6→18, mean of weights": result(
            {1: [(20.0, 3.2, 600)], 2: [(20.0, 3.0, 600)], SEARCHED: [(20.0, 2.2, 600)]}
        ),
        "CD half width": result({1: [(10.0, 2.1, 600)], 2: [(10.0, 1.0, 600)]}, counts=False),  # its own teacher
        "iCT 2200 steps": result({2: [(50.0, 5.0, 1760), (61.0, 3.0, 2200)], SEARCHED: [(50.0, 4.2, 1760)]}),
        "ECT from scratch": result({2: [(55.0, 3.9, 600)]}),
    }
    rows = dict(zip((goal[0] for goal in GOALS), goal_rows(results, teacher_best)[2:], strict=True))
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
    rows = goal_rows({"CD half width": result({1: [(10.0, 2.1, 600)]}, counts=False)}, 2.0)
    assert all("not measured" in row for row in rows[2:])


def test_an_entry_carried_from_a_previous_results_file_counts_within_its_own_machines_teacher_time():
    """A previous results.json (step counts as JSON strings, the teacher's minutes at its top level) gives entries
    that decide goals as measured ones do, each within the teacher time of the machine that trained it: a point at
    65 CPU-minutes counts against an earlier machine's 68.6 and not against this one's 60. Measured against another
    teacher score or data floor (another teacher or classifier), nothing is carried."""
    teacher = {"heun-18": {"fd": 2.0}, "floor": {"fd": 0.07}}
    entry = result({2: [(65.0, 3.0, 2200)]})
    del entry["teacher_minutes"]  # entries written before the field existed
    previous = json.loads(json.dumps({"teacher": teacher, "teacher_minutes": 68.6, "arms": {"iCT 2200 steps": entry}}))
    carried = carried_entries(previous, teacher)
    assert carried["iCT 2200 steps"]["carried"] and carried["iCT 2200 steps"]["teacher_minutes"] == 68.6
    rows = goal_rows(carried, 2.0)
    assert "| iCT 2200 steps, step 2200 (65.0 CPU-min) | 3.00 | 1.50× | met |" in rows[5]
    here = goal_rows({"iCT 2200 steps": result({2: [(65.0, 3.0, 2200)]}, teacher_minutes=60.0)}, 2.0)
    assert "not measured" in here[5]
    assert carried_entries(previous, {**teacher, "floor": {"fd": 0.0747}}) == {}
    assert carried_entries({}, teacher) == {}
