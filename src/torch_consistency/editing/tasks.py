"""The editing tasks on top of Algorithm 4: inpainting, colorization, super-resolution, strokes, denoising,
interpolation, and the teacher's PF-ODE with replacement guidance as a baseline (reference.md §7)."""

import itertools
from collections.abc import Sequence

import torch

from ..errors import ConfigError, DataError
from ..samplers import ConsistencyFunction
from ..solvers import ONE_STEP_SOLVERS, Denoiser, solve_ode
from .algorithm import (
    LUMINANCE,
    STROKE_SIGMAS,
    ChannelMixing,
    EditProblem,
    EditResult,
    Identity,
    LinearTransform,
    PatchTransform,
    check_sigmas,
    colorization_matrix,
    edit,
    iterate,
    patch_mean_matrix,
    randn_like,
)


def inpainting_problem(reference: torch.Tensor, mask: torch.Tensor) -> EditProblem:
    """A = I, Ω = the hole; `mask` broadcasts to the images from the right, e.g. (H, W) (§7)."""
    return EditProblem(reference, Identity(), mask)


def colorization_reference(grey: torch.Tensor) -> torch.Tensor:
    """A grey RGB image whose luminance 0.2989R + 0.5870G + 0.1140B equals `grey` (B, 1, H, W) exactly."""
    if grey.ndim != 4 or grey.shape[1] != 1:
        raise DataError(f"colorization takes grey images (B, 1, H, W), got shape {tuple(grey.shape)}")
    return grey.expand(-1, 3, -1, -1) / sum(LUMINANCE)


def colorization_problem(grey: torch.Tensor) -> EditProblem:
    """A = Qᵀ per pixel (channel 0 ∝ luminance), keep channel 0, generate channels 1 and 2 (§7).

    §7's "channel 0 of Q·x" is the coordinate in the basis Q, i.e. (Qᵀx)_0 = q_1·x, as openai's
    einsum("bchw,cd->bdhw", x, Q) computes it; (Qx)_0 would not be the luminance.
    """
    mask = torch.tensor([False, True, True]).reshape(3, 1, 1)
    return EditProblem(colorization_reference(grey), ChannelMixing(colorization_matrix()), mask)


def super_resolution_problem(low_res: torch.Tensor, factor: int) -> EditProblem:
    """Reference = nearest upsampling by p; keep each p×p patch's mean, generate the other p² − 1 coefficients (§7)."""
    if low_res.ndim != 4:
        raise DataError(f"super-resolution takes images (B, C, h, w), got shape {tuple(low_res.shape)}")
    if factor < 2:
        raise ConfigError(f"super-resolution needs an integer factor of at least 2, got {factor}")
    reference = low_res.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)
    mask = torch.ones(factor * factor, dtype=torch.bool)
    mask[0] = False
    return EditProblem(reference, PatchTransform(patch_mean_matrix(factor)), mask)


def _solve(consistency_fn, problem, sigmas, sigma_min, generator, clip_denoised) -> EditResult:
    return edit(
        consistency_fn, problem.reference, problem.transform, problem.mask, sigmas, sigma_min, generator, clip_denoised
    )


def inpaint(
    consistency_fn: ConsistencyFunction,
    reference: torch.Tensor,
    mask: torch.Tensor,
    *,
    sigmas: Sequence[float] | torch.Tensor,
    sigma_min: float,
    generator: torch.Generator | None = None,
    clip_denoised: bool = False,
) -> EditResult:
    """Fill the pixels where `mask` is 1, keep the others from `reference` (Algorithm 4, A = I; §7)."""
    return _solve(consistency_fn, inpainting_problem(reference, mask), sigmas, sigma_min, generator, clip_denoised)


def colorize(
    consistency_fn: ConsistencyFunction,
    grey: torch.Tensor,
    *,
    sigmas: Sequence[float] | torch.Tensor,
    sigma_min: float,
    generator: torch.Generator | None = None,
    clip_denoised: bool = False,
) -> EditResult:
    """RGB images whose luminance is `grey` (B, 1, H, W) (Algorithm 4 with A = Qᵀ per pixel; §7)."""
    return _solve(consistency_fn, colorization_problem(grey), sigmas, sigma_min, generator, clip_denoised)


