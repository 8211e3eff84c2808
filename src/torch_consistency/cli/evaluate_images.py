"""`cm eval` on an image checkpoint: FD, KID, precision/recall per step count, a table, a plot and grids."""

import argparse
import dataclasses

from ..data import build_dataset
from ..errors import ConfigError
from ..evaluation.features import FeatureExtractor, classifier_extractor, inception_extractor
from ..evaluation.frechet import FeatureStatistics
from ..evaluation.images import ImageScore, Reference, evaluate_image_checkpoint, prepare_reference, score_images
from ..evaluation.plots import image_grid, save_metric_plot, save_png
from ..files import write_json_atomic, write_text_atomic
from ..training.checkpoint import Checkpoint


def build_extractor(args: argparse.Namespace, checkpoint: Checkpoint) -> FeatureExtractor:
    """Inception from the user's weights file, or the cached classifier of the checkpoint's labelled data."""
    if args.features == "inception":
        if args.inception_weights is None:
            raise ConfigError("--features inception needs --inception-weights PATH (see cm eval --help)")
        return inception_extractor(args.inception_weights, args.device)
    from ..evaluation.classifier import load_or_train_classifier

    labelled = build_dataset(dataclasses.replace(checkpoint.config.data, holdout_fraction=0.0))
    if labelled.labels is None:
        raise ConfigError(f"{labelled.name} has no labels to train a feature classifier; use --features inception")
    print(f"classifier features: training or loading from {args.cache} ...")
    return classifier_extractor(load_or_train_classifier(labelled, args.cache, progress=True))


def metrics_table(scores: list[ImageScore], metric: str) -> str:
    lines = [f"| method | NFE | {metric} | KID | precision | recall | samples |", "|---|---:|---:|---:|---:|---:|---:|"]
    for s in scores:
        lines.append(
            f"| {s.label} | {s.nfe or '–'} | {s.fd:.3f} | {s.kid:.5f} ± {s.kid_std:.5f} | {s.precision:.3f} "
            f"| {s.recall:.3f} | {s.num_samples} |"
        )
    return "\n".join(lines)


def run_images(args: argparse.Namespace, checkpoint: Checkpoint) -> int:
    num = args.num or 10_000
    data = checkpoint.config.data
    training = build_dataset(data)
    if data.holdout_fraction > 0:
        reference_data = build_dataset(dataclasses.replace(data, split="holdout" if data.split == "train" else "train"))
    else:
        reference_data = training  # no held-out images: compare with the training images themselves
    extractor = build_extractor(args, checkpoint)
    reference_images = reference_data.to_float(reference_data.images)
    if args.reference_stats is not None:  # e.g. EDM's or pytorch-fid's .npz (mu, sigma): FD only
        statistics = FeatureStatistics.load(args.reference_stats)
        if statistics.dim != extractor.dim:
            raise ConfigError(
                f"{args.reference_stats} holds {statistics.dim}-d statistics; {extractor.description} gives "
                f"{extractor.dim}-d features"
            )
        reference = Reference(None, statistics, str(args.reference_stats))
    else:
        reference = prepare_reference(extractor, reference_images, args.cache, reference_data.name)
    if args.search_sigmas:
        search_and_store_sigmas(checkpoint, reference, extractor, args)
    label = checkpoint.config.train.method
    scores, samples = evaluate_image_checkpoint(
        checkpoint, reference, extractor, label=label, steps=args.steps, teacher_levels=args.teacher_steps,
        num_samples=num, seed=args.seed, device=args.device, progress=True,
    )  # fmt: skip
    floor_count = min(num, len(training))
    floor_images = training.to_float(training.images[:floor_count])
    floor = score_images("data floor (training vs reference images)", floor_images, 0, reference, extractor)
    results = {
        "checkpoint": str(checkpoint.path),
        "step": checkpoint.step,
        "metric": extractor.metric_name,
        "features": extractor.description,
        "reference": reference.name
        if args.reference_stats
        else f"{reference_data.name} ({len(reference_images)} images)",
        "scores": [s.to_dict() for s in scores],
        "data_floor": floor.to_dict(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "results.json", results)
    text = (
        f"# Evaluation of {checkpoint.path} (step {checkpoint.step})\n\n"
        f"Features: {extractor.description}. Reference: {results['reference']}.\n\n"
        f"{metrics_table([*scores, floor], extractor.metric_name)}\n"
    )
    write_text_atomic(args.out / "results.md", text)
    save_metric_plot({label: [(s.nfe, s.fd) for s in scores]}, extractor.metric_name, args.out / "metric_vs_nfe.png",
                     floor=floor.fd)  # fmt: skip
    for name, images in samples.items():
        save_png(image_grid(images), args.out / f"samples-{name.replace(' ', '-')}.png", scale=4)
    print(text)
    print(f"results in {args.out}")
    return 0


def search_and_store_sigmas(checkpoint: Checkpoint, reference, extractor: FeatureExtractor, args) -> None:
    """Greedy ternary search of the 2- and 3-step σ's on the FD of 2,000 samples; stored in the checkpoint."""
    from ..evaluation.timepoints import search_checkpoint_sigmas
    from ..training.checkpoint import store_sampling_sigmas

    def fd(samples):
        return score_images("search", samples, 0, reference, extractor).fd

    found = search_checkpoint_sigmas(checkpoint, fd, 2000, args.seed, args.device)
    store_sampling_sigmas(checkpoint, found)
    print(f"stored in {checkpoint.path}: " + ", ".join(f"{n} steps {v}" for n, v in found.items()))
