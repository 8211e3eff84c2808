"""Classifier-free guidance distilled into a consistency model, as latent consistency models do it (issue 14 D2),
and class-conditional CD's requested-label rate (issue 11 D4).

    python benchmarks/guidance.py --data ../shared/data/mnist --out docs/results/guidance
    python benchmarks/guidance.py --quick --out /tmp/guidance      # digits, a tiny budget: checks the pipeline only

Trains (or reuses, in --runs) a class-conditional teacher with label dropout (bundled config mnist_teacher_cfg), a
guided CD student that takes w as an input (mnist_cd_cfg: its teacher steps follow D_w = D_∅ + w·(D_c − D_∅) with
w ~ U[0, 4] per sample, a fifth of them at w = 0 exactly, where the student sees the null class, and a fifth at w = 1
exactly) and a plain class-conditional CD student (mnist_cd from the same teacher, following D_c).
For w ∈ {0 (unconditional), 1 (conditional), 2, 4} it scores the guided teacher (Heun, 18 levels: 35 evaluations per
pass, 70 with CFG's two passes) and the guided student at 1 and 2 steps, and the plain CD student at 1 and 2 steps:
the requested-label rate of the evaluation classifier and FD_classifier against the held-out half, with an equal
number of samples of every class. Checks the goals (student label rate within 2 points of its teacher's at each w,
student FD within 1.5× of the teacher's; class-conditional CD's 1-step label rate ≥ 95 %) and prints them.
Writes OUT/README.md (tables, goals, command), OUT/results.json and OUT/samples.png (rows per w and model).
The teacher's rows, most of the time, are kept in RUNS/cache (or --cache) under a hash of its weights and the sampling
settings, so a rerun for a new student samples only the students. A variant of the guided student, trained in its own
--runs from the same --teacher and scored against the same --cache:

    python benchmarks/guidance.py --data ../shared/data/mnist --teacher runs/guidance/mnist/teacher-cfg \
        --cache runs/guidance/mnist/cache --runs runs/guidance/no-share --skip-plain-cd \
        --student-set cd.conditional_fraction=0 --out docs/results/guidance/without-conditional-share
"""

import argparse
import dataclasses
import hashlib
import json
import shlex
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from torch_consistency.checkpoint import Checkpoint, load_checkpoint
from torch_consistency.configs import config_path, load_config
from torch_consistency.data import build_dataset
from torch_consistency.evaluation.classifier import ClassifierSettings, load_or_train_classifier
from torch_consistency.evaluation.evaluate import sample_checkpoint
from torch_consistency.evaluation.features import classifier_extractor
from torch_consistency.evaluation.images import label_rate, prepare_reference, score_images
from torch_consistency.files import atomic_path, write_json_atomic, write_text_atomic
from torch_consistency.generate import sampling_sigmas
from torch_consistency.plots import save_image_rows
from torch_consistency.training.loop import train

GUIDANCE = (0.0, 1.0, 2.0, 4.0)
STUDENT_STEPS = (1, 2)
LABEL_RATE_POINTS = 0.02  # the student's label rate within 2 points of its teacher's
FD_RATIO = 1.5  # the student's FD within 1.5× of its teacher's
CD_LABEL_RATE = 0.95  # class-conditional CD at 1 step (issue 11 D4)
# --quick: digits, a tiny MLP and a few steps of everything (about a minute on 2 CPU cores); numbers mean nothing
QUICK = [
    "data.name=digits", "data.holdout_fraction=0.2", "network.kind=mlp", "network.width=64", "network.depth=2",
    "network.embedding_dim=32", "optim.batch_size=32", "train.checkpoint_every=1000", "train.sample_every=0",
]  # fmt: skip
QUICK_STEPS = {"teacher": 60, "cd": 15}


def train_or_reuse(config, folder: Path) -> Path:
    """Train `config` into `folder`, resume it if unfinished, reuse it if finished."""
    if not (folder / "checkpoints").exists():
        train(config, folder)
    elif (last := load_checkpoint(folder)).step < last.config.train.total_steps:
        train(None, folder, resume=True)
    return folder


def weights_digest(checkpoint: Checkpoint) -> str:
    """A short hash of a checkpoint's weights file: what the teacher's kept rows are keyed by."""
    return hashlib.sha256((checkpoint.path / "weights.safetensors").read_bytes()).hexdigest()[:16]