def super_resolve(
    consistency_fn: ConsistencyFunction,
    low_res: torch.Tensor,
    factor: int,
    *,
    sigmas: Sequence[float] | torch.Tensor,
    sigma_min: float,
    generator: torch.Generator | None = None,
    clip_denoised: bool = False,
) -> EditResult:
    """Images p times larger whose p×p patch means are `low_res` (Algorithm 4 with per-patch A; §7)."""
    problem = super_resolution_problem(low_res, factor)
    return _solve(consistency_fn, problem, sigmas, sigma_min, generator, clip_denoised)


def stroke_guided(
    consistency_fn: ConsistencyFunction,
    strokes: torch.Tensor,
    *,
    sigma_min: float,
    sigmas: Sequence[float] | torch.Tensor = STROKE_SIGMAS,
    generator: torch.Generator | None = None,
    clip_denoised: bool = False,
) -> EditResult:
    """SDEdit (§7): x ~ N(strokes, t_1²I), then Algorithm 1 at the later t's; Ω = everything, so no replacement.

    Line 1 of Algorithm 4 with Ω = 1 would erase the strokes, so this starts from the strokes themselves.
    """
    levels = check_sigmas(sigmas, sigma_min)
    return iterate(consistency_fn, strokes, None, levels, sigma_min, generator, clip_denoised)


def denoise(
    consistency_fn: ConsistencyFunction,
    noisy: torch.Tensor,
    sigma: float,
    *,
    sigma_min: float,
    clip_denoised: bool = False,
) -> EditResult:
    """f(x_noisy, σ): one evaluation maps an image with Gaussian noise of level σ to the data (§7)."""
    check_sigmas([sigma], sigma_min)
    x = consistency_fn(noisy, noisy.new_full((noisy.shape[0],), float(sigma)))
    return EditResult(x.clamp(-1, 1) if clip_denoised else x, 1)


def slerp(z_a: torch.Tensor, z_b: torch.Tensor, alpha: float) -> torch.Tensor:
    """Spherical interpolation per sample: sin((1−α)θ)/sin θ·z_a + sin(αθ)/sin θ·z_b, θ = ∠(z_a, z_b) (§7)."""
    a, b = z_a.flatten(1), z_b.flatten(1)
    cosine = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    theta = torch.arccos(cosine.clamp(-1, 1))
    sine = torch.sin(theta)
    parallel = sine < 1e-6
    safe = torch.where(parallel, torch.ones_like(sine), sine)
    weight_a = torch.where(parallel, torch.full_like(sine, 1 - alpha), torch.sin((1 - alpha) * theta) / safe)
    weight_b = torch.where(parallel, torch.full_like(sine, alpha), torch.sin(alpha * theta) / safe)
    return (weight_a[:, None] * a + weight_b[:, None] * b).reshape(z_a.shape)


def _paths(consistency_fn, cases, levels, sigma_min, clip_denoised) -> EditResult:
    """Run `iterate` without projection for each (start, noises) and stack the results on dim 1."""
    outputs = [iterate(consistency_fn, start, None, levels, sigma_min, None, clip_denoised, z).x for start, z in cases]
    return EditResult(torch.stack(outputs, dim=1), len(levels))


def interpolate_noises(
    consistency_fn: ConsistencyFunction,
    noise_a: torch.Tensor,
    noise_b: torch.Tensor,
    alphas: Sequence[float],
    *,
    sigmas: Sequence[float] | torch.Tensor,
    sigma_min: float,
    generator: torch.Generator | None = None,
    clip_denoised: bool = False,
) -> EditResult:
    """Samples from slerp(z_a, z_b, α) for each α: x = f(t_1·z, t_1), then Algorithm 1 (§6, §7); x is (B, K, ...).

    The later re-noising z's are drawn once and shared by every α, so the path is smooth. NFE = len(sigmas).
    """
    levels = check_sigmas(sigmas, sigma_min)
    if noise_a.shape != noise_b.shape:
        raise DataError(f"the two noises differ in shape: {tuple(noise_a.shape)} and {tuple(noise_b.shape)}")
    later = [randn_like(noise_a, generator) for _ in levels[1:]]
    start = torch.zeros_like(noise_a)
    cases = [(start, [slerp(noise_a, noise_b, float(alpha)), *later]) for alpha in alphas]
    return _paths(consistency_fn, cases, levels, sigma_min, clip_denoised)


