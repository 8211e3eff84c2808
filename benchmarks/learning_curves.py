"""Learning curves on MNIST: FD_classifier at 1, 2 and 4 steps against CPU-minutes of training (issue 13).

    python benchmarks/learning_curves.py --data ../shared/data/mnist --teacher runs/mnist-teacher \
        --runs runs/curves --out docs/results/curves [--arms NAME ...] [--phase train|score|search|report|all]

Every arm (a method, or an ablation of one; listed with issue 13's goals in curve_arms.py) is a bundled MNIST config
with overrides, trained on the train half of the data (`data.holdout_fraction = 0.5`) and checkpointed along the
way; an arm may instead score another arm's run with another of its weight sets (its online weights rather than
the evaluation EMA). A teacher arm
trains a teacher of its own (scored by Heun at its last checkpoint), which a later arm names as its teacher; that
arm's ratios are to its own teacher, and it counts for no goal, unless the teacher arm is its own first stage
(ECT from scratch): then the two stages are one run, on one axis of minutes, against the teacher. Each checkpoint
is scored against the held-out half with --num samples (1 and 2 steps at every checkpoint, 4 steps at the last):
FD on the features of a classifier trained on MNIST (FD_classifier, not comparable with Inception FID), KID and k = 3
precision/recall. Training time is the process CPU time that log.jsonl records per step (all threads), so it
does not depend on what else runs on the machine; runs here use one thread (OMP_NUM_THREADS=1), which makes
CPU-minutes the minutes one core spends. Methods that need a teacher are charged its minutes separately.

Phases: `train` trains the arms one after another, `score` scores every checkpoint not scored yet (cached per
checkpoint in RUNS/ARM/scores-NUM.json, so it can run beside `train`; curve_scoring.py), `report` writes
OUT/table.md, results.json and the plots. `all` does the three in turn. `search` (not in `all`) chooses the
intermediate σ of 2-step sampling by the paper's greedy search on the training half, at the newest checkpoint within
the teacher's minutes, and scores it against the held-out half.
"""

import argparse
import dataclasses
import json
import math
import shlex
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from curve_arms import ARMS, CD_REFERENCE, GOALS, SEARCHED, Arm
from curve_scoring import STEPS_LAST, Scorer, cpu_minutes, score_run, score_teacher, search_run
from torch_consistency.checkpoint import load_checkpoint
from torch_consistency.configs import config_path, load_config
from torch_consistency.data import build_dataset
from torch_consistency.evaluation.evaluate import sample_checkpoint
from torch_consistency.files import write_json_atomic, write_text_atomic
from torch_consistency.plots import save_image_rows
from torch_consistency.sigmas import default_sampling_sigmas
from torch_consistency.training.loop import train


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def arm_config(name: str, arm: Arm, data: str, teacher: Path):
    every = max(1, math.ceil(arm.steps / arm.checkpoints))
    overrides = [
        f"data.path={data}",
        f"train.total_steps={arm.steps}",
        f"train.checkpoint_every={every}",
        f"train.keep_checkpoints={arm.checkpoints + 1}",
        "train.sample_every=0",
        "sampling.sigmas_2=[]",  # the "2 steps" column is the Karras grid's; a searched σ has a column of its own
        *([f"{arm.teacher_key}={teacher}"] if arm.teacher_key else []),
        *(CD_REFERENCE if arm.kind == "cd" else []),
        *arm.overrides,
    ]
    return load_config(config_path(f"mnist_{arm.kind}"), overrides)


def run_folder(runs: Path, name: str, arm: Arm) -> Path:
    """Where an arm's run lies: RUNS/slug(name), or that of the arm whose run it scores."""
    return runs / slug(arm.run or name)


def scores_path(runs: Path, name: str, num: int) -> Path:
    """An arm's cached scores at `num` samples: RUNS/slug(name)/scores-NUM.json (its own, even on another's run)."""
    return runs / slug(name) / f"scores-{num}.json"


def teacher_scores_path(runs: Path, num: int) -> Path:
    """The teacher's cached scores at `num` samples."""
    return runs / f"teacher_scores-{num}.json"


def best_teacher_score(teacher_scores: dict) -> tuple[str, float]:
    """The teacher's best cached score (its Heun level and FD), the reference of every ratio."""
    key = min((k for k in teacher_scores if k != "floor"), key=lambda k: teacher_scores[k]["fd"])
    return key, teacher_scores[key]["fd"]


def arm_teacher(arm: Arm, runs: Path, teacher: Path) -> Path:
    """The run an arm distils or starts from: its teacher arm's, else --teacher."""
    return teacher if arm.teacher_arm is None else run_folder(runs, arm.teacher_arm, ARMS[arm.teacher_arm])


