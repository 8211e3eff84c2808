"""ECT's q on a short budget: one stage of a large q against the paper's q = 2 in stages (reference.md §9).

    python benchmarks/ect_q_sweep.py --dataset mnist --data ../shared/data/mnist --teacher runs/mnist_teacher \
        --steps 250 --every 25 --score-every 50 --num 1000 --out runs/ect_q_sweep

Each arm is what `cm train ect {dataset}_ect --set ect.teacher=TEACHER --set train.total_steps=STEPS
--set train.checkpoint_every=EVERY --set ect.q=Q --set ect.stage_steps=STAGE [--set optim.lr=LR]` trains (one
stage, STAGE = 100000, unless the arm names one), through the same `train()`; runs live in --runs and are reused
when finished. Every --score-every steps the run's first EMA is scored at 2 steps, at sampling seeds 1 and 2,
with FD_classifier (the paper table's features) of --num samples against the held-out split; at the last step
also at 1 step. Writes OUT/results.md (the table of docs/results/README.md) and OUT/results.json.

Arms are written q=Q[,stage=STEPS][,lr=LR], e.g. `q=2,stage=37 q=16 q=16,lr=1e-4`.
"""

import argparse
import dataclasses
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
from torch_consistency.training.loop import train

ONE_STAGE = 100_000  # ect.stage_steps longer than any budget here: q stays at its first stage
ARMS = ("q=2,stage=37", "q=2,stage=75", "q=8", "q=16", "q=16,lr=1e-4", "q=32", "q=64", "q=256")
SEEDS = (1, 2)


def parse_arm(text: str) -> dict[str, float]:
    """`q=16,lr=1e-4` → {"q": 16.0, "lr": 0.0001}; q is required, stage and lr optional."""
    arm = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or key not in ("q", "stage", "lr"):
            raise argparse.ArgumentTypeError(f"arm {text!r}: expected q=Q[,stage=STEPS][,lr=LR]")
        arm[key] = float(value)
    if "q" not in arm:
        raise argparse.ArgumentTypeError(f"arm {text!r} names no q")
    return arm


def arm_label(arm: dict[str, float]) -> str:
    """The row name: `2, a stage every 37 steps`, `16, lr 0.0001`."""
    label = f"{arm['q']:g}"
    label += f", a stage every {arm['stage']:g} steps" if "stage" in arm else ""
    return label + (f", lr {arm['lr']:g}" if "lr" in arm else "")


def arm_overrides(arm: dict[str, float], args: argparse.Namespace) -> list[str]:
    """The --set strings of one arm's run."""
    overrides = [
        f"ect.teacher={args.teacher}", f"train.total_steps={args.steps}", f"train.checkpoint_every={args.every}",
        f"train.keep_checkpoints={args.steps // args.every + 1}", "train.sample_every=0", f"ect.q={arm['q']}",
        f"ect.stage_steps={int(arm.get('stage', ONE_STAGE))}",
    ]  # fmt: skip
    overrides += [f"data.path={args.data}"] if args.data else []
    return overrides + ([f"optim.lr={arm['lr']}"] if "lr" in arm else []) + args.extra


def train_or_reuse(overrides: list[str], folder: Path, dataset: str) -> Path:
    """Train the arm into `folder`, resume it if unfinished, reuse it if finished."""
    if not (folder / "checkpoints").exists():
        train(load_config(config_path(f"{dataset}_ect"), overrides), folder, progress=False)
    elif (last := load_checkpoint(folder)).step < last.config.train.total_steps:
        train(None, folder, resume=True, progress=False)
    return folder


def score_run(folder: Path, args, reference, extractor) -> dict:
    """{"two_step": {step: [FD at each seed]}, "one_step": FD at the last step (seed 1)}."""

    def fd(checkpoint, steps: int, seed: int) -> float:
        generated = sample_checkpoint(checkpoint, args.num, steps=steps, seed=seed)
        return score_images("ECT", generated.x, generated.nfe, reference, extractor).fd

    checkpoints = [load_checkpoint(path) for path in list_checkpoints(folder)]
    two_step = {c.step: [fd(c, 2, seed) for seed in SEEDS] for c in checkpoints if c.step % args.score_every == 0}
    return {"two_step": two_step, "one_step": fd(checkpoints[-1], 1, SEEDS[0]), "last_step": checkpoints[-1].step}