def interpolate_images(
    consistency_fn: ConsistencyFunction,
    image_a: torch.Tensor,
    image_b: torch.Tensor,
    alphas: Sequence[float],
    *,
    sigma_min: float,
    sigmas: Sequence[float] | torch.Tensor = STROKE_SIGMAS,
    generator: torch.Generator | None = None,
    clip_denoised: bool = False,
) -> EditResult:
    """Between two images: SDEdit of the blend (1−α)a + αb with z's shared by every α (§7); x is (B, K, ...).

    A consistency model has no inverse (image → noise), so the paper's noise slerp cannot start from given
    images. Both are encoded by the forward process with the same z, u = x + t_1·z; linear interpolation of u
    keeps the noise part exactly t_1·z at every α (slerp would rescale it), so u(α) is a correct noisy sample
    of the blend, which f maps back to the data; α = 0 and 1 give SDEdit reconstructions of a and b.
    """
    levels = check_sigmas(sigmas, sigma_min)
    if image_a.shape != image_b.shape:
        raise DataError(f"the two images differ in shape: {tuple(image_a.shape)} and {tuple(image_b.shape)}")
    noises = [randn_like(image_a, generator) for _ in levels]
    cases = [((1 - alpha) * image_a + alpha * image_b, noises) for alpha in map(float, alphas)]
    return _paths(consistency_fn, cases, levels, sigma_min, clip_denoised)


def edit_with_teacher(
    denoiser: Denoiser,
    reference: torch.Tensor,
    transform: LinearTransform,
    mask: torch.Tensor,
    sigmas: Sequence[float] | torch.Tensor,
    solver: str = "heun",
    generator: torch.Generator | None = None,
    clip_denoised: bool = False,
) -> EditResult:
    """Baseline for Algorithm 4 with a denoiser: PF-ODE solve with replacement guidance (§3, §7).

    x = y_known + σ_0·z; before each step the kept coefficients are replaced by those of the noised reference
    y + σ·z (the same z throughout, so the known part follows the forward process); a last projection makes them
    exact. `sigmas` descends to 0 (e.g. `generate.teacher_sigmas`); NFE = 2K − 1 with Heun, K with Euler.
    """
    levels = [float(s) for s in sigmas]
    if solver not in ONE_STEP_SOLVERS:  # replacement guidance steps one level at a time
        raise ConfigError(f"the teacher baseline takes the solver {' or '.join(ONE_STEP_SOLVERS)}, got {solver!r}")
    if len(levels) < 2 or levels[-1] != 0 or any(b >= a for a, b in itertools.pairwise(levels)):
        raise ConfigError(f"teacher levels must decrease strictly to 0, got {levels}")
    problem = EditProblem(reference, transform, mask)
    z = randn_like(reference, generator)

    def guide(x: torch.Tensor, sigma: float) -> torch.Tensor:
        return problem.project(x, problem.transform.forward(reference + sigma * z))

    start = problem.known() + levels[0] * z
    result = solve_ode(denoiser, start, torch.tensor(levels, dtype=torch.float64), solver, before_step=guide)
    return EditResult(problem.project(result.x.clamp(-1, 1) if clip_denoised else result.x), result.nfe)


def inpaint_with_teacher(
    denoiser: Denoiser,
    reference: torch.Tensor,
    mask: torch.Tensor,
    sigmas: Sequence[float] | torch.Tensor,
    solver: str = "heun",
    generator: torch.Generator | None = None,
    clip_denoised: bool = False,
) -> EditResult:
    """Inpainting by the teacher's PF-ODE with replacement guidance: `edit_with_teacher` with A = I (§3, §7).

    Stroke-guided generation (SDEdit) and denoising with a teacher need no guidance: `solvers.solve_ode` from
    strokes + t_1·z, or from the noisy image, along a grid that starts at t_1 (or σ) and ends at 0.
    """
    return edit_with_teacher(denoiser, reference, Identity(), mask, sigmas, solver, generator, clip_denoised)