def train_arm(name: str, arm: Arm, data: str, teacher: Path, runs: Path) -> Path:
    """Train the arm into RUNS/slug (resume it if unfinished, reuse it if finished)."""
    folder = run_folder(runs, name, arm)
    teacher = arm_teacher(arm, runs, teacher)
    if arm.teacher_arm is not None and not (
        (teacher / "checkpoints").exists() and load_checkpoint(teacher).step == ARMS[arm.teacher_arm].steps
    ):
        raise SystemExit(f"{name}: train its teacher arm {arm.teacher_arm!r} to the end first")
    if not (folder / "checkpoints").exists():
        train(arm_config(name, arm, data, teacher), folder)
    elif (last := load_checkpoint(folder)).step < last.config.train.total_steps:
        train(None, folder, resume=True)
    return folder


def curve(folder: Path, scores: dict, key: int | str, offset: float = 0.0) -> list[tuple[float, float, int]]:
    """(CPU-minutes, FD, training step) at each checkpoint scored at `key` (a step count or SEARCHED); `offset`:
    the minutes of the run's first stage."""
    points = [
        (offset + cpu_minutes(folder, int(step)), entry[str(key)]["fd"], int(step))
        for step, entry in scores.items()
        if str(key) in entry
    ]
    return sorted(points)


def plot(series: dict, teacher_best: float, floor: float, path: Path, title: str) -> None:
    """FD against CPU-minutes at 1, 2 and 4 steps (log y), one line per arm; teacher-using arms also shifted by their
    teacher's minutes (dotted); past ten arms the colours repeat with dash-dotted lines."""
    figure, axes = plt.subplots(1, 3, figsize=(17, 5), sharey=True)
    colours = plt.get_cmap("tab10").colors
    for axis, steps in zip(axes, STEPS_LAST, strict=True):
        for index, (name, (points_by_steps, charged)) in enumerate(series.items()):
            points = points_by_steps.get(steps, [])
            if not points:
                continue
            x = [p[0] for p in points]
            y = [p[1] for p in points]
            style = {"color": colours[index % len(colours)], "marker": "o" if steps < 4 else "s"}
            axis.plot(x, y, label=name, linestyle="-" if index < len(colours) else "-.", **style)
            if charged:
                axis.plot([v + charged for v in x], y, linestyle=":", alpha=0.5, **style)
        axis.axhline(teacher_best, color="black", linestyle="--", label=f"teacher's best ({teacher_best:.2f})")
        axis.axhline(floor, color="grey", linestyle=":", label=f"data floor ({floor:.2f})")
        axis.set_yscale("log")
        axis.set_xlabel("CPU-minutes of training (dotted: + the teacher's)")
        axis.set_title(f"{steps} step{'s' if steps > 1 else ''}")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("FD_classifier (held-out half)")
    axes[0].legend(fontsize=7, loc="upper right")
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def goal_rows(results: dict, teacher_best: float) -> list[str]:
    """Each goal met or missed: the best scored point within the teacher's own training time, as timed on the
    machine that trained the arm (each entry's `teacher_minutes`)."""
    rows = ["| goal | target | best point | FD | ratio | verdict |", "|---|---:|---|---:|---:|---|"]
    for what, names, keys, target in GOALS:
        points = [
            (fd, name, step, minutes, key)
            for name, result in results.items()
            if (names is None or name in names) and "curves" in result and result["counts_for_goals"]
            for key in keys
            for minutes, fd, step in result["curves"][key]
            if minutes <= result["teacher_minutes"]
        ]
        if not points:
            rows.append(f"| {what} | ≤ {target}× | not measured | | | |")
            continue
        fd, name, step, minutes, key = min(points)
        ratio = fd / teacher_best
        verdict = "met" if ratio <= target else f"missed by {ratio / target:.2f}×"
        where = ", searched σ" if key == SEARCHED else ""
        rows.append(f"| {what} | ≤ {target}× | {name}, step {step}{where} ({minutes:.1f} CPU-min) | {fd:.2f} | "
                    f"{ratio:.2f}× | {verdict} |")  # fmt: skip
    return rows


