"""Exact oracles for Gaussian data (reference.md §12): denoisers, consistency functions and samplers.

A Gaussian mixture's denoiser is closed form, so it serves as an exact teacher and gives the ground truth
for consistency errors. Computations run in float64.
"""

import math
from dataclasses import dataclass

import torch


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    """D(x, σ) = μ + s²/(s²+σ²)·(x − μ) for data ~ N(μ, s²I) (§12)."""
    sigma = sigma.reshape(sigma.shape + (1,) * (x.ndim - sigma.ndim))
    return mean + std**2 / (std**2 + sigma**2) * (x - mean)


def gaussian_consistency_function(
    x: torch.Tensor, sigma: torch.Tensor, mean: torch.Tensor, std: float, sigma_min: float
) -> torch.Tensor:
    """f(x, σ) = μ + √((s²+σ_min²)/(s²+σ²))·(x − μ), the exact ODE map to σ_min for N(μ, s²I) (§12)."""
    sigma = sigma.reshape(sigma.shape + (1,) * (x.ndim - sigma.ndim))
    return mean + torch.sqrt((std**2 + sigma_min**2) / (std**2 + sigma**2)) * (x - mean)


@dataclass
class GaussianMixture:
    """Mixture Σ_k π_k N(μ_k, Σ_k) in any dimension, with its exact denoiser (reference.md §12)."""

    weights: torch.Tensor  # (K,)
    means: torch.Tensor  # (K, d)
    covariances: torch.Tensor  # (K, d, d)

    def __post_init__(self) -> None:
        self.weights = (self.weights / self.weights.sum()).double()
        self.means = self.means.double()
        self.covariances = self.covariances.double()

    @classmethod
    def isotropic(cls, means: torch.Tensor, std: float, weights: torch.Tensor | None = None) -> "GaussianMixture":
        """Components N(μ_k, std²·I) with equal weights unless given."""
        k, d = means.shape
        weights = torch.ones(k) if weights is None else weights
        return cls(weights, means, std**2 * torch.eye(d, dtype=torch.float64).expand(k, d, d).clone())

    def to(self, device: torch.device | str) -> "GaussianMixture":
        """The same mixture with its tensors on `device`."""
        return GaussianMixture(self.weights.to(device), self.means.to(device), self.covariances.to(device))

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n independent draws (float64)."""
        component = torch.multinomial(self.weights.cpu(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        means, covariances = self.means.cpu(), self.covariances.cpu()
        cholesky = torch.linalg.cholesky(covariances)
        return means[component] + torch.einsum("nij,nj->ni", cholesky[component], z)

    def denoiser(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """D(x,σ) = Σ_k w_k(x)(μ_k + Σ_k(Σ_k+σ²I)⁻¹(x−μ_k)), w_k ∝ π_k N(x; μ_k, Σ_k+σ²I) (§12).

        With Σ_k = U_k Λ_k U_kᵀ precomputed, (Σ_k+σ²I)⁻¹ = U_k (Λ_k+σ²)⁻¹ U_kᵀ for every σ at no extra cost.
        """
        shape, dtype = x.shape, x.dtype
        x = x.reshape(shape[0], -1).double()
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).expand(shape[0])
        eigenvalues, eigenvectors = self._eigen
        centred = torch.einsum("kji,bkj->bki", eigenvectors, x[:, None, :] - self.means[None])  # U_kᵀ(x − μ_k)
        noisy = eigenvalues[None] + sigma[:, None, None] ** 2  # (B, K, d): eigenvalues of Σ_k + σ²I
        log_prob = -0.5 * ((centred**2 / noisy).sum(-1) + torch.log(noisy).sum(-1) + self.dim * math.log(2 * math.pi))
        responsibilities = torch.softmax(torch.log(self.weights)[None] + log_prob, dim=1)  # (B, K)
        shrunk = eigenvalues[None] / noisy * centred  # Λ_k(Λ_k+σ²)⁻¹ U_kᵀ(x − μ_k)
        posterior_means = self.means[None] + torch.einsum("kij,bkj->bki", eigenvectors, shrunk)
        out = (responsibilities[..., None] * posterior_means).sum(1)
        return out.reshape(shape).to(dtype)

    @property
    def _eigen(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eigenvalues (K, d) and eigenvectors (K, d, d) of the component covariances, computed once."""
        cache: tuple[torch.Tensor, torch.Tensor] | None = getattr(self, "_eigen_cache", None)
        if cache is None or cache[0].device != self.means.device:
            cache = self._eigen_cache = tuple(torch.linalg.eigh(self.covariances))
        return cache

    def stds(self) -> torch.Tensor:
        """Overall standard deviation of each coordinate of the mixture."""
        mean = (self.weights[:, None] * self.means).sum(0)
        second = (self.weights[:, None] * (torch.diagonal(self.covariances, dim1=-2, dim2=-1) + self.means**2)).sum(0)
        return (second - mean**2).sqrt()
