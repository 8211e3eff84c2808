"""Sampling from a consistency function: f(x, σ) by paper Algorithm 1 (reference.md §6), TrigFlow f(x_t, t) (§10)."""

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

ConsistencyFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SampleResult:
    """Samples and the number of network evaluations that made them."""

    x: torch.Tensor
    nfe: int


def renoise_std(sigma_next: float, sigma_min: float) -> float:
    """√(σ_next² − σ_min²): the noise Algorithm 1 adds before evaluating f at σ_next (§6)."""
    return (sigma_next**2 - sigma_min**2) ** 0.5


def sample_multistep(
    consistency_fn: ConsistencyFunction,
    sigmas: Sequence[float] | torch.Tensor,
    noise: torch.Tensor,
    sigma_min: float,
    generator: torch.Generator | None = None,
    clip_denoised: bool = False,
) -> SampleResult:
    """Algorithm 1: x = f(σ_1·z, σ_1); for each next σ: x ← f(x + √(σ² − σ_min²)·z, σ). NFE = len(sigmas).

    `noise` is the initial z (standard normal); later z's come from `generator`, so that with the same
    generator the draws happen in the order diffusers' `ConsistencyModelPipeline` makes them.
    `clip_denoised` clamps each f output to [-1, 1], as openai's code and diffusers do for images.
    """
    levels = [float(s) for s in sigmas]
    if not levels:
        raise ValueError("sample_multistep needs at least one σ")
    if any(b >= a for a, b in itertools.pairwise(levels)):
        raise ValueError(f"sampling σ's must be strictly decreasing, got {levels}")
    if levels[-1] < sigma_min:
        raise ValueError(f"sampling σ's must be at least σ_min = {sigma_min}, got {levels[-1]}")
    batch = noise.shape[0]
    x = noise * levels[0]
    for n, sigma in enumerate(levels):
        if n > 0:
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + renoise_std(sigma, sigma_min) * z
        x = consistency_fn(x, x.new_full((batch,), sigma))
        if clip_denoised:
            x = x.clamp(-1, 1)
    return SampleResult(x, len(levels))


def sample_onestep(
    consistency_fn: ConsistencyFunction, noise: torch.Tensor, sigma_max: float, clip_denoised: bool = False
) -> SampleResult:
    """x = f(σ_max·z, σ_max): one network evaluation (§6)."""
    return sample_multistep(consistency_fn, [sigma_max], noise, sigma_min=0.0, clip_denoised=clip_denoised)


def sample_trigflow(
    consistency_fn: ConsistencyFunction,
    times: Sequence[float] | torch.Tensor,
    noise: torch.Tensor,
    sigma_data: float,
    generator: torch.Generator | None = None,
    clip_denoised: bool = False,
) -> SampleResult:
    """sCM sampling (§10): x = f(sin t_1·σ_d·z, t_1); for each next t: x ← f(cos t·x + sin t·σ_d·z', t).

    At t_1 = π/2 one step is x0 = −σ_d·F(z, π/2); sCM's two steps re-noise at t = 1.1. `noise` is the initial
    standard normal z; later ones come from `generator`. NFE = len(times).
    """
    levels = [float(t) for t in times]
    if not levels:
        raise ValueError("sample_trigflow needs at least one time")
    if any(b >= a for a, b in itertools.pairwise(levels)) or levels[-1] <= 0 or levels[0] > math.pi / 2 + 1e-12:
        raise ValueError(f"TrigFlow times must be strictly decreasing in (0, π/2], got {levels}")
    batch = noise.shape[0]
    x = math.sin(levels[0]) * sigma_data * noise
    for n, t in enumerate(levels):
        if n > 0:
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = math.cos(t) * x + math.sin(t) * sigma_data * z
        x = consistency_fn(x, x.new_full((batch,), t))
        if clip_denoised:
            x = x.clamp(-1, 1)
    return SampleResult(x, len(levels))
