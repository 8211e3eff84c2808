"""Noise levels: the Karras grid and the time-point conventions of openai's and diffusers' samplers.

Convention (reference.md §1): grids are *descending*, index 0 is σ_max and index N−1 is σ_min, as in
openai's code and diffusers. Values are computed in float64.
"""

import itertools
from collections.abc import Sequence

import torch


def karras_sigmas(num_points: int, sigma_min: float, sigma_max: float, rho: float) -> torch.Tensor:
    """σ_i = (σ_max^{1/ρ} + i/(N−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, i = 0..N−1 (reference.md §1), float64."""
    if num_points < 2:
        raise ValueError(f"a Karras grid needs at least 2 points, got {num_points}")
    ramp = torch.linspace(0.0, 1.0, num_points, dtype=torch.float64)
    return karras_sigma_at(ramp, sigma_min, sigma_max, rho)


def karras_sigma_at(
    fraction: torch.Tensor, sigma_min: float, sigma_max: float | torch.Tensor, rho: float
) -> torch.Tensor:
    """σ at a fraction i/(N−1) ∈ [0, 1] of the way from σ_max to σ_min along the Karras ramp (reference.md §1); σ_max
    may be a tensor (one ramp per entry, broadcast against `fraction`)."""
    max_inv_rho = sigma_max ** (1.0 / rho)
    min_inv_rho = sigma_min ** (1.0 / rho)
    return (max_inv_rho + fraction.double() * (min_inv_rho - max_inv_rho)) ** rho


def sigmas_from_openai_ts(
    ts: Sequence[int], steps: int, sigma_min: float, sigma_max: float, rho: float
) -> torch.Tensor:
    """σ's evaluated by openai's `--ts a,b,...,steps-1 --steps S`: the last index only marks the end (§6)."""
    ts = list(ts)
    if len(ts) < 2:
        raise ValueError("--ts needs at least two indices: the evaluated ones and the end marker steps-1")
    if ts[-1] != steps - 1:
        raise ValueError(f"the last --ts index must be steps-1 = {steps - 1} (the end marker), got {ts[-1]}")
    if any(b <= a for a, b in itertools.pairwise(ts)) or ts[0] < 0:
        raise ValueError(f"--ts indices must be increasing and non-negative, got {ts}")
    fraction = torch.tensor(ts[:-1], dtype=torch.float64) / (steps - 1)
    return karras_sigma_at(fraction, sigma_min, sigma_max, rho)


def sigmas_from_diffusers_timesteps(
    timesteps: Sequence[int], num_train_timesteps: int, sigma_min: float, sigma_max: float, rho: float
) -> torch.Tensor:
    """σ's of diffusers' `CMStochasticIterativeScheduler.set_timesteps(timesteps=[...])` (§6).

    diffusers lists openai's grid indices in reverse (`[22, 0]` is openai's `--ts 0,22,39` for N = 40).
    """
    timesteps = list(timesteps)
    if not timesteps:
        raise ValueError("timesteps must not be empty")
    if any(b >= a for a, b in itertools.pairwise(timesteps)):
        raise ValueError(f"diffusers timesteps must be strictly descending, got {timesteps}")
    if timesteps[0] >= num_train_timesteps or timesteps[-1] < 0:
        raise ValueError(f"diffusers timesteps must lie in [0, {num_train_timesteps - 1}], got {timesteps}")
    fraction = torch.tensor(timesteps[::-1], dtype=torch.float64) / (num_train_timesteps - 1)
    return karras_sigma_at(fraction, sigma_min, sigma_max, rho)


def default_sampling_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float) -> torch.Tensor:
    """Time points for `num_steps`-step consistency sampling: the first `num_steps` of a Karras grid of steps+1."""
    if num_steps < 1:
        raise ValueError(f"the number of sampling steps must be at least 1, got {num_steps}")
    if num_steps == 1:
        return torch.tensor([sigma_max], dtype=torch.float64)
    return karras_sigmas(num_steps + 1, sigma_min, sigma_max, rho)[:-1]


def edm_training_sigma(normal: torch.Tensor, p_mean: float, p_std: float) -> torch.Tensor:
    """σ = exp(P_mean + P_std·n) for n ~ N(0, 1): EDM's lognormal training noise levels (reference.md §3)."""
    return torch.exp(p_mean + p_std * normal)


def lognormal_pair_probabilities(sigmas: torch.Tensor, p_mean: float, p_std: float) -> torch.Tensor:
    """iCT's p(i) ∝ erf((ln σ_i − P_mean)/(√2 P_std)) − erf((ln σ_{i+1} − P_mean)/(√2 P_std)) (§8).

    `sigmas` is a descending grid of N points; entry i is the probability of the pair (σ_i, σ_{i+1}).
    """
    cdf = torch.erf((torch.log(sigmas.double()) - p_mean) / (2**0.5 * p_std))
    mass = cdf[:-1] - cdf[1:]
    return mass / mass.sum()
