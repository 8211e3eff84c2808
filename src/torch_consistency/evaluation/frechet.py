"""Distances between sets of feature vectors (reference.md §13, §14): Fréchet distance, KID, precision/recall.

The Fréchet distance on Inception pool3 features is FID; on other features (a digit classifier, raw values) it
is a different number and must be named differently. Statistics files are `.npz` with the keys `mu` and `sigma`
(the layout of EDM, pytorch-fid and clean-fid), plus `count` and `extractor` when written here.
tests/test_metric_references.py shows each equal to a maintained library on the same features: the Fréchet distance
and KID (same seed, same subsets) to torch-fidelity's, precision/recall to prdc's and torch-fidelity's (same k). They
are kept here because torch-fidelity needs torchvision, which this library does not, and prdc holds all N² distances.
"""

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..files import atomic_path

STATISTICS_FORMAT = "torch-consistency-feature-statistics-1"


@dataclass
class FeatureStatistics:
    """Mean μ and covariance Σ of a set of feature vectors, with how many there were and where they came from."""

    mu: np.ndarray  # float64 (d,)
    sigma: np.ndarray  # float64 (d, d)
    count: int = 0  # 0: unknown (files written by EDM, pytorch-fid or clean-fid)
    extractor: str = "unknown"

    def __post_init__(self) -> None:
        self.mu = np.asarray(self.mu, dtype=np.float64)
        self.sigma = np.asarray(self.sigma, dtype=np.float64)
        if self.mu.ndim != 1 or self.sigma.shape != (len(self.mu), len(self.mu)):
            raise DataError(f"feature statistics need mu of shape (d,) and sigma (d, d), got {self.mu.shape} and "
                            f"{self.sigma.shape}")  # fmt: skip
        if not (np.isfinite(self.mu).all() and np.isfinite(self.sigma).all()):
            raise DataError(f"feature statistics ({self.extractor}) hold NaN or infinite values")

    @property
    def dim(self) -> int:
        return len(self.mu)

    def save(self, path: str | Path) -> Path:
        """Write `.npz` atomically with keys mu, sigma (as EDM and pytorch-fid read them), count, extractor, format."""
        with atomic_path(path) as temporary, open(temporary, "wb") as handle:
            np.savez(handle, mu=self.mu, sigma=self.sigma, count=np.int64(self.count),
                     extractor=np.str_(self.extractor), format=np.str_(STATISTICS_FORMAT))  # fmt: skip
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "FeatureStatistics":
        """Read ours or an EDM / pytorch-fid / clean-fid `.npz` (keys mu and sigma)."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"reference statistics {path} do not exist")
        try:
            with np.load(path, allow_pickle=False) as arrays:
                if "mu" not in arrays or "sigma" not in arrays:
                    raise DataError(f"{path} has no arrays mu and sigma (it has {sorted(arrays.files)})")
                count = int(arrays["count"]) if "count" in arrays else 0
                extractor = str(arrays["extractor"]) if "extractor" in arrays else f"unknown (from {path.name})"
                return cls(arrays["mu"], arrays["sigma"], count, extractor)
        except (OSError, ValueError, EOFError) as error:
            raise DataError(f"{path} is not a readable .npz file of feature statistics: {error}") from None


def feature_statistics(features: np.ndarray | torch.Tensor, extractor: str = "unknown") -> FeatureStatistics:
    """μ = mean of the rows, Σ = unbiased covariance Σ_i (x_i − μ)(x_i − μ)ᵀ / (n − 1), in float64."""
    x = features.detach().cpu().double().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    x = x.astype(np.float64, copy=False)
    if x.ndim != 2 or len(x) < 2:
        raise DataError(f"feature statistics need at least 2 feature vectors (n, d), got an array of shape {x.shape}")
    return FeatureStatistics(x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1]), len(x), extractor)


def check_comparable(a: FeatureStatistics, b: FeatureStatistics) -> None:
    """Refuse statistics of different dimensions: they come from different feature extractors."""
    if a.mu.shape != b.mu.shape:
        raise ConfigError(
            f"feature statistics of dimension {a.dim} ({a.extractor}) and {b.dim} ({b.extractor}) cannot be "
            "compared: they come from different feature extractors"
        )


def psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """√A = V·diag(√max(λ, 0))·Vᵀ for a symmetric A = V·diag(λ)·Vᵀ (tiny negative λ from rounding set to 0)."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((Σ1Σ2)^{1/2}) = ‖√Σ1·√Σ2‖_* (sum of singular values): Σ1Σ2 is similar to (√Σ1√Σ2)(√Σ1√Σ2)ᵀ.

    Taking singular values of √Σ1·√Σ2 rather than square roots of the eigenvalues of √Σ1·Σ2·√Σ1 keeps the
    rounding of (near-)zero directions at ε·‖Σ‖ instead of √ε·‖Σ‖, which matters for singular covariances.
    """
    return float(np.linalg.svd(psd_sqrt(sigma1) @ psd_sqrt(sigma2), compute_uv=False).sum())


def frechet_distance(a: FeatureStatistics, b: FeatureStatistics) -> float:
    """‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^{1/2}), in float64."""
    check_comparable(a, b)
    for stats in (a, b):
        if 0 < stats.count < stats.dim:
            warnings.warn(
                f"only {stats.count} samples for {stats.dim}-dimensional features ({stats.extractor}): the covariance "
                "is singular and the Fréchet distance is biased upwards; use many more samples than dimensions",
                stacklevel=2,
            )
    difference = a.mu - b.mu
    trace = np.trace(a.sigma) + np.trace(b.sigma) - 2 * trace_sqrt_product(a.sigma, b.sigma)
    return float(difference @ difference + trace)


class KernelDistance(NamedTuple):
    """KID: mean and standard deviation of the unbiased MMD² over random subsets."""

    mean: float
    std: float


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x·y / d + 1)³, the cubic kernel of KID (Bińkowski et al. 2018)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Σ_{i≠j} k(x_i, x_j)/(m(m−1)) + Σ_{i≠j} k(y_i, y_j)/(m(m−1)) − 2·Σ_{i,j} k(x_i, y_j)/m²."""
    m = len(x)
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2 * kxy.sum() / m**2)


