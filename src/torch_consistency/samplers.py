"""Sampling from a consistency function: f(x, σ) by paper Algorithm 1 (reference.md §6), TrigFlow f(x_t, t) (§10).

One loop, `sampling_loop`, runs them and the editing of Algorithm 4 (§7): each differs only in its start, its
re-noising rule and a projection after each f evaluation.
"""

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

ConsistencyFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Renoise = Callable[[torch.Tensor, float, torch.Tensor], torch.Tensor]  # (x, next level, z) → x noised to that level


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
    start = noise * levels[0]
    return sampling_loop(consistency_fn, levels, start, multistep_renoise(sigma_min), generator, clip_denoised)


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
    start = math.sin(levels[0]) * sigma_data * noise
    return sampling_loop(consistency_fn, levels, start, trigflow_renoise(sigma_data), generator, clip_denoised)


def multistep_renoise(sigma_min: float) -> Renoise:
    """Algorithm 1's re-noising: x + √(σ² − σ_min²)·z (§6)."""
    return lambda x, sigma, z: x + renoise_std(sigma, sigma_min) * z


def trigflow_renoise(sigma_data: float) -> Renoise:
    """sCM's re-noising: cos t·x + sin t·σ_d·z (§10)."""
    return lambda x, t, z: math.cos(t) * x + math.sin(t) * sigma_data * z


def sampling_loop(
    consistency_fn: ConsistencyFunction,
    levels: Sequence[float],
    start: torch.Tensor,
    renoise: Renoise,
    generator: torch.Generator | None,
    clip_denoised: bool,
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
    noises: Sequence[torch.Tensor] | None = None,
) -> SampleResult:
    """The loop of Algorithms 1 and 4 and of sCM sampling: x = `start`, already noised to levels[0]; for each level
    after the first x ← renoise(x, level, z); at every level x ← f(x, level), clamped to [-1, 1] with
    `clip_denoised`, then x ← project(x) when given (§6, §7, §10). NFE = len(levels).

    z for level n comes from `generator` in order (`noises[n]` instead, when given: noises[0] is the caller's)."""
    x, batch = start, start.shape[0]
    for n, level in enumerate(levels):
        if n > 0:
            if noises is None:
                z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            else:
                z = noises[n]
            x = renoise(x, level, z)
        x = consistency_fn(x, x.new_full((batch,), level))
        if clip_denoised:
            x = x.clamp(-1, 1)
        if project is not None:
            x = project(x)
    return SampleResult(x, len(levels))