def measured_entry(
    name: str, arm: Arm, folder: Path, scores: dict, runs: Path, teacher: Path, teacher_minutes: float, results: dict
) -> dict | None:
    """An arm's entry of results.json from its scores here: curves, the minutes charged to it, its note."""
    if arm.kind == "teacher":  # a teacher arm: its Heun score, the reference of the arms it teaches
        key, fd = best_teacher_score(scores)
        return {"kind": arm.kind, "overrides": arm.overrides, "group": arm.group, "steps": arm.steps,
                "teacher_fd": fd, "teacher_key": key, "cpu_minutes": cpu_minutes(folder)}  # fmt: skip
    charged, offset = teacher_minutes if arm.teacher_key else 0.0, 0.0
    if arm.first_stage:  # one run in two stages: the first stage's minutes on its axis, no teacher charged
        charged, offset = 0.0, cpu_minutes(arm_teacher(arm, runs, teacher))
    elif arm.teacher_arm is not None and arm.teacher_arm not in results:
        print(f"{name}: left out, its teacher arm {arm.teacher_arm!r} is not scored")
        return None
    elif arm.teacher_arm is not None:
        charged = results[arm.teacher_arm]["cpu_minutes"]
    curves = {key: curve(folder, scores, key, offset) for key in (*STEPS_LAST, SEARCHED)}
    final = curves[1][-1] if curves[1] else None
    reached = final[2] if final else 0
    note = " ".join(
        filter(None, [
            arm.note,
            f"stopped at step {reached} of {arm.steps}" if reached < arm.steps else "",
            f"its minutes include its first stage ({arm.teacher_arm}, {offset:.1f})" if arm.first_stage else "",
        ])
    )  # fmt: skip
    return {"kind": arm.kind, "overrides": arm.overrides, "group": arm.group, "teacher": arm.teacher_key,
            "teacher_arm": arm.teacher_arm, "steps": arm.steps, "reached": reached, "curves": curves,
            "searched_sigmas": {step: entry[SEARCHED]["sigmas"] for step, entry in scores.items() if SEARCHED in entry},
            "counts_for_goals": arm.teacher_arm is None or arm.first_stage,
            "cpu_minutes": final[0] if final else math.nan, "charged_minutes": charged,
            "teacher_minutes": teacher_minutes, "note": note}  # fmt: skip


def carried_entries(previous: dict, teacher_scores: dict) -> dict[str, dict]:
    """The arms of a previous results.json, each as a measured entry (JSON made the step counts strings) with the
    teacher's minutes of its machine, or none if it was measured against another teacher score or data floor."""
    if not previous:
        return {}
    if previous["teacher"] != teacher_scores:
        print("the previous results.json was measured against another teacher score or data floor: not carried")
        return {}
    carried = {}
    for name, entry in previous["arms"].items():
        curves = {int(key) if key != SEARCHED else key: points for key, points in entry.get("curves", {}).items()}
        minutes = previous["teacher_minutes"]
        carried[name] = {"teacher_minutes": minutes, **entry, **({"curves": curves} if curves else {}), "carried": True}
    return carried


def table_row(name: str, arm: Arm, entry: dict, reference: float) -> str:
    """The arm's row of table.md: the last point at 1, 2 and 4 steps, the searched σ's, the best of each."""
    if arm.kind == "teacher":
        return (f"| {name} | {arm.group} | {' '.join(arm.overrides)} | {arm.steps} | {entry['cpu_minutes']:.1f} | – | "
                f"– | – | – | – | a teacher: {entry['teacher_key']} {entry['teacher_fd']:.2f} |")  # fmt: skip
    curves = entry["curves"]
    last = {s: curves[s][-1][1] if curves[s] else math.nan for s in STEPS_LAST}
    best = {s: min((p[1] for p in curves[s]), default=math.nan) for s in STEPS_LAST}
    searched = " / ".join(
        f"{fd:.2f} ({fd / reference:.2f}×) at σ {entry['searched_sigmas'][str(step)][1]:.3g}, step {step}"
        for _, fd, step in curves[SEARCHED]
    )
    note = " ".join(filter(None, [
        entry["note"],
        f"ratios to its own teacher ({arm.teacher_arm}, {reference:.2f})" if arm.teacher_arm and not arm.first_stage
        else "",
        "†" if entry.get("carried") else "",
    ]))  # fmt: skip
    overrides = " ".join(arm.overrides) or ("(reference)" if arm.kind == "cd" else "(bundled)")
    return (
        f"| {name} | {arm.group} | {overrides} | {entry['reached']} | {entry['cpu_minutes']:.1f} | "
        + " | ".join(f"{last[s]:.2f} ({last[s] / reference:.2f}×)" if curves[s] else "–" for s in STEPS_LAST)
        + f" | {searched or '–'} | "
        + " / ".join(f"{best[s]:.2f}" if curves[s] else "–" for s in STEPS_LAST)
        + f" | {note} |"
    )