def kernel_inception_distance(
    features_a: np.ndarray, features_b: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> KernelDistance:
    """KID = mean (and std) over `subsets` random subsets of unbiased MMD² with (x·y/d + 1)³, as torch-fidelity."""
    a, b = np.asarray(features_a, dtype=np.float64), np.asarray(features_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ConfigError(f"KID needs two feature arrays (n, d) of one d, got {a.shape} and {b.shape}")
    if not 2 <= subset_size <= min(len(a), len(b)):
        raise ConfigError(f"KID subset size {subset_size} must lie in 2…{min(len(a), len(b))} (the smaller sample)")
    rng = np.random.RandomState(seed)
    values = np.empty(subsets)
    for i in range(subsets):
        subset_a = a[rng.choice(len(a), subset_size, replace=False)]
        values[i] = mmd2_unbiased(subset_a, b[rng.choice(len(b), subset_size, replace=False)])
    return KernelDistance(float(values.mean()), float(values.std()))


class PrecisionRecall(NamedTuple):
    """Improved precision and recall (Kynkäänniemi et al. 2019)."""

    precision: float
    recall: float


def _squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """‖x_i − y_j‖² = ‖x_i‖² + ‖y_j‖² − 2 x_i·y_j, clamped at 0."""
    return (x.square().sum(1)[:, None] + y.square().sum(1)[None] - 2 * x @ y.T).clamp_min_(0)


def _row_batches(rows: int, columns: int, max_elements: int) -> range:
    return range(0, rows, max(1, max_elements // max(columns, 1)))


def knn_radii(points: torch.Tensor, k: int = 3, max_elements: int = 1 << 24) -> torch.Tensor:
    """Squared distance from each point to its k-th nearest neighbour among the others (the manifold's radii)."""
    if not 1 <= k < len(points):
        raise ConfigError(f"k = {k} nearest neighbours needs more than k points, got {len(points)}")
    step = _row_batches(len(points), len(points), max_elements).step
    radii = [
        _squared_distances(points[i : i + step], points).kthvalue(k + 1, dim=1).values  # the point itself is 0
        for i in range(0, len(points), step)
    ]
    return torch.cat(radii)


def inside_manifold(
    queries: torch.Tensor, points: torch.Tensor, radii: torch.Tensor, max_elements: int = 1 << 24
) -> torch.Tensor:
    """Whether each query lies in some ball {z: ‖z − p_j‖ ≤ r_j} around the points."""
    step = _row_batches(len(queries), len(points), max_elements).step
    inside = [
        (_squared_distances(queries[i : i + step], points) <= radii[None]).any(dim=1)
        for i in range(0, len(queries), step)
    ]
    return torch.cat(inside)


def precision_recall(
    real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, k: int = 3, max_elements: int = 1 << 24
) -> PrecisionRecall:
    """Precision = share of fake inside the real k-NN manifold; recall = share of real inside the fake one."""
    real_t = torch.as_tensor(np.asarray(real), dtype=torch.float32)
    fake_t = torch.as_tensor(np.asarray(fake), dtype=torch.float32)
    if real_t.ndim != 2 or fake_t.ndim != 2 or real_t.shape[1] != fake_t.shape[1]:
        raise ConfigError(f"precision/recall need two feature arrays (n, d) of one d, got {tuple(real_t.shape)} and "
                          f"{tuple(fake_t.shape)}")  # fmt: skip
    real_radii, fake_radii = knn_radii(real_t, k, max_elements), knn_radii(fake_t, k, max_elements)
    precision = inside_manifold(fake_t, real_t, real_radii, max_elements).double().mean()
    recall = inside_manifold(real_t, fake_t, fake_radii, max_elements).double().mean()
    return PrecisionRecall(float(precision), float(recall))
