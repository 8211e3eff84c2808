"""A bundled config with overrides, trained and scored at 1 and 2 steps as `cm demo` scores it: how the demo's
short recipes (toy_ict, digits_ct) were chosen.

    python benchmarks/short_recipes.py toy_ict --out runs/recipes/ict-s1-160 --set ict.s1=160 \
        --set train.total_steps=6000
    python benchmarks/short_recipes.py digits_ct --out runs/recipes/ct-600 --set train.total_steps=600 \
        --set train.checkpoint_every=600

2-D data, scored as `cm demo` scores it: MMD against the data's exact law at 1 step, at 2 steps (σ_max and the σ of
the demo's greedy search on the training grid) and at 4, the share of samples inside a cluster and the clusters
covered (the demo's sample count); with --teacher, each MMD also as a ratio to that teacher run's (Heun, 79 NFE,
the demo's reference). Digits: FD_classifier against the held-out digits (1000 samples), at 1 and 2 steps. A
finished run in --out is reused (the search stores its σ's in it, as the demo does). Prints one line: the overrides
and, per step count, the scores. Before the demo's targets were worked on (docs/results/curves, "The demo's 2-D CD
and CT against their targets"), 2 steps here sampled on the Karras grid of three (σ = 2.52): the 2-D figures of
earlier sections; and until the MMD took the exact law (same page, "The 2-D measure"), it was against 10,000
held-out points.

    python benchmarks/short_recipes.py toy_cd --out runs/recipes/cd --set cd.teacher=runs/demo/toy/teacher \
        --teacher runs/demo/toy/teacher
"""

import argparse
import dataclasses
from pathlib import Path

from torch_consistency.checkpoint import load_checkpoint
from torch_consistency.configs import config_path, load_config
from torch_consistency.data import IMAGE_DATASETS, build_images, build_vectors
from torch_consistency.demo import TEACHER_LEVELS, TOY_SAMPLES, search_samples, search_two_step_sigmas
from torch_consistency.evaluation.classifier import load_or_train_classifier
from torch_consistency.evaluation.evaluate import evaluate_checkpoint
from torch_consistency.evaluation.features import classifier_extractor
from torch_consistency.evaluation.images import evaluate_image_checkpoint, prepare_reference
from torch_consistency.training.loop import holds_run, train

STEPS = (1, 2)
STEPS_2D = (1, 2, 4)


def scores_2d(out: Path, teacher: Path | None) -> list[str]:
    run = load_checkpoint(out)
    dataset = build_vectors(run.config.data)
    search_two_step_sigmas(run, dataset, search_samples(run))
    scores, _ = evaluate_checkpoint(run, dataset, label="run", steps=STEPS_2D, num_samples=TOY_SAMPLES)
    reference = None
    if teacher is not None:
        (reference,), _ = evaluate_checkpoint(
            load_checkpoint(teacher), dataset, label="teacher", teacher_levels=(TEACHER_LEVELS[-1],),
            num_samples=TOY_SAMPLES,
        )  # fmt: skip
    return [
        f"{s.nfe} step(s): MMD {s.mmd:.4f}"
        + (f" ({s.mmd / reference.mmd:.2f}× the teacher's)" if reference is not None else "")
        + f", inside {s.precision:.1%}, covered {s.covered}"
        for s in scores
    ]


def scores_digits(out: Path) -> list[str]:
    run = load_checkpoint(out)
    data = run.config.data
    holdout = build_images(dataclasses.replace(data, split="holdout"))
    labelled = build_images(dataclasses.replace(data, holdout_fraction=0.0))
    extractor = classifier_extractor(load_or_train_classifier(labelled, out / "cache"))
    reference = prepare_reference(extractor, holdout.to_float(holdout.images), out / "cache", holdout.name)
    scores, _ = evaluate_image_checkpoint(run, reference, extractor, label="run", num_samples=1000, steps=STEPS)
    return [f"{s.nfe} step(s): FD_classifier {s.fd:.2f}" for s in scores]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a bundled toy_* or digits_* config")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value")
    parser.add_argument("--teacher", type=Path, help="2-D: a teacher run, to state each MMD as a ratio to its own")
    args = parser.parse_args()
    config = load_config(config_path(args.config), args.overrides)  # validated before any training
    if args.teacher is not None:
        if config.data.name in IMAGE_DATASETS:
            parser.error("--teacher is for 2-D configs: the digits are scored by FD_classifier alone")
        load_checkpoint(args.teacher)  # a missing or unreadable teacher fails now, not after training
    if not holds_run(args.out):
        train(config, args.out)
    scores = scores_digits(args.out) if config.data.name in IMAGE_DATASETS else scores_2d(args.out, args.teacher)
    print(args.config, " ".join(args.overrides) or "(bundled)", "|", "; ".join(scores), flush=True)


if __name__ == "__main__":
    main()
