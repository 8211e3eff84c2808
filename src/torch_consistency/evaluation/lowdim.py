"""Metrics for low-dimensional data (reference.md §14): exact W2, MMD, mixture coverage and the consistency error."""

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import chi2

from ..gaussian import GaussianMixture
from ..parameterization import append_dims
from ..sigmas import karras_sigma_at
from ..solvers import Denoiser, heun_step

MMD_BLOCK = 10_000  # the within-set pairs of a larger set are taken inside blocks of this many points (`within_mean`)


def wasserstein2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Exact W2 between two equal-size empirical distributions: √(min over matchings of mean ‖x_i − y_π(i)‖²)."""
    if x.shape != y.shape:
        raise ValueError(f"W2 needs point sets of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    a, b = x.flatten(1).double().numpy(), y.flatten(1).double().numpy()
    cost = (a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2 * a @ b.T
    rows, cols = linear_sum_assignment(cost)
    return float(np.sqrt(max(cost[rows, cols].mean(), 0.0)))


def squared_distances(a: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """‖a_i − b_j‖² summed coordinate by coordinate, with b given as its columns (d, m): exact (no ‖a‖² + ‖b‖² − 2a·b
    cancellation) and, for the low-dimensional points it serves, faster than torch.cdist squared
    (benchmarks/mmd_speed.py)."""
    squared = (a[:, 0, None] - columns[0]).square_()
    for k in range(1, len(columns)):
        squared += (a[:, k, None] - columns[k]).square_()
    return squared


def gaussian_kernels(squared: torch.Tensor, bandwidths: Sequence[float]) -> Iterator[torch.Tensor]:
    """exp(−d²/(2h²)) for each width h, widest first. Where h is half the width before it, its kernel is that one's
    to the 4th power, two squarings in place instead of an exp (benchmarks/mmd_speed.py: the within-set sum 3.08×
    faster than cdist with it, 2.28× without): each kernel yielded is overwritten by the next, so use it before
    asking for the next."""
    kernel, previous = squared, None
    for h in sorted(bandwidths, reverse=True):
        if previous is not None and previous == 2 * h:
            kernel = kernel.square_().square_()
        else:
            kernel = torch.exp(squared * (-1 / (2 * h**2)))
        previous = h
        yield kernel


def gaussian_kernel_sum(
    a: torch.Tensor, b: torch.Tensor, bandwidths: Sequence[float], block_entries: int = 2**16
) -> torch.Tensor:
    """Σ_ij Σ_h exp(−‖a_i − b_j‖²/(2h²)), computed in blocks of rows so that no n×m matrix is ever held (small
    blocks stay in the CPU's cache)."""
    rows, columns = max(1, block_entries // max(len(b), 1)), b.T.contiguous()
    total = a.new_zeros(())
    for start in range(0, len(a), rows):
        for kernel in gaussian_kernels(squared_distances(a[start : start + rows], columns), bandwidths):
            total += kernel.sum()
    return total


def gaussian_kernel_self_sum(x: torch.Tensor, bandwidths: Sequence[float], block_entries: int = 2**16) -> torch.Tensor:
    """`gaussian_kernel_sum(x, x, ...)`, the diagonal included, from half the pairs: the kernel is symmetric, so each
    block of rows meets the rows after it once, counted twice, and itself in full."""
    rows, columns = max(1, block_entries // max(len(x), 1)), x.T.contiguous()
    total = x.new_zeros(())
    for start in range(0, len(x), rows):
        block = x[start : start + rows]
        squared = squared_distances(block, columns[:, start:])  # the block itself, then every row after it
        for kernel in gaussian_kernels(squared, bandwidths):
            total += 2 * kernel.sum() - kernel[:, : len(block)].sum()
    return total


def mmd_squared(x: torch.Tensor, reference: torch.Tensor | GaussianMixture, bandwidths: Sequence[float]) -> float:
    """Unbiased MMD² with the kernel k = Σ_h exp(−‖a−b‖²/(2h²)) between samples and a reference set (the
    within-set means leave out the diagonal) or a Gaussian mixture's exact law (its terms are exact expectations,
    so no reference set adds its own sampling noise)."""
    x = x.flatten(1).double()
    if isinstance(reference, GaussianMixture):
        between = expected_kernel(x, reference, bandwidths).mean()
        return float(within_mean(x, bandwidths) + law_kernel(reference, bandwidths) - 2 * between)
    y = reference.flatten(1).double()
    between = gaussian_kernel_sum(x, y, bandwidths) / (len(x) * len(y))
    return float(within_mean(x, bandwidths) + within_mean(y, bandwidths) - 2 * between)


def within_mean(x: torch.Tensor, bandwidths: Sequence[float], block: int = MMD_BLOCK) -> torch.Tensor:
    """Unbiased mean of k(x_i, x_j), i ≠ j, over the pairs inside consecutive blocks of at most `block` rows (all
    pairs when n ≤ block): the block estimator of the B-test (Zaremba et al., 2013), n·block pairs instead of n²."""
    total, pairs = x.new_zeros(()), 0
    for start in range(0, len(x), block):
        part = x[start : start + block]
        total += gaussian_kernel_self_sum(part, bandwidths) - len(part) * len(bandwidths)  # k(a, a) = Σ_h exp(0)
        pairs += len(part) * (len(part) - 1)
    return total / pairs


def gaussian_kernel_expectation(offsets: torch.Tensor, covariances: torch.Tensor, h: float) -> torch.Tensor:
    """E exp(−‖u‖²/(2h²)) for u ~ N(Δ, C), batched over Δ (..., d) and C (..., d, d):
    det(I + C/h²)^(−1/2) exp(−½ Δᵀ (C + h²I)⁻¹ Δ)."""
    eye = torch.eye(offsets.shape[-1], dtype=torch.float64)
    scale = torch.linalg.det(eye + covariances / h**2) ** -0.5
    inverse = torch.linalg.inv(covariances + h**2 * eye)
    quadratic = (offsets[..., None, :] @ inverse @ offsets[..., :, None])[..., 0, 0]
    return scale * torch.exp(-0.5 * quadratic)


def expected_kernel(x: torch.Tensor, mixture: GaussianMixture, bandwidths: Sequence[float]) -> torch.Tensor:
    """E_{y∼M} k(x_i, y) for each row: Σ_h Σ_k π_k E exp(−‖u‖²/(2h²)), u = x_i − y ~ N(x_i − μ_k, Σ_k)."""
    offsets = x.flatten(1).double()[:, None, :] - mixture.means[None]  # (n, K, d)
    per_width = [gaussian_kernel_expectation(offsets, mixture.covariances, h) @ mixture.weights for h in bandwidths]
    return torch.stack(per_width).sum(0)


def law_kernel(mixture: GaussianMixture, bandwidths: Sequence[float]) -> float:
    """E_{y, y′∼M} k(y, y′) = Σ_h Σ_kl π_k π_l E exp(−‖u‖²/(2h²)), u = y − y′ ~ N(μ_k − μ_l, Σ_k + Σ_l)."""
    offsets = mixture.means[:, None] - mixture.means[None]  # (K, K, d)
    pair_covariances = mixture.covariances[:, None] + mixture.covariances[None]  # (K, K, d, d)
    pair_weights = mixture.weights[:, None] * mixture.weights[None]
    return sum(
        float((pair_weights * gaussian_kernel_expectation(offsets, pair_covariances, h)).sum()) for h in bandwidths
    )


def mmd(x: torch.Tensor, reference: torch.Tensor | GaussianMixture, bandwidths: Sequence[float]) -> float:
    """√max(MMD², 0) to a reference set or a mixture's exact law (`mmd_squared`): a distance between the two laws
    (0 for equal laws; the unbiased MMD² dips below 0 only by sampling noise, read as 0)."""
    return math.sqrt(max(mmd_squared(x, reference, bandwidths), 0.0))


@dataclass
class Coverage:
    """How samples sit on a Gaussian mixture's components."""

    precision: float  # share of samples inside some component's 99 % ellipsoid
    covered: int  # components that receive at least half their weight of samples inside their own ellipsoid
    components: int


def mixture_coverage(x: torch.Tensor, mixture: GaussianMixture, level: float = 0.99) -> Coverage:
    """Samples inside a component's `level` region (Mahalanobis² ≤ the χ²_d quantile), and the components covered."""
    x = x.flatten(1).double()
    inverse = torch.linalg.inv(mixture.covariances)  # (K, d, d)
    offsets = x[:, None, :] - mixture.means[None]  # (n, K, d)
    mahalanobis = torch.einsum("nki,kij,nkj->nk", offsets, inverse, offsets)
    inside = mahalanobis <= chi2.ppf(level, mixture.dim)
    shares = inside.double().mean(0)  # per component (ellipsoids of distinct components barely overlap)
    covered = int((shares >= 0.5 * mixture.weights).sum())
    return Coverage(float(inside.any(1).double().mean()), covered, len(mixture.means))


def ode_endpoint(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigma: float | torch.Tensor,
    sigma_end: float,
    num_steps: int = 512,
    rho: float = 7.0,
) -> torch.Tensor:
    """A high-accuracy PF-ODE solution from σ (one for all rows, or one per row) down to σ_end > 0: Heun on each
    row's fine Karras grid, in float64; rows that start at different σ's share every call to the denoiser."""
    if sigma_end <= 0:
        raise ValueError(f"ode_endpoint needs sigma_end > 0 (Heun divides by σ'), got {sigma_end}")
    start = torch.as_tensor(sigma, dtype=torch.float64).expand(len(x))
    ramp = torch.linspace(0.0, 1.0, num_steps + 1, dtype=torch.float64)[:, None]
    levels = karras_sigma_at(ramp, sigma_end, start, rho)  # (steps + 1, rows): each row's grid in a column
    x = x.double()
    for level, level_next in itertools.pairwise(levels):
        x = heun_step(denoiser, x, level, level_next)
    return x


@dataclass
class ConsistencyError:
    """Mean ‖f(x_σ, σ) − ODE(x_σ → σ_min)‖ per σ, and over all σ's."""

    sigmas: list[float]
    per_sigma: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.per_sigma))


@torch.no_grad()
def consistency_error(
    consistency_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    denoiser: Denoiser,
    x0: torch.Tensor,
    sigmas: Sequence[float],
    sigma_min: float,
    generator: torch.Generator | None = None,
    num_steps: int = 512,
) -> ConsistencyError:
    """‖f(x_σ, σ) − ODE(x_σ → σ_min)‖ for x_σ = x0 + σz, averaged over x0 at each σ (reference.md §12). The ODEs of
    all σ's are solved together, one denoiser call per level for all of them."""
    noise = torch.stack([torch.randn(x0.shape, generator=generator, dtype=x0.dtype) for _ in sigmas])
    levels = torch.tensor([float(s) for s in sigmas], dtype=x0.dtype)
    x_sigma = (x0 + append_dims(levels, noise.ndim) * noise).flatten(0, 1)  # σ-major: rows of σ_0, then σ_1, ...
    per_row = levels.repeat_interleave(len(x0))
    reference = ode_endpoint(denoiser, x_sigma, per_row, sigma_min, num_steps)
    prediction = consistency_fn(x_sigma, per_row.to(x_sigma.dtype))
    distances = (prediction.double() - reference).flatten(1).norm(dim=1).reshape(len(sigmas), len(x0))
    errors = [float(d) for d in distances.mean(1)]
    return ConsistencyError([float(s) for s in sigmas], errors)
