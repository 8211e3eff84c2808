"""Reproduce the paper's comparisons at small scale, with an equal training budget per method (reference.md §11).

    python benchmarks/paper_table/run.py --dataset digits --out docs/results/digits
    python benchmarks/paper_table/run.py --dataset mnist --data ../shared/data/mnist --teacher runs/mnist-teacher \
        --steps 600 --out docs/results/mnist

Trains (or reuses, in --runs) one teacher and, from it, CD with Heun and Euler, CD with l2, l1 and pseudo-Huber
(LPIPS with --lpips VGG16_WEIGHTS LPIPS_HEADS), CT and the improved methods, every one for --steps steps of
--batch images. Scores each at 1, 2 and 4 steps, the teacher with Euler and Heun over NFE, and the data floor
(the metric between the training and held-out halves), on the features of a classifier trained on the data.
Writes OUT/report.md, OUT/results.json, OUT/metric_vs_nfe.png and OUT/samples.png.
"""

import argparse
import dataclasses
import json
import math
import shlex
import sys
import time
from pathlib import Path

from torch_consistency.checkpoint import list_checkpoints, load_checkpoint
from torch_consistency.configs import config_path, load_config
from torch_consistency.data import build_dataset
from torch_consistency.evaluation.classifier import load_or_train_classifier
from torch_consistency.evaluation.evaluate import sample_checkpoint
from torch_consistency.evaluation.features import classifier_extractor
from torch_consistency.evaluation.images import prepare_reference, score_images
from torch_consistency.files import write_json_atomic, write_text_atomic
from torch_consistency.plots import save_image_rows, save_metric_plot
from torch_consistency.training.loop import train

# name → (bundled config, overrides, the config key naming the teacher or None); every method that uses a
# teacher uses the same one.
METHODS = {
    "CD (Heun, l2)": ("cd", ["cd.solver=heun", "cd.distance=l2"], "cd.teacher"),
    "CD (Euler, l2)": ("cd", ["cd.solver=euler", "cd.distance=l2"], "cd.teacher"),
    "CD (Heun, l1)": ("cd", ["cd.solver=heun", "cd.distance=l1"], "cd.teacher"),
    "CD (Heun, pseudo-Huber)": ("cd", ["cd.solver=heun", "cd.distance=pseudo-huber"], "cd.teacher"),
    "CT (l2)": ("ct", [], None),
    "iCT": ("ict", [], None),
    "ECT": ("ect", [], "ect.teacher"),
    "sCT": ("scm", ["scm.mode=sct", "train.precision=bf16"], None),  # bf16 autocast: sCM's stability claim
    "sCD": ("scm", ["scm.mode=scd", "train.precision=bf16"], "scm.teacher"),
}
STEPS = (1, 2, 4)
CHECKPOINTS = 12  # per run, for ECT's curve against CD
TEACHER_SWEEP = {"euler": (4, 8, 18, 35), "heun": (3, 5, 10, 18)}  # Karras levels (Heun: 2K−1 NFE)


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