def report(args, arms: dict[str, Arm], runs: Path, teacher: Path) -> None:
    """table.md, results.json and the plots. An arm whose run is not in RUNS keeps its entry of the previous
    OUT/results.json (marked †: measured earlier, maybe on another machine, against that machine's teacher time), if
    that file's teacher scores and data floor are this teacher's: the same ruler."""
    teacher_scores = json.loads(teacher_scores_path(runs, args.num).read_text())
    floor = teacher_scores["floor"]["fd"]
    teacher_best_key, teacher_best = best_teacher_score(teacher_scores)
    teacher_minutes = cpu_minutes(teacher)
    previous = json.loads((args.out / "results.json").read_text()) if (args.out / "results.json").exists() else {}
    carried = carried_entries(previous, teacher_scores)
    teacher_config = load_checkpoint(teacher).config
    d, holdout = teacher_config.diffusion, build_dataset(dataclasses.replace(teacher_config.data, split="holdout"))
    karras_second = default_sampling_sigmas(2, d.sigma_min, d.sigma_max, d.rho)[1].item()
    results: dict[str, dict] = {}
    table, series = [], {"method": {}, "ablation": {}}
    for name, arm in arms.items():
        cache_path = scores_path(runs, name, args.num)
        if cache_path.exists():
            scores = json.loads(cache_path.read_text())
            folder = run_folder(runs, name, arm)
            entry = measured_entry(name, arm, folder, scores, runs, teacher, teacher_minutes, results)
        elif name in carried:
            entry = carried[name]
        else:
            continue
        if entry is None:
            continue
        results[name] = entry
        reference = results[arm.teacher_arm]["teacher_fd"] if arm.teacher_arm and not arm.first_stage else teacher_best
        table.append(table_row(name, arm, entry, reference))
        if arm.kind != "teacher":
            group = "method" if arm.group == "method" else "ablation"
            series[group][name] = (entry["curves"], entry["charged_minutes"])
    if series["ablation"] and "CD" in series["method"]:  # the reference CD beside its ablations
        series["ablation"] = {"CD (reference)": series["method"]["CD"], **series["ablation"]}
    title = f"MNIST, {args.num} samples per point against the held-out half"
    if series["method"]:
        plot(series["method"], teacher_best, floor, args.out / "methods.png", f"Methods — {title}")
    if series["ablation"]:
        plot(series["ablation"], teacher_best, floor, args.out / "ablations.png",
             f"Ablations — {title}")  # fmt: skip
    carried_minutes = sorted({round(e["teacher_minutes"], 1) for e in results.values() if e.get("carried")})
    metric = "FD_classifier"
    lines = [
        "# Learning curves on MNIST",
        "",
        f"{metric}: Fréchet distance on the features of a classifier trained on MNIST; not comparable with Inception "
        f"FID. {args.num} samples per point against the {len(holdout)} held-out "
        f"images. The data floor (the train half against the held-out half, {args.num} images each) is "
        f"{floor:.3f}: the bias of the estimate at this count. Teacher: {teacher_minutes:.1f} CPU-minutes of "
        f"training; its best at ≥ 35 NFE is {teacher_best:.3f} ({teacher_best_key}), the reference of every ratio.",
        "",
        "CPU-minutes: process CPU time of the training steps (log.jsonl), one thread; the teacher's minutes are "
        "charged to CD, ECT and sCD separately (dotted lines in the plots). Every CD arm is the reference recipe "
        f"({' '.join(CD_REFERENCE)}: mnist_cd when the ablations ran) with its overrides; the other arms are their "
        "bundled configs with theirs. 2 steps sample at σ_max and the second σ of a Karras grid of three "
        f"({karras_second:.3g}); *searched σ*: at the second σ that the paper's greedy search (reference.md §6) "
        "chose on the FD of 2000 samples against the training half, scored as the others against the held-out "
        "half, at the newest checkpoint within the teacher's minutes (`--phase search`).",
        *(["", "†: measured in an earlier session whose runs are not in RUNS (the entry of the previous "
           "results.json), on a machine where the same teacher run took "
           f"{' / '.join(f'{m:g}' for m in carried_minutes)} CPU-minutes: its points count for a goal within that "
           "time."] if carried_minutes else []),
        "",
        f"| arm | group | overrides | steps | CPU-min | {metric} 1 step | 2 steps | 4 steps | 2 steps, searched σ "
        "| best 1/2/4 | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
        *table,
        "",
        "Goals (issue 13), each the best scored point of a run within the teacher's training time "
        f"({teacher_minutes:.0f} CPU-minutes here), against the teacher's best:",
        "",
        *goal_rows(results, teacher_best),
        "",
        "Teacher at ≥ 35 NFE: "
        + ", ".join(f"{k} ({v['nfe']} NFE) {v['fd']:.3f}" for k, v in teacher_scores.items() if k != "floor"),
        "",
        *(["![methods](methods.png)", ""] if series["method"] else []),
        *(["![ablations](ablations.png)", ""] if series["ablation"] else []),
        "Made by:",
        "",
        "```",
        "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "```",
        "",
    ]  # fmt: skip
    write_json_atomic(args.out / "results.json", {"teacher": teacher_scores, "teacher_minutes": teacher_minutes,
                                                  "num_samples": args.num, "arms": results})  # fmt: skip
    write_text_atomic(args.out / "table.md", "\n".join(lines))
    print(f"report: {args.out / 'table.md'}")


def sample_rows(arms: dict[str, Arm], runs: Path, teacher: Path, path: Path) -> None:
    """One row of 12 samples per arm whose run is here (its last checkpoint, 1 and 2 steps) beside the teacher's."""
    rows = {"teacher (Heun, 35 NFE)": sample_checkpoint(load_checkpoint(teacher), 12, teacher_levels=18, seed=1).x}
    for name, arm in arms.items():
        folder = run_folder(runs, name, arm)
        if not (folder / "checkpoints").exists():
            continue
        checkpoint = load_checkpoint(folder)
        if arm.kind == "teacher":
            rows[f"{name} (Heun, 35 NFE)"] = sample_checkpoint(checkpoint, 12, teacher_levels=18, seed=1).x
        else:
            for steps in (1, 2):
                rows[f"{name}, {steps} step{'s' if steps > 1 else ''}"] = sample_checkpoint(
                    checkpoint, 12, weights=arm.weights, steps=steps, seed=1
                ).x
    save_image_rows(rows, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="MNIST folder (IDX files)")
    parser.add_argument("--teacher", type=Path, required=True, help="a trained MNIST teacher run")
    parser.add_argument("--runs", type=Path, default=Path("runs/curves"))
    parser.add_argument("--out", type=Path, default=Path("docs/results/curves"))
    parser.add_argument("--num", type=int, default=5000, help="samples per score (default 5000: the held-out half)")
    parser.add_argument("--arms", nargs="*", help="only these arms (names as in ARMS)")
    parser.add_argument("--points", type=int, default=5, help="checkpoints scored per arm, evenly spaced (default 5)")
    parser.add_argument("--batch", type=int, default=128, help="sampling batch (on a CPU, 1024 is 1.5× slower)")
    parser.add_argument("--teacher-levels", type=int, nargs="+", default=[18], help="Heun levels (18: 35 NFE)")
    parser.add_argument("--samples", type=Path, help="the picture of the arms' samples (default OUT/samples.png)")
    parser.add_argument("--phase", choices=("train", "score", "search", "report", "all"), default="all")
    args = parser.parse_args()
    arms = {name: ARMS[name] for name in args.arms} if args.arms else ARMS
    if args.phase in ("train", "all"):
        for name, arm in arms.items():
            train_arm(name, arm, args.data, args.teacher, args.runs)
    if args.phase in ("score", "all"):
        scorer = Scorer(args.teacher, args.runs, args.num, args.batch, args.points)
        score_teacher(args.teacher, scorer, teacher_scores_path(args.runs, args.num), args.teacher_levels)
        for name, arm in arms.items():
            folder, cache_path = run_folder(args.runs, name, arm), scores_path(args.runs, name, args.num)
            if not (folder / "checkpoints").exists():
                continue
            if arm.kind == "teacher":
                score_teacher(folder, scorer, cache_path, args.teacher_levels)
            else:
                score_run(folder, cache_path, scorer, name, arm.weights)
    if args.phase == "search":  # not part of `all`: each search samples about 16,000 images
        scorer = Scorer(args.teacher, args.runs, args.num, args.batch, args.points)
        teacher_minutes = cpu_minutes(args.teacher)
        for name, arm in arms.items():
            folder, cache_path = run_folder(args.runs, name, arm), scores_path(args.runs, name, args.num)
            if arm.kind in ("teacher", "scm") or arm.weights or not cache_path.exists():
                continue  # σ's are searched for consistency models' evaluation weights only
            if arm.teacher_arm is not None and not arm.first_stage:
                continue  # ratios to its own teacher: it counts for no goal
            stage = cpu_minutes(arm_teacher(arm, args.runs, args.teacher)) if arm.first_stage else 0.0
            search_run(folder, cache_path, scorer, name, teacher_minutes - stage)
    if args.phase in ("report", "all"):
        report(args, ARMS, args.runs, args.teacher)
        sample_rows(arms, args.runs, args.teacher, args.samples or args.out / "samples.png")


if __name__ == "__main__":
    main()
