"""Feature extractors (Inception, a trained classifier, raw values) and cached reference statistics (§14).

Every extractor carries a description (which network, which weights, how images are resized) that is stored
with every statistic and result, so numbers from different extractors are never compared unknowingly.
"""

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from .classifier import ImageClassifier, TrainedClassifier, as_float_images
from .frechet import FeatureStatistics, feature_statistics


@dataclass
class FeatureExtractor:
    """A named map from a batch of samples to feature vectors: (N, …) → (N, dim) float64."""

    name: str  # "inception", "classifier" or "raw"
    description: str
    dim: int
    embed: Callable[[torch.Tensor], torch.Tensor]
    batch_size: int = 256

    @property
    def metric_name(self) -> str:
        """FID on Inception features; FD_<name> otherwise, which is not comparable with FID."""
        return "FID" if self.name == "inception" else f"FD_{self.name}"

    @torch.no_grad()
    def __call__(self, samples: torch.Tensor | np.ndarray) -> np.ndarray:
        samples = torch.as_tensor(samples)
        parts = [self.embed(samples[i : i + self.batch_size]) for i in range(0, len(samples), self.batch_size)]
        features = torch.cat(parts).double().cpu().numpy() if parts else np.zeros((0, self.dim))
        if features.shape != (len(samples), self.dim):
            raise ConfigError(f"{self.description}: gave features of shape {features.shape}, not "
                              f"({len(samples)}, {self.dim})")  # fmt: skip
        return features


def inception_extractor(
    weights: str | Path, device: str | torch.device = "cpu", batch_size: int = 50, allow_torchscript: bool = False
) -> FeatureExtractor:
    """Inception-v3 pool3 (2048-d) from a user-supplied weights file (see inception.SOURCES); TorchScript files
    only with `allow_torchscript` (they are programs)."""
    from .inception import load_inception

    network = load_inception(weights, device, allow_torchscript)
    return FeatureExtractor("inception", network.description, network.dim, lambda x: network(as_float_images(x)),
                            batch_size)  # fmt: skip


def classifier_extractor(classifier: TrainedClassifier | ImageClassifier, batch_size: int = 512) -> FeatureExtractor:
    """Penultimate features of a trained classifier (images uint8 or in [-1, 1], at their native size)."""
    if isinstance(classifier, TrainedClassifier):
        model, description = classifier.model, classifier.description
    else:
        model, description = classifier, f"classifier ({classifier.feature_dim}-d penultimate features, uncached)"
    model.eval()
    return FeatureExtractor("classifier", description, model.feature_dim,
                            lambda x: model.features(as_float_images(x)), batch_size)  # fmt: skip


def raw_extractor(dim: int) -> FeatureExtractor:
    """The samples themselves, flattened: for low-dimensional data."""
    return FeatureExtractor("raw", f"raw values ({dim}-d, flattened)", dim, lambda x: x.flatten(1).double(), 4096)


def _content_hash(samples: torch.Tensor | np.ndarray) -> str:
    array = np.ascontiguousarray(samples.cpu().numpy() if isinstance(samples, torch.Tensor) else samples)
    digest = hashlib.sha256(repr((array.shape, str(array.dtype))).encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def statistics_path(extractor: FeatureExtractor, samples: torch.Tensor | np.ndarray, cache_dir: str | Path,
                    key: str) -> Path:  # fmt: skip
    """cache_dir/<key>-<hash of the extractor's description and the samples' bytes>.npz."""
    digest = hashlib.sha256(extractor.description.encode())
    digest.update(_content_hash(samples).encode())
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", key).strip("-") or "data"
    return Path(cache_dir) / f"{slug}-{extractor.name}-{digest.hexdigest()[:16]}.npz"


def reference_statistics(
    extractor: FeatureExtractor, samples: torch.Tensor | np.ndarray, cache_dir: str | Path, key: str
) -> FeatureStatistics:
    """μ, Σ of the extractor's features of `samples` (a dataset split named by `key`), computed once and cached."""
    path = statistics_path(extractor, samples, cache_dir, key)
    if path.is_file():
        cached = FeatureStatistics.load(path)
        if cached.dim == extractor.dim and cached.count == len(samples) and cached.extractor == extractor.description:
            return cached
    statistics = feature_statistics(extractor(samples), extractor.description)
    statistics.save(path)
    return statistics
