"""Evaluate image checkpoints: Fréchet distance, KID and precision/recall on chosen features (reference.md §14)."""

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import Checkpoint
from .classifier import ImageClassifier, accuracy
from .evaluate import sample_checkpoint
from .features import FeatureExtractor, reference_statistics
from .frechet import (
    FeatureStatistics,
    feature_statistics,
    frechet_distance,
    kernel_inception_distance,
    precision_recall,
)


@dataclass
class ImageScore:
    """Metrics of one set of samples against the reference images."""

    label: str
    nfe: int
    fd: float
    kid: float
    kid_std: float
    precision: float
    recall: float
    num_samples: int
    label_rate: float | None = None  # class-conditional models: share classified as the requested label
    guidance: float | None = None  # the w sampled with, if the model takes one

    def to_dict(self) -> dict:
        return asdict(self)


def label_rate(classifier: ImageClassifier, samples: torch.Tensor, requested: torch.Tensor) -> float:
    """The requested-label rate: the share of samples whose arg-max class is the label they were sampled for."""
    return accuracy(classifier, samples, requested)


@dataclass
class Reference:
    """Reference statistics, with the reference features when the images are at hand (KID, precision/recall)."""

    features: torch.Tensor | None
    statistics: FeatureStatistics
    name: str


def prepare_reference(extractor: FeatureExtractor, images: torch.Tensor, cache_dir: Path, name: str) -> Reference:
    """Features and (cached) statistics of the reference images."""
    statistics = reference_statistics(extractor, images, cache_dir, name)
    return Reference(torch.from_numpy(extractor(images)), statistics, name)


def score_images(
    label: str, samples: torch.Tensor, nfe: int, reference: Reference, extractor: FeatureExtractor
) -> ImageScore:
    """FD (float64), KID (cubic kernel) and k = 3 precision/recall of `samples` against the reference.

    Against statistics alone (e.g. an EDM or pytorch-fid .npz) only FD is defined; the others are NaN.
    """
    features = extractor(samples)
    fd = frechet_distance(feature_statistics(features, extractor.description), reference.statistics)
    if reference.features is None:
        nan = float("nan")
        return ImageScore(label, nfe, fd, nan, nan, nan, nan, len(samples))
    subset = min(1000, len(features), len(reference.features))
    kid = kernel_inception_distance(features, reference.features.numpy(), subsets=20, subset_size=subset)
    pr = precision_recall(reference.features, torch.from_numpy(features), k=3)
    return ImageScore(label, nfe, fd, kid.mean, kid.std, pr.precision, pr.recall, len(samples))


def evaluate_image_checkpoint(
    checkpoint: Checkpoint,
    reference: Reference,
    extractor: FeatureExtractor,
    *,
    label: str,
    steps: Sequence[int] = (1, 2),
    teacher_levels: Sequence[int] = (18,),
    num_samples: int = 10_000,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    classifier: ImageClassifier | None = None,
    guidance: float | None = None,
) -> tuple[list[ImageScore], dict[str, torch.Tensor]]:
    """Scores at each step count (consistency models) or number of Karras levels (teachers), with samples; with a
    `classifier`, a class-conditional model's requested-label rate; `guidance` is the w to sample with."""
    teacher = checkpoint.parameterization == "denoiser"
    scores, samples = [], {}
    for count in teacher_levels if teacher else steps:
        options: dict[str, Any] = {"teacher_levels": count} if teacher else {"steps": count}
        generated = sample_checkpoint(
            checkpoint, num_samples, seed=seed, device=device, progress=progress, guidance=guidance, **options
        )
        score = score_images(label, generated.x, generated.nfe, reference, extractor)
        score.guidance = generated.guidance
        if classifier is not None and generated.labels is not None:
            score.label_rate = label_rate(classifier, generated.x, generated.labels)
        scores.append(score)
        samples[f"{label} {generated.nfe} NFE"] = generated.x[:64]
    return scores, samples