def train_or_reuse(config, folder: Path) -> Path:
    """Train `config` into `folder`, resume it if unfinished, reuse it if finished."""
    if not (folder / "checkpoints").exists():
        train(config, folder)
    elif (last := load_checkpoint(folder)).step < last.config.train.total_steps:
        train(None, folder, resume=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("digits", "mnist"), required=True)
    parser.add_argument("--data", default="", help="MNIST folder (IDX files)")
    parser.add_argument("--teacher", type=Path, help="a trained teacher run (default: train one in --runs)")
    parser.add_argument("--steps", type=int, default=800, help="training steps per consistency method")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the bundled config's)")
    parser.add_argument("--num", type=int, default=2000, help="samples per score")
    parser.add_argument("--lpips", nargs=2, metavar=("VGG16", "HEADS"), help="LPIPS weights: adds CD (Heun, LPIPS)")
    parser.add_argument("--methods", nargs="*", help="only these methods (names as in the report)")
    parser.add_argument("--runs", type=Path, help="training runs (default runs/paper_table/DATASET)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    runs = args.runs or Path("runs/paper_table") / args.dataset
    base = [f"data.path={args.data}"] if args.data else []
    base += [f"optim.batch_size={args.batch}"] if args.batch else []
    methods = dict(METHODS)
    if args.lpips:
        methods["CD (Heun, LPIPS)"] = (
            "cd", ["cd.distance=lpips", f"cd.lpips_weights={','.join(args.lpips)}"], "cd.teacher"
        )  # fmt: skip
    if args.methods:
        methods = {name: methods[name] for name in args.methods}

    tic = time.perf_counter()
    teacher_dir = args.teacher or train_or_reuse(
        load_config(config_path(f"{args.dataset}_teacher"), base), runs / "teacher"
    )
    folders, seconds = {}, {}
    for name, (kind, overrides, teacher_key) in methods.items():
        every = max(1, args.steps // CHECKPOINTS)  # intermediate checkpoints: ECT's time to reach CD's quality
        extra = [f"train.total_steps={args.steps}", f"train.checkpoint_every={every}",
                 f"train.keep_checkpoints={CHECKPOINTS + 1}", "train.sample_every=0"]  # fmt: skip
        extra += [f"{teacher_key}={teacher_dir}"] if teacher_key else []
        extra += [f"scm.tangent_warmup_steps={max(1, args.steps // 10)}"] if kind == "scm" else []
        config = load_config(config_path(f"{args.dataset}_{kind}"), [*base, *overrides, *extra])
        folders[name] = train_or_reuse(config, runs / slug(name))
        # from the run's log: the same whether trained now or reused
        seconds[name] = training_seconds(folders[name], config.optim.batch_size)

    teacher = load_checkpoint(teacher_dir)
    data = teacher.config.data
    train_split = build_dataset(data)
    holdout = build_dataset(dataclasses.replace(data, split="holdout"))
    extractor = classifier_extractor(
        load_or_train_classifier(build_dataset(dataclasses.replace(data, holdout_fraction=0.0)), runs / "cache")
    )
    reference = prepare_reference(extractor, holdout.to_float(holdout.images), runs / "cache", holdout.name)
    floor_count = min(len(train_split), len(holdout), args.num)
    floor = score_images("data floor", train_split.to_float(train_split.images[:floor_count]), 0, reference, extractor)

    scores, series, rows = [], {}, {"real (held out)": holdout.to_float(holdout.images[:12])}
    for solver, levels in TEACHER_SWEEP.items():
        for count in levels:
            generated = sample_checkpoint(teacher, args.num, teacher_levels=count, solver=solver, seed=1)
            score = score_images(f"teacher ({solver})", generated.x, generated.nfe, reference, extractor)
            scores.append(score)
            series.setdefault(score.label, []).append((score.nfe, score.fd))
        rows[f"teacher ({solver}, {generated.nfe} NFE)"] = generated.x[:12]
    for name, folder in folders.items():
        checkpoint = load_checkpoint(folder)
        for steps in STEPS:
            generated = sample_checkpoint(checkpoint, args.num, steps=steps, seed=1)
            score = score_images(name, generated.x, generated.nfe, reference, extractor)
            scores.append(score)
            series.setdefault(name, []).append((score.nfe, score.fd))
            if steps <= 2:
                rows[f"{name}, {steps} step{'s' if steps > 1 else ''}"] = generated.x[:12]

    catch_up = ect_catch_up(folders, seconds, by_name(scores), reference, extractor, args.num)
    args.out.mkdir(parents=True, exist_ok=True)
    metric = extractor.metric_name
    save_metric_plot(series, metric, args.out / "metric_vs_nfe.png", floor=floor.fd)
    save_image_rows(rows, args.out / "samples.png")
    by = by_name(scores)
    results = {
        "dataset": args.dataset, "metric": metric, "features": extractor.description, "steps": args.steps,
        "batch": teacher.config.optim.batch_size if not args.batch else args.batch, "num_samples": args.num,
        "teacher": str(teacher_dir), "teacher_steps": teacher.step, "train_seconds": seconds,
        "scores": [s.to_dict() for s in scores], "data_floor": floor.to_dict(), "ect_catch_up": catch_up,
        "losses_finite": {name: losses_finite(folder) for name, folder in folders.items()},
        "minutes": (time.perf_counter() - tic) / 60,
    }  # fmt: skip
    write_json_atomic(args.out / "results.json", results)
    write_text_atomic(args.out / "report.md", report(args, results, by, metric, floor.fd, methods))
    print(f"report: {args.out / 'report.md'}")


def by_name(scores) -> dict:
    return {(s.label, s.nfe): s.fd for s in scores}


def training_seconds(folder: Path, batch_size: int, up_to_step: int | None = None) -> float:
    """Compute time of a run's steps (from log.jsonl's samples/s; checkpoint writes excluded)."""
    seconds = 0.0
    for line in (folder / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if up_to_step is None or record["step"] <= up_to_step:
            seconds += 1.0 / record["samples_per_s"]
    return seconds * batch_size


def losses_finite(folder: Path) -> bool:
    return all(math.isfinite(json.loads(line)["loss"]) for line in (folder / "log.jsonl").read_text().splitlines())


def ect_catch_up(folders: dict, seconds: dict, by: dict, reference, extractor, num: int) -> dict | None:
    """When ECT's 2-step metric first reaches CD's final 2-step metric, and the training time it took vs CD's."""
    if "ECT" not in folders or "CD (Heun, l2)" not in folders:
        return None
    goal = by[("CD (Heun, l2)", 2)]
    cd_seconds = seconds["CD (Heun, l2)"]
    curve = []
    for path in list_checkpoints(folders["ECT"]):
        checkpoint = load_checkpoint(path)
        generated = sample_checkpoint(checkpoint, num, steps=2, seed=1)
        fd = score_images("ECT", generated.x, generated.nfe, reference, extractor).fd
        elapsed = training_seconds(folders["ECT"], checkpoint.config.optim.batch_size, checkpoint.step)
        curve.append({"step": checkpoint.step, "seconds": elapsed, "fd": fd})
    reached = next((point for point in curve if point["fd"] <= goal), None)
    stays = next((p for i, p in enumerate(curve) if all(q["fd"] <= goal for q in curve[i:])), None)
    return {"cd_2step": goal, "cd_seconds": cd_seconds, "curve": curve, "reached": reached, "stays": stays,
            "fraction_of_cd_time": reached["seconds"] / cd_seconds if reached else None,
            "stays_fraction_of_cd_time": stays["seconds"] / cd_seconds if stays else None}  # fmt: skip


def report(args, results: dict, by: dict, metric: str, floor: float, methods: dict) -> str:
    """The markdown report: tables, the paper's claims checked, the command that made it."""
    lines = [
        f"# The paper's comparisons on {args.dataset}",
        "",
        f"Budget: {args.steps} training steps of {results['batch']} images for every consistency method, from the "
        f"same teacher ({results['teacher_steps']} steps). {metric}: Fréchet distance on the features of "
        f"{results['features']}; not comparable with Inception FID. {args.num} samples per score against the "
        f"held-out half; data floor (training half vs held-out half) {floor:.3f}.",
        "",
        "| method | 1 step | 2 steps | 4 steps | training time |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in methods:
        cells = " | ".join(f"{by.get((name, s), float('nan')):.3f}" for s in STEPS)
        lines.append(f"| {name} | {cells} | {results['train_seconds'].get(name, 0) / 60:.1f} min |")
    lines += ["", f"Teacher over NFE ({metric}):", "", "| solver | " + " | ".join("NFE" for _ in range(4)) + " |",
              "|---|---:|---:|---:|---:|"]  # fmt: skip
    for solver in TEACHER_SWEEP:
        label = f"teacher ({solver})"
        cells = [f"{nfe}: {fd:.3f}" for (name, nfe), fd in sorted(by.items()) if name == label]
        lines.append(f"| {solver} | " + " | ".join(cells) + " |")
    best_teacher = min(fd for (name, _), fd in by.items() if name.startswith("teacher"))
    catch_up = results["ect_catch_up"]
    if catch_up is not None:
        reached = catch_up["reached"]
        curve = ", ".join(f"step {p['step']} ({p['seconds'] / 60:.1f} min) {p['fd']:.3f}" for p in catch_up["curve"])
        first = (f"reaches it after {catch_up['fraction_of_cd_time']:.0%} of CD's time" if reached
                 else "does not reach it within the budget")  # fmt: skip
        stays = (f" and stays at or below it from step {catch_up['stays']['step']}, after "
                 f"{catch_up['stays_fraction_of_cd_time']:.0%} of CD's time" if catch_up["stays"] else "")  # fmt: skip
        cd = f"CD (Heun, l2) reaches {catch_up['cd_2step']:.3f} in {catch_up['cd_seconds'] / 60:.1f} min of training"
        lines += ["", f"ECT against CD (2 steps): {cd}; ECT's curve: {curve}. ECT {first}{stays}."]
    lines += ["", "Training losses finite (no NaN) for: "
              + ", ".join(name for name, ok in results["losses_finite"].items() if ok)]  # fmt: skip
    lines += ["", "## The paper's claims, checked", "", *claims(by, best_teacher, methods, catch_up), "",
              "![metric against NFE](metric_vs_nfe.png)", "", "![samples](samples.png)", "",
              "Made by:", "", "```", "python " + " ".join(shlex.quote(a) for a in sys.argv), "```", ""]  # fmt: skip
    return "\n".join(lines)


def claims(by: dict, best_teacher: float, methods: dict, catch_up: dict | None) -> list[str]:
    """✓/✗ for each comparison the paper makes, from the measured numbers."""

    def check(text: str, holds: bool | None) -> str:
        return f"- {'✓' if holds else '✗' if holds is not None else '–'} {text}"

    def fd(name: str, steps: int) -> float | None:
        return by.get((name, steps))

    out = []
    cd, ct = fd("CD (Heun, l2)", 1), fd("CT (l2)", 1)
    if cd is not None and ct is not None:
        out.append(check(f"CD 1-step better than CT 1-step ({cd:.3f} vs {ct:.3f})", cd < ct))
    for name in methods:
        one, two = fd(name, 1), fd(name, 2)
        if one is not None and two is not None:
            out.append(check(f"{name}: 2 steps better than 1 ({two:.3f} vs {one:.3f})", two < one))
    heun, euler = fd("CD (Heun, l2)", 1), fd("CD (Euler, l2)", 1)
    if heun is not None and euler is not None:
        out.append(check(f"CD: Heun at least as good as Euler at equal N, 1 step ({heun:.3f} vs {euler:.3f})",
                         heun <= euler))  # fmt: skip
    ict = fd("iCT", 1)
    if ict is not None and ct is not None:
        out.append(
            check(f"iCT 1-step ≤ 0.6× CT 1-step ({ict:.3f} vs 0.6 × {ct:.3f} = {0.6 * ct:.3f})", ict <= 0.6 * ct)
        )
    two = fd("CD (Heun, l2)", 2)
    if two is not None:
        out.append(check(f"CD 2-step within 2× of the teacher's best ({two:.3f} vs {best_teacher:.3f})",
                         two <= 2 * best_teacher))  # fmt: skip
    if catch_up is not None:  # ECT (§9): at or below CD's 2-step metric, for good, within half of CD's time
        fraction = catch_up["stays_fraction_of_cd_time"]
        when = f"from {fraction:.0%} of CD's time on" if fraction is not None else "not within the budget"
        out.append(check(f"ECT at or below CD's 2-step metric within half of CD's training time ({when})",
                         fraction is not None and fraction <= 0.5))  # fmt: skip
    return out


if __name__ == "__main__":
    main()
