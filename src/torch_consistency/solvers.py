"""Probability-flow ODE solvers on any denoiser D(x, σ): dx/dσ = (x − D(x, σ))/σ (reference.md §1, §3).

A denoiser is any callable `denoiser(x, sigma)` with `sigma` of shape (B,). Step functions accept a
per-sample σ, so consistency distillation can take one teacher step from a different σ for every sample.
"""

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .parameterization import append_dims

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SOLVERS = ("euler", "heun", "dpmpp-2m")
ONE_STEP_SOLVERS = ("euler", "heun")  # each step needs only its own level (DPM-Solver++(2M) looks back)


@dataclass
class ODESolution:
    """The state at the last σ and the number of network evaluations spent."""

    x: torch.Tensor
    nfe: int


def ode_derivative(denoiser: Denoiser, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """dx/dσ = (x − D(x, σ))/σ (reference.md §1)."""
    return (x - denoiser(x, sigma)) / append_dims(sigma, x.ndim)


def euler_step(denoiser: Denoiser, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """x' = x + (σ'−σ)·(x − D(x,σ))/σ; with σ-parameterization this is DDIM with η = 0 (§3). One call."""
    return x + append_dims(sigma_next - sigma, x.ndim) * ode_derivative(denoiser, x, sigma)


def heun_step(denoiser: Denoiser, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """EDM Algorithm 2: Euler to x̃, then x' = x + (σ'−σ)(d + d̃)/2 (§3). Two calls; needs σ' > 0."""
    d = ode_derivative(denoiser, x, sigma)
    step = append_dims(sigma_next - sigma, x.ndim)
    x_euler = x + step * d
    d_next = ode_derivative(denoiser, x_euler, sigma_next)
    return x + step * (d + d_next) / 2


Step = Callable[[Denoiser, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def substep_levels(sigma: torch.Tensor, sigma_next: torch.Tensor, count: int, rho: float) -> list[torch.Tensor]:
    """σ, σ' and the `count` − 1 levels between at equal strides of σ^{1/ρ}: on an N-point Karras grid, the levels of
    the ((N−1)·count + 1)-point grid (reference.md §1); computed in float64, the ends exactly σ and σ'."""
    start, end = sigma.double() ** (1 / rho), sigma_next.double() ** (1 / rho)
    levels = [((start + j / count * (end - start)) ** rho).to(sigma.dtype) for j in range(count + 1)]
    levels[0], levels[-1] = sigma, sigma_next
    return levels


def substepped(step: Step, count: int, rho: float) -> Step:
    """`count` steps of `step` from σ to σ' through `substep_levels`: CD's teacher over a coarse grid (§4)."""
    if count < 1:
        raise ValueError(f"the number of substeps must be at least 1, got {count}")
    if count == 1:
        return step

    def run(denoiser: Denoiser, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        for level, level_next in itertools.pairwise(substep_levels(sigma, sigma_next, count, rho)):
            x = step(denoiser, x, level, level_next)
        return x

    return run


def dpmpp_2m(denoiser: Denoiser, x: torch.Tensor, levels: Sequence[torch.Tensor]) -> torch.Tensor:
    """DPM-Solver++(2M) through positive levels σ_0 > … > σ_K, each (B,) (a σ per sample): K calls. In λ = −ln σ,
    x' = (σ'/σ)·x − (e^{−h} − 1)·D̂ with h = λ' − λ and D̂ = (1 + 1/2r)·D − (1/2r)·D_prev, r = h_prev/h; the first
    step takes D̂ = D, which is Euler (Lu et al. 2022; reference.md §3). Coefficients in float64."""
    previous_denoised, previous_step = None, None
    for sigma, sigma_next in itertools.pairwise(levels):
        denoised = denoiser(x, sigma)
        step = sigma.double().log() - sigma_next.double().log()
        if previous_denoised is not None and previous_step is not None:
            half_inverse_ratio = append_dims(step / (2 * previous_step), x.ndim).to(x.dtype)  # 1/(2r)
            denoised_estimate = (1 + half_inverse_ratio) * denoised - half_inverse_ratio * previous_denoised
        else:
            denoised_estimate = denoised
        x = (append_dims(sigma_next.double() / sigma.double(), x.ndim).to(x.dtype) * x
             - append_dims(torch.expm1(-step), x.ndim).to(x.dtype) * denoised_estimate)  # fmt: skip
        previous_denoised, previous_step = denoised, step
    return x


def teacher_step(solver: str, count: int, rho: float) -> Step:
    """CD's teacher step from σ to σ' (per sample): `count` steps of Euler or Heun, or DPM-Solver++(2M) through the
    same levels (2M needs count ≥ 2: its first step is Euler; one call per level against Heun's two)."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    if solver != "dpmpp-2m":
        return substepped(heun_step if solver == "heun" else euler_step, count, rho)
    if count < 2:
        raise ValueError(f"DPM-Solver++(2M) as a teacher step needs at least 2 substeps, got {count}")

    def run(denoiser: Denoiser, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        return dpmpp_2m(denoiser, x, substep_levels(sigma, sigma_next, count, rho))

    return run


def churn_gamma(sigma: float, num_steps: int, s_churn: float, s_tmin: float, s_tmax: float) -> float:
    """EDM's γ_i = min(S_churn/K, √2−1) for σ_i in [S_tmin, S_tmax], else 0 (§3)."""
    if s_churn <= 0 or not s_tmin <= sigma <= s_tmax:
        return 0.0
    return min(s_churn / num_steps, math.sqrt(2.0) - 1.0)


def solve_ode(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    solver: str = "heun",
    *,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    generator: torch.Generator | None = None,
    before_step: Callable[[torch.Tensor, float], torch.Tensor] | None = None,
) -> ODESolution:
    """Integrate from sigmas[0] down to sigmas[-1] (which may be 0) with Euler, Heun or DPM-Solver++(2M).

    Heun takes Euler on a last step to σ = 0 (2K−1 calls for K levels before 0). S_churn > 0 turns Heun
    into EDM's stochastic sampler (Algorithm 2); it needs no extra network calls. `before_step(x, σ)` replaces x
    at each level before the step from it (the editing baseline's replacement guidance, §7).
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    if s_churn > 0 and solver != "heun":
        raise ValueError("churn (EDM's stochastic sampler) is defined for the Heun solver only")
    if before_step is not None and solver not in ONE_STEP_SOLVERS:
        raise ValueError(f"before_step is defined for the one-step solvers {', '.join(ONE_STEP_SOLVERS)}")
    if solver == "dpmpp-2m":
        return _solve_dpmpp_2m(denoiser, x, sigmas)
    levels = [float(s) for s in sigmas]
    batch = x.shape[0]
    nfe = 0
    for sigma, sigma_next in itertools.pairwise(levels):
        if before_step is not None:
            x = before_step(x, sigma)
        gamma = churn_gamma(sigma, len(levels) - 1, s_churn, s_tmin, s_tmax)
        if gamma > 0:
            sigma_hat = sigma * (1 + gamma)
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + math.sqrt(sigma_hat**2 - sigma**2) * s_noise * noise
            sigma = sigma_hat
        s = x.new_full((batch,), sigma)
        s_next = x.new_full((batch,), sigma_next)
        if solver == "euler" or sigma_next == 0:
            x, nfe = euler_step(denoiser, x, s, s_next), nfe + 1
        else:
            x, nfe = heun_step(denoiser, x, s, s_next), nfe + 2
    return ODESolution(x, nfe)


def _solve_dpmpp_2m(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor) -> ODESolution:
    """DPM-Solver++(2M) through the positive levels, then, where the last level is 0, x = D(x, σ_last)."""
    levels = [float(s) for s in sigmas]
    positive = [x.new_full((x.shape[0],), s) for s in levels if s > 0]
    x = dpmpp_2m(denoiser, x, positive)
    if levels[-1] == 0 and positive:
        x = denoiser(x, positive[-1])
    return ODESolution(x, len(levels) - 1)