def teacher_row_path(cache: Path, digest: str, w: float, num: int, levels: int, device: str) -> Path:
    """Where the teacher's row at w is kept: its samples are fixed (seed 1) by its weights and these settings, and
    its 70-NFE Heun passes are most of this script's time."""
    return cache / f"teacher-row-{digest}-w{w:g}-n{num}-levels{levels}-{device}.safetensors"


def write_row(path: Path, row: dict, one_per_class: torch.Tensor) -> None:
    with atomic_path(path) as temporary:
        save_file({"one_per_class": one_per_class.contiguous()}, str(temporary), metadata={"row": json.dumps(row)})


def read_row(path: Path) -> tuple[dict, torch.Tensor]:
    with safe_open(str(path), "pt") as kept:
        return json.loads(kept.metadata()["row"]), kept.get_tensor("one_per_class")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="", help="MNIST folder (IDX files with labels)")
    parser.add_argument("--quick", action="store_true", help="digits and a tiny budget: a check of the pipeline")
    parser.add_argument("--teacher", type=Path, help="a trained guided teacher run (default: train one in --runs)")
    parser.add_argument("--num", type=int, default=None, help="samples per score (default 2000; --quick 200)")
    parser.add_argument("--teacher-levels", type=int, default=None, help="teacher Karras levels (default 18; quick 3)")
    parser.add_argument("--skip-plain-cd", action="store_true", help="do not train the unguided class-conditional CD")
    parser.add_argument("--device", default="cpu", help="where to sample: cpu, cuda ... (training: train.device)")
    parser.add_argument("--runs", type=Path, help="training runs (default runs/guidance/mnist or runs/guidance/quick)")
    parser.add_argument("--cache", type=Path, help="the classifier, reference and teacher rows (default RUNS/cache)")
    parser.add_argument(
        "--student-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an override of the guided student's config (repeatable): a variant to compare",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not args.quick and not args.data:
        parser.error("--data MNIST_FOLDER is needed (or --quick for the digits check)")
    runs = args.runs or Path("runs/guidance") / ("quick" if args.quick else "mnist")
    cache = args.cache or runs / "cache"
    num = args.num or (200 if args.quick else 2000)
    levels = args.teacher_levels or (3 if args.quick else 18)
    base = QUICK if args.quick else [f"data.path={args.data}"]

    def config(name: str, method: str, *extra: str):
        steps = [f"train.total_steps={QUICK_STEPS[method]}"] if args.quick else []
        return load_config(config_path(name), [*base, *steps, *extra])

    tic = time.perf_counter()
    teacher_dir = args.teacher or train_or_reuse(config("mnist_teacher_cfg", "teacher"), runs / "teacher-cfg")
    configs = {"guided CD": config("mnist_cd_cfg", "cd", f"cd.teacher={teacher_dir}", *args.student_set)}
    if not args.skip_plain_cd:
        # the recipe mnist_cd_cfg builds on: mnist_cd without its adversarial term
        configs["CD"] = config("mnist_cd", "cd", f"cd.teacher={teacher_dir}", "cd.adversarial_weight=0")
    folders = {"guided CD": "cd-cfg", "CD": "cd"}
    students = {name: train_or_reuse(c, runs / folders[name]) for name, c in configs.items()}
    # a student samples at its bundled config's σ's, which a reused run trained before them does not carry
    student_sigmas = {
        name: {steps: sampling_sigmas(c, steps) for steps in STUDENT_STEPS} for name, c in configs.items()
    }

    teacher = load_checkpoint(teacher_dir)
    data = teacher.config.data
    train_split, holdout = build_dataset(data), build_dataset(dataclasses.replace(data, split="holdout"))
    settings = ClassifierSettings(epochs=2) if args.quick else ClassifierSettings()
    trained = load_or_train_classifier(build_dataset(dataclasses.replace(data, holdout_fraction=0.0)), cache,
                                       settings)  # fmt: skip
    extractor = classifier_extractor(trained)
    reference = prepare_reference(extractor, holdout.to_float(holdout.images), cache, holdout.name)
    floor_count = min(len(train_split), len(holdout), num)
    floor = score_images("data floor", train_split.to_float(train_split.images[:floor_count]), 0, reference, extractor)

    rows, pictures = [], {}
    digest = weights_digest(teacher)

    def score(model: str, checkpoint, w: float | None, **options) -> None:
        steps = options.get("steps")
        kept = teacher_row_path(cache, digest, w, num, levels, args.device) if model == "teacher" else None
        if kept is not None and kept.exists():
            row, one_per_class = read_row(kept)
        else:
            generated = sample_checkpoint(checkpoint, num, labels="all", guidance=w, seed=1, device=args.device,
                                          **options)  # fmt: skip
            result = score_images(model, generated.x, generated.nfe, reference, extractor)
            row = {"model": model, "w": generated.guidance, "steps": steps, "nfe": generated.nfe, "fd": result.fd,
                   "label_rate": label_rate(trained.model, generated.x, generated.labels)}  # fmt: skip
            first = [int(i) for c in generated.labels.unique() for i in (generated.labels == c).nonzero()[:1, 0]]
            one_per_class = generated.x[first]
            if kept is not None:
                write_row(kept, row, one_per_class)
        rows.append(row)
        what = f"{steps} step{'s' if steps > 1 else ''}" if steps else f"Heun, {row['nfe']} NFE"
        pictures[f"w = {w:g}: {model}, {what}" if w is not None else f"{model}, {what}"] = one_per_class

    checkpoints = {name: load_checkpoint(folder) for name, folder in students.items()}
    for w in GUIDANCE:
        score("teacher", teacher, w, teacher_levels=levels, solver="heun")
        for steps in STUDENT_STEPS:
            score("guided CD", checkpoints["guided CD"], w, steps=steps, sigmas=student_sigmas["guided CD"][steps])
    if "CD" in checkpoints:
        for steps in STUDENT_STEPS:
            score("CD", checkpoints["CD"], None, steps=steps, sigmas=student_sigmas["CD"][steps])

    goals = check_goals(rows)
    results = {
        "dataset": data.name, "metric": extractor.metric_name, "features": extractor.description,
        "num_samples": num, "teacher": str(teacher_dir), "teacher_steps": teacher.step,
        "teacher_label_dropout": teacher.config.teacher.label_dropout, "teacher_levels": levels,
        "students": {name: {"run": str(students[name]), "steps": c.step, "sigmas_2": student_sigmas[name][2]}
                     for name, c in checkpoints.items()},
        "guidance_range": [checkpoints["guided CD"].config.cd.guidance_min,
                           checkpoints["guided CD"].config.cd.guidance_max],
        "unconditional_fraction": checkpoints["guided CD"].config.cd.unconditional_fraction,
        "conditional_fraction": checkpoints["guided CD"].config.cd.conditional_fraction,
        "student_overrides": args.student_set,
        "rows": rows, "data_floor": floor.fd, "goals": goals, "quick": args.quick,
        "minutes": (time.perf_counter() - tic) / 60,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "results.json", results)
    save_image_rows(pictures, args.out / "samples.png")
    write_text_atomic(args.out / "README.md", report(results))
    for goal in goals:
        print(f"{'met' if goal['met'] else 'MISSED'}: {goal['text']}")
    print(f"report: {args.out / 'README.md'}")


def find(rows: list[dict], model: str, w: float | None, steps: int | None) -> dict | None:
    return next((r for r in rows if r["model"] == model and r["w"] == w and r["steps"] == steps), None)


def check_goals(rows: list[dict]) -> list[dict]:
    """Each goal with its numbers and whether it is met."""
    goals = []
    for w in GUIDANCE:
        teacher = find(rows, "teacher", w, None)
        for steps in STUDENT_STEPS:
            student = find(rows, "guided CD", w, steps)
            gap = student["label_rate"] - teacher["label_rate"]
            goals.append({"text": f"w = {w:g}, {steps} step(s): guided student's label rate {student['label_rate']:.1%}"
                          f" within {LABEL_RATE_POINTS:.0%} points of the teacher's {teacher['label_rate']:.1%} "
                          f"({gap:+.1%})", "met": abs(gap) <= LABEL_RATE_POINTS})  # fmt: skip
            ratio = student["fd"] / teacher["fd"]
            goals.append({"text": f"w = {w:g}, {steps} step(s): guided student's FD {student['fd']:.3f} within "
                          f"{FD_RATIO}× of the teacher's {teacher['fd']:.3f} ({ratio:.2f}×)",
                          "met": ratio <= FD_RATIO})  # fmt: skip
    conditional = find(rows, "teacher", 1.0, None)
    for model, w in (("CD", None), ("guided CD", 1.0)):
        student = find(rows, model, w, 1)
        if student is not None:
            text = (f"class-conditional {model}{' at w = 1' if w else ''}, 1 step: label rate "
                    f"{student['label_rate']:.1%} ≥ {CD_LABEL_RATE:.0%} (teacher at w = 1: "
                    f"{conditional['label_rate']:.1%})")  # fmt: skip
            goals.append({"text": text, "met": student["label_rate"] >= CD_LABEL_RATE})
    return goals


def report(results: dict) -> str:
    """README.md: what was measured, the table, the goals, the picture and the command."""
    metric, rows = results["metric"], results["rows"]
    fraction = results.get("unconditional_fraction", 0.0)
    unconditional = (f", a share {fraction:g} of them at w = 0 exactly (D_∅), where the student is given the null "
                     "class instead of the label, in training and sampling" if fraction > 0 else "")  # fmt: skip
    if (conditional := results.get("conditional_fraction", 0.0)) > 0:
        unconditional += f", a share {conditional:g} at w = 1 exactly (D_c)"
    if results.get("student_overrides"):
        unconditional += f" (the bundled mnist_cd_cfg with {', '.join(results['student_overrides'])})"
    quick = " **(--quick: a tiny budget on digits; these numbers check the pipeline, they measure nothing)**"
    lines = [
        "# Classifier-free guidance distilled into a consistency model" + (quick if results["quick"] else ""),
        "",
        f"Teacher: class-conditional, label dropout {results['teacher_label_dropout']} ({results['teacher_steps']} "
        f"steps), sampled by Heun with {results['teacher_levels']} levels and classifier-free guidance "
        "D_w = D_∅ + w·(D_c − D_∅) (two network calls per evaluation except at w = 0 and 1). Guided CD: its teacher "
        f"steps follow D_w with w ~ U{results['guidance_range']} per sample{unconditional}, and the student takes w "
        "as an input (as latent consistency models do). CD: class-conditional CD from the same teacher, following D_c. "
        f"{results['num_samples']} samples per score, equally many of every class; label rate: the share the "
        f"evaluation classifier assigns the requested label; {metric}: Fréchet distance on its features ("
        f"{results['features']}) against the held-out half, not comparable with Inception FID; data floor "
        f"{results['data_floor']:.3f}.",
        "",
        f"| w | teacher label rate | teacher {metric} | NFE | student 1 step: label rate | {metric} | "
        f"2 steps: label rate | {metric} |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for w in GUIDANCE:
        t, one, two = find(rows, "teacher", w, None), find(rows, "guided CD", w, 1), find(rows, "guided CD", w, 2)
        lines.append(f"| {w:g} | {t['label_rate']:.1%} | {t['fd']:.3f} | {t['nfe']} | {one['label_rate']:.1%} | "
                     f"{one['fd']:.3f} | {two['label_rate']:.1%} | {two['fd']:.3f} |")  # fmt: skip
    lines += ["", "2 steps sample at σ's " + "; ".join(
        f"{name} {', '.join(f'{sigma:.4g}' for sigma in student['sigmas_2'])}"
        for name, student in results["students"].items()
    ) + " (the bundled config's `sampling.sigmas_2`, else the Karras grid of three)."]  # fmt: skip
    plain = [r for r in rows if r["model"] == "CD"]
    if plain:
        lines += ["", "Class-conditional CD (no guidance): "
                  + ", ".join(f"{r['steps']} step{'s' if r['steps'] > 1 else ''}: label rate {r['label_rate']:.1%}, "
                              f"{metric} {r['fd']:.3f}" for r in plain) + "."]  # fmt: skip
    lines += ["", "## Goals", "", *(f"- {'met' if g['met'] else '**missed**'}: {g['text']}" for g in results["goals"]),
              "", "![samples: one row per w and model, one sample of each class 0–9](samples.png)", "",
              f"Runs: teacher {results['teacher']}, students {results['students']}; "
              f"{results['minutes']:.1f} minutes for this script (training of runs it reused not included).",
              "", "Made by:", "", "```", "python " + " ".join(shlex.quote(a) for a in sys.argv), "```", ""]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
