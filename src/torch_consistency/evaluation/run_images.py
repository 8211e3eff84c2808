"""`evaluate` on an image checkpoint: FD, KID, precision/recall per step count, a table, a plot and grids."""

import dataclasses

from ..checkpoint import Checkpoint
from ..data import build_images
from ..errors import ConfigError
from ..files import write_json_atomic, write_text_atomic
from ..plots import image_grid, save_metric_plot, save_png
from .classifier import TrainedClassifier
from .features import FeatureExtractor, classifier_extractor, inception_extractor
from .frechet import FeatureStatistics
from .images import ImageScore, Reference, evaluate_image_checkpoint, prepare_reference, score_images
from .options import Evaluation, EvaluationOptions


def build_extractor(
    args: EvaluationOptions, checkpoint: Checkpoint, classifier: TrainedClassifier | None = None
) -> FeatureExtractor:
    """Inception from the user's weights file, or the cached classifier of the checkpoint's labelled data."""
    if args.features == "inception":
        assert args.inception_weights is not None  # check_evaluation_options
        return inception_extractor(args.inception_weights, args.device, allow_torchscript=args.allow_torchscript)
    return classifier_extractor(classifier or evaluation_classifier(args, checkpoint))


def evaluation_classifier(args: EvaluationOptions, checkpoint: Checkpoint) -> TrainedClassifier:
    """The cached classifier of the checkpoint's labelled data (trained on first use): FD_classifier's features
    and the judge of a class-conditional model's requested-label rate."""
    from .classifier import load_or_train_classifier

    labelled = build_images(dataclasses.replace(checkpoint.config.data, holdout_fraction=0.0))
    if labelled.labels is None:
        raise ConfigError(f"{labelled.name} has no labels to train a feature classifier; use --features inception")
    print(f"evaluation classifier: training or loading from {args.cache} ...")
    return load_or_train_classifier(labelled, args.cache, progress=True)


def feature_dim(args: EvaluationOptions) -> int:
    """The dimension of the features `--features` gives, known from the architecture before anything is loaded."""
    if args.features == "inception":
        from .inception import FEATURES

        return FEATURES
    from .classifier import ClassifierSettings, ImageClassifier

    return ImageClassifier(1, 1, ClassifierSettings().width).feature_dim


def read_reference_stats(args: EvaluationOptions) -> FeatureStatistics | None:
    """The user's --reference-stats, refused before any work when their dimension is not that of the features."""
    if args.reference_stats is None:
        return None
    statistics = FeatureStatistics.load(args.reference_stats)
    if statistics.dim != feature_dim(args):
        raise ConfigError(
            f"{args.reference_stats} holds {statistics.dim}-d statistics; --features {args.features} gives "
            f"{feature_dim(args)}-d features"
        )
    return statistics


def metrics_table(scores: list[ImageScore], metric: str) -> str:
    """One row per score; a label-rate column when a class-conditional model was scored."""
    rates = any(s.label_rate is not None for s in scores)
    head = f"| method | NFE | {metric} | KID | precision | recall | samples |" + (" label rate |" if rates else "")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if rates else "")]
    for s in scores:
        rate = "" if not rates else " – |" if s.label_rate is None else f" {s.label_rate:.3f} |"
        lines.append(
            f"| {s.label} | {s.nfe or '–'} | {s.fd:.3f} | {s.kid:.5f} ± {s.kid_std:.5f} | {s.precision:.3f} "
            f"| {s.recall:.3f} | {s.num_samples} |{rate}"
        )
    return "\n".join(lines)


def run_images(args: EvaluationOptions, checkpoint: Checkpoint) -> Evaluation:

    num = args.num or 10_000
    statistics = read_reference_stats(args)
    data = checkpoint.config.data
    training = build_images(data)
    if data.holdout_fraction > 0:
        reference_data = build_images(dataclasses.replace(data, split="holdout" if data.split == "train" else "train"))
    else:
        reference_data = training  # no held-out images: compare with the training images themselves
    classifier = evaluation_classifier(args, checkpoint) if checkpoint.num_classes > 0 else None
    extractor = build_extractor(args, checkpoint, classifier)
    reference_images = reference_data.to_float(reference_data.images)
    if statistics is not None:  # e.g. EDM's or pytorch-fid's .npz (mu, sigma): FD only
        reference = Reference(None, statistics, str(args.reference_stats))
    else:
        reference = prepare_reference(extractor, reference_images, args.cache, reference_data.name)
    if args.search_sigmas:
        search_and_store_sigmas(checkpoint, reference, extractor, args)
    label = checkpoint.config.train.method
    scores, samples = evaluate_image_checkpoint(
        checkpoint, reference, extractor, label=label, steps=args.steps, teacher_levels=args.teacher_steps,
        num_samples=num, seed=args.seed, device=args.device, progress=True,
        classifier=None if classifier is None else classifier.model, guidance=args.guidance,
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
    text = (
        f"# Evaluation of {checkpoint.path} (step {checkpoint.step})\n\n"
        f"Features: {extractor.description}. Reference: {results['reference']}.\n\n"
        f"{metrics_table([*scores, floor], extractor.metric_name)}\n"
    )
    evaluation = Evaluation(results, text, args.out)
    if args.out is None:
        return evaluation
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "results.json", results)
    write_text_atomic(args.out / "results.md", text)
    save_metric_plot({label: [(s.nfe, s.fd) for s in scores]}, extractor.metric_name, args.out / "metric_vs_nfe.png",
                     floor=floor.fd)  # fmt: skip
    for name, images in samples.items():
        save_png(image_grid(images), args.out / f"samples-{name.replace(' ', '-')}.png", scale=4)
    return evaluation


def search_and_store_sigmas(
    checkpoint: Checkpoint, reference: Reference, extractor: FeatureExtractor, args: EvaluationOptions
) -> None:
    """Greedy ternary search of the 2- and 3-step σ's on the FD of 2,000 samples; stored in the checkpoint."""
    from ..checkpoint import store_sampling_sigmas
    from .timepoints import search_checkpoint_sigmas

    def fd(samples):
        return score_images("search", samples, 0, reference, extractor).fd

    found = search_checkpoint_sigmas(checkpoint, fd, 2000, args.seed, args.device)
    store_sampling_sigmas(checkpoint, found)
    print(f"stored in {checkpoint.path}: " + ", ".join(f"{n} steps {v}" for n, v in found.items()))
