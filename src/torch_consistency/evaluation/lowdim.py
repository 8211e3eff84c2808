"""Metrics for low-dimensional data (reference.md §14): exact W2, MMD and the consistency error."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ..sigmas import karras_sigmas
from ..solvers import Denoiser, solve_ode


def wasserstein2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Exact W2 between two equal-size empirical distributions: √(min over matchings of mean ‖x_i − y_π(i)‖²)."""
    if x.shape != y.shape:
        raise ValueError(f"W2 needs point sets of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    a, b = x.flatten(1).double().numpy(), y.flatten(1).double().numpy()
    cost = (a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2 * a @ b.T
    rows, cols = linear_sum_assignment(cost)
    return float(np.sqrt(max(cost[rows, cols].mean(), 0.0)))


def mmd_squared(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] = (0.05, 0.1, 0.2, 0.5, 1.0)) -> float:
    """Unbiased MMD² with a sum of Gaussian kernels exp(−‖a−b‖²/(2h²)) over the bandwidths h."""
    x, y = x.flatten(1).double(), y.flatten(1).double()

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        squared = torch.cdist(a, b).square()
        return sum(torch.exp(-squared / (2 * h**2)) for h in bandwidths)

    n, m = len(x), len(y)
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(within_x + within_y - 2 * kxy.mean())


def ode_endpoint(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigma: float,
    sigma_end: float,
    num_steps: int = 512,
    rho: float = 7.0,
) -> torch.Tensor:
    """A high-accuracy PF-ODE solution from σ down to σ_end: Heun on a fine Karras grid, in float64."""
    levels = karras_sigmas(num_steps + 1, sigma_end, sigma, rho)
    return solve_ode(denoiser, x.double(), levels, "heun").x


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
    """‖f(x_σ, σ) − ODE(x_σ → σ_min)‖ for x_σ = x0 + σz, averaged over x0 at each σ (reference.md §12)."""
    errors = []
    for sigma in sigmas:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        x_sigma = x0 + sigma * noise
        reference = ode_endpoint(denoiser, x_sigma, float(sigma), sigma_min, num_steps)
        prediction = consistency_fn(x_sigma, x_sigma.new_full((len(x0),), float(sigma)))
        errors.append(float((prediction.double() - reference).flatten(1).norm(dim=1).mean()))
    return ConsistencyError([float(s) for s in sigmas], errors)