def table(results: dict[str, dict], steps: list[int]) -> list[str]:
    """The markdown table: 2-step FD (seed 1) per scored step, and 1 step at the last."""
    lines = [
        "| q | " + " | ".join(str(s) for s in steps) + f" | 1 step at {steps[-1]} |",
        "|---|" + "---:|" * (len(steps) + 1),
    ]
    for label, r in results.items():
        cells = [f"{r['two_step'][s][0]:.2f}" if s in r["two_step"] else "–" for s in steps]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {r['one_step']:.1f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("digits", "mnist"), required=True)
    parser.add_argument("--data", default="", help="MNIST folder (IDX files)")
    parser.add_argument("--teacher", type=Path, required=True, help="a trained teacher run of the same data")
    parser.add_argument("--steps", type=int, default=250, help="training steps of every arm")
    parser.add_argument("--every", type=int, default=25, help="checkpoint every this many steps")
    parser.add_argument("--score-every", type=int, default=50, help="score the checkpoints at multiples of this")
    parser.add_argument("--num", type=int, default=1000, help="samples per score")
    parser.add_argument("--arms", nargs="+", type=parse_arm, default=[parse_arm(a) for a in ARMS])
    parser.add_argument("--set", dest="extra", action="append", default=[], help="extra SECTION.KEY=VALUE for all")
    parser.add_argument("--runs", type=Path, help="training runs (default runs/ect_q_sweep/DATASET)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.every < 1 or args.score_every % args.every or args.steps % args.score_every:
        parser.error("--score-every must be a multiple of --every, and --steps a multiple of --score-every")
    runs = args.runs or Path("runs/ect_q_sweep") / args.dataset

    tic = time.perf_counter()
    folders = {}
    for arm in args.arms:
        slug = arm_label(arm).replace(", ", "-").replace(" ", "-")
        folders[arm_label(arm)] = train_or_reuse(arm_overrides(arm, args), runs / slug, args.dataset)
        print(f"trained {arm_label(arm)} ({time.perf_counter() - tic:.0f} s so far)", flush=True)

    data = load_checkpoint(args.teacher).config.data
    holdout = build_dataset(dataclasses.replace(data, split="holdout"))
    labelled = build_dataset(dataclasses.replace(data, holdout_fraction=0.0))
    extractor = classifier_extractor(load_or_train_classifier(labelled, runs / "cache"))
    reference = prepare_reference(extractor, holdout.to_float(holdout.images), runs / "cache", holdout.name)
    results = {label: score_run(folder, args, reference, extractor) for label, folder in folders.items()}

    steps = list(range(args.score_every, args.steps + 1, args.score_every))
    spread = [abs(a - b) for r in results.values() for a, b in r["two_step"].values()]
    lines = [
        f"# ECT's q on {args.dataset}: {args.steps} steps, one stage unless a stage length is given",
        "",
        f"2-step {extractor.metric_name} of the first EMA with {args.num} samples against the held-out split, at "
        f"sampling seed {SEEDS[0]}; the second seed ({SEEDS[1]}) moves a value by {min(spread):.2f}–"
        f"{max(spread):.2f}. Features: {extractor.description}.",
        "",
        *table(results, steps),
        "",
        f"Made by ({(time.perf_counter() - tic) / 60:.1f} min):",
        "",
        "```",
        "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "```",
        "",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    arguments = {**vars(args), "out": str(args.out), "teacher": str(args.teacher), "runs": str(runs)}
    write_json_atomic(args.out / "results.json", {"arguments": arguments, "metric": extractor.metric_name,
                                                  "results": results})  # fmt: skip
    write_text_atomic(args.out / "results.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
