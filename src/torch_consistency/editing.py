"""Zero-shot editing with a consistency function f(x, σ): paper Algorithm 4 and its tasks (reference.md §7).

Algorithm 4, for time points t_1 > … > t_N, a reference y, an invertible linear map A and a mask Ω over the
coefficients Ay (1 = generate, 0 = keep):

    y ← A⁻¹[(Ay)⊙(1−Ω)];  x ~ N(y, t_1²I);  x ← f(x, t_1);  x ← A⁻¹[(Ay)⊙(1−Ω) + (Ax)⊙Ω]
    for n = 2..N:  x ~ N(x, (t_n² − ε²)I);  x ← f(x, t_n);  x ← A⁻¹[(Ay)⊙(1−Ω) + (Ax)⊙Ω]

The kept coefficients of every result equal those of y (bit for bit for A = I, to rounding otherwise).
Algorithm 4 is replacement guidance, not exact posterior sampling: for Gaussian data and the exact f, one
step samples close to the prior of the unknown part and the law approaches the exact conditional only as
the schedule gets long (error ~1/N on a Karras grid; tests/test_editing.py). More steps therefore help.

Images are (B, C, H, W) in [-1, 1]. Task functions validate their inputs and raise one-line `DataError`
(bad images or masks) or `ConfigError` (bad σ's, factors, task and model that do not fit).
"""

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .errors import ConfigError, DataError
from .samplers import ConsistencyFunction, renoise_std
from .sigmas import default_sampling_sigmas
from .solvers import Denoiser, euler_step, heun_step

LUMINANCE = (0.2989, 0.5870, 0.1140)
STROKE_SIGMAS = (5.38, 2.24)  # the paper's t_1, t_2 for stroke-guided generation (§7)
DEFAULT_EDIT_STEPS = 40  # replacement guidance improves with steps (see the module docstring)


@dataclass
class EditResult:
    """Edited images and the network evaluations per image that made them."""

    x: torch.Tensor
    nfe: int


class LinearTransform:
    """An invertible linear map A on images: `forward` gives the coefficients Ax, `inverse` maps them back (§7)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def inverse(self, coefficients: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class Identity(LinearTransform):
    """A = I: the coefficients are the pixels (inpainting, §7)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def inverse(self, coefficients: torch.Tensor) -> torch.Tensor:
        return coefficients


class ChannelMixing(LinearTransform):
    """Per pixel, coefficients Qᵀx in the orthonormal basis given by the columns of Q (C×C); A⁻¹c = Qc (§7)."""

    def __init__(self, basis: torch.Tensor) -> None:
        self.basis = basis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bc...,cd->bd...", x, self.basis.to(x))

    def inverse(self, coefficients: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bd...,cd->bc...", coefficients, self.basis.to(coefficients))


class PatchTransform(LinearTransform):
    """Per p×p patch, coefficients Pᵀv of the patch's p² pixels v; layout (B, C, H/p, W/p, p²) (§7)."""

    def __init__(self, basis: torch.Tensor) -> None:
        self.basis = basis
        self.factor = math.isqrt(basis.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.factor
        if h % p or w % p:
            raise ConfigError(f"the factor {p} does not divide the image size {h}×{w}")
        patches = x.reshape(b, c, h // p, p, w // p, p).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h // p, w // p, p * p)
        return patches @ self.basis.to(x)

    def inverse(self, coefficients: torch.Tensor) -> torch.Tensor:
        b, c, hp, wp, _ = coefficients.shape
        p = self.factor
        patches = coefficients @ self.basis.to(coefficients).T
        return patches.reshape(b, c, hp, wp, p, p).permute(0, 1, 2, 4, 3, 5).reshape(b, c, hp * p, wp * p)


def _orthogonal_with_first_column(vector: torch.Tensor) -> torch.Tensor:
    """QR of [v, e_2, …, e_n]: an orthogonal matrix whose first column is v/‖v‖, signed to sum positive (§7)."""
    n = vector.numel()
    matrix = torch.eye(n, dtype=torch.float64)
    matrix[:, 0] = vector.double() / vector.double().norm()
    q = torch.linalg.qr(matrix).Q
    return -q if q[:, 0].sum() < 0 else q


def colorization_matrix() -> torch.Tensor:
    """Orthogonal 3×3 Q with first column ∝ (0.2989, 0.5870, 0.1140), float64 (reference.md §7)."""
    return _orthogonal_with_first_column(torch.tensor(LUMINANCE, dtype=torch.float64))


def patch_mean_matrix(factor: int) -> torch.Tensor:
    """Orthogonal p²×p² matrix whose first column is (1/p)·𝟙: coefficient 0 is p·(patch mean), float64 (§7)."""
    if factor < 1:
        raise ConfigError(f"the super-resolution factor must be a positive integer, got {factor}")
    return _orthogonal_with_first_column(torch.ones(factor * factor, dtype=torch.float64))


@dataclass
class EditProblem:
    """A reference y, a transform A and a mask Ω over Ay (True = generate): the data of Algorithm 4 (§7)."""

    reference: torch.Tensor
    transform: LinearTransform
    mask: torch.Tensor

    def __post_init__(self) -> None:
        coefficients = self.transform.forward(self.reference)
        self.mask = _checked_mask(self.mask, coefficients.shape).to(self.reference.device)
        self.coefficients = coefficients

    def known(self) -> torch.Tensor:
        """A⁻¹[(Ay)⊙(1−Ω)]: the reference with the part to generate set to zero (line 1 of Algorithm 4)."""
        return self.transform.inverse(torch.where(self.mask, torch.zeros_like(self.coefficients), self.coefficients))

    def project(self, x: torch.Tensor, kept: torch.Tensor | None = None) -> torch.Tensor:
        """A⁻¹[(Ay)⊙(1−Ω) + (Ax)⊙Ω]: keep the reference's coefficients (or `kept`), the others from x (§7)."""
        kept = self.coefficients if kept is None else kept
        return self.transform.inverse(torch.where(self.mask, self.transform.forward(x), kept.to(x)))


def _checked_mask(mask: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    mask = torch.as_tensor(mask)
    try:
        fits = mask.ndim <= len(shape) and torch.broadcast_shapes(mask.shape, shape) == shape
    except RuntimeError:
        fits = False
    if not fits:
        raise DataError(
            f"the mask has shape {tuple(mask.shape)}, which does not fit coefficients of shape {tuple(shape)}"
        )
    if mask.dtype != torch.bool:
        if not ((mask == 0) | (mask == 1)).all():
            raise DataError("the mask must be binary (1 = generate, 0 = keep); it has other values")
        mask = mask == 1
    return mask


def check_sigmas(sigmas: Sequence[float] | torch.Tensor, sigma_min: float) -> list[float]:
    """The time points as floats; ConfigError unless they are finite, strictly decreasing and at least σ_min."""
    levels = [float(s) for s in sigmas]
    if not levels:
        raise ConfigError("editing needs at least one time point")
    if any(not math.isfinite(s) for s in levels) or any(b >= a for a, b in itertools.pairwise(levels)):
        raise ConfigError(f"time points must be finite and strictly decreasing, got {levels}")
    if levels[-1] < sigma_min:
        raise ConfigError(f"time points must be at least σ_min = {sigma_min}, got {levels[-1]}")
    return levels


def default_edit_sigmas(sigma_min: float, sigma_max: float, rho: float, steps: int = DEFAULT_EDIT_STEPS) -> list[float]:
    """Default time points for Algorithm 4: the first `steps` points of a Karras grid of steps + 1 (§6, §7)."""
    return default_sampling_sigmas(steps, sigma_min, sigma_max, rho).tolist()


def check_images(images: torch.Tensor, sample_shape: Sequence[int], name: str = "the images") -> None:
    """DataError unless `images` is a batch (B, C, H, W) of the model's channels and size."""
    channels, height, width = sample_shape
    if images.ndim != 4 or images.shape[1] != channels:
        raise DataError(f"{name} have shape {tuple(images.shape)}; the model needs (B, {channels}, {height}, {width})")
    if tuple(images.shape[2:]) != (height, width):
        size = "×".join(map(str, images.shape[2:]))
        raise DataError(f"{name} are {size}; the model makes {height}×{width} images")


def check_task_fits_model(task: str, sample_shape: Sequence[int], factor: int | None = None) -> None:
    """ConfigError when a task cannot run on images of `sample_shape` (C, H, W)."""
    channels, height, width = sample_shape
    if task == "colorize" and channels != 3:
        raise ConfigError(f"colorization needs a 3-channel (RGB) model; this one makes {channels}-channel images")
    if task == "super-resolve":
        if factor is None or factor < 2:
            raise ConfigError(f"super-resolution needs an integer factor of at least 2, got {factor}")
        if height % factor or width % factor:
            raise ConfigError(f"the factor {factor} does not divide the model's image size {height}×{width}")


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


def _iterate(
    consistency_fn: ConsistencyFunction,
    start: torch.Tensor,
    project: Callable[[torch.Tensor], torch.Tensor],
    levels: list[float],
    sigma_min: float,
    generator: torch.Generator | None,
    clip_denoised: bool,
    noises: Sequence[torch.Tensor] | None = None,
) -> EditResult:
    """x ~ N(start, t_1²I); then per t_n: re-noise by √(t_n² − ε²) (n ≥ 2), x ← f(x, t_n), x ← project(x)."""
    x = start
    for n, sigma in enumerate(levels):
        z = _randn_like(start, generator) if noises is None else noises[n]
        x = x + (sigma if n == 0 else renoise_std(sigma, sigma_min)) * z
        x = consistency_fn(x, x.new_full((x.shape[0],), sigma))
        if clip_denoised:
            x = x.clamp(-1, 1)
        x = project(x)
    return EditResult(x, len(levels))


def edit(
    consistency_fn: ConsistencyFunction,
    reference: torch.Tensor,
    transform: LinearTransform,
    mask: torch.Tensor,
    sigmas: Sequence[float] | torch.Tensor,
    sigma_min: float,
    generator: torch.Generator | None = None,
    clip_denoised: bool = False,
) -> EditResult:
    """Paper Algorithm 4 exactly as in reference.md §7; `mask` lives on Ay (1 = generate). NFE = len(sigmas).

    z's are drawn from `generator` in order: the initial noise, then one per later time point.
    """
    levels = check_sigmas(sigmas, sigma_min)
    problem = EditProblem(reference, transform, mask)
    return _iterate(consistency_fn, problem.known(), problem.project, levels, sigma_min, generator, clip_denoised)


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
    return _iterate(consistency_fn, strokes, _same, levels, sigma_min, generator, clip_denoised)


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
    """Run `_iterate` without projection for each (start, noises) and stack the results on dim 1."""
    outputs = [
        _iterate(consistency_fn, start, _same, levels, sigma_min, None, clip_denoised, z).x for start, z in cases
    ]
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
    later = [_randn_like(noise_a, generator) for _ in levels[1:]]
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
    noises = [_randn_like(image_a, generator) for _ in levels]
    cases = [((1 - alpha) * image_a + alpha * image_b, noises) for alpha in map(float, alphas)]
    return _paths(consistency_fn, cases, levels, sigma_min, clip_denoised)


def _teacher_solve(
    denoiser: Denoiser,
    x: torch.Tensor,
    levels: list[float],
    solver: str,
    guide: Callable[[torch.Tensor, float], torch.Tensor],
) -> EditResult:
    """Euler or Heun steps along `levels` (ending at 0; Euler for the last step), `guide(x, σ)` before each."""
    if solver not in ("euler", "heun"):
        raise ConfigError(f"the teacher baseline takes the solver euler or heun, got {solver!r}")
    if len(levels) < 2 or levels[-1] != 0 or any(b >= a for a, b in itertools.pairwise(levels)):
        raise ConfigError(f"teacher levels must decrease strictly to 0, got {levels}")
    nfe = 0
    for sigma, sigma_next in itertools.pairwise(levels):
        x = guide(x, sigma)
        s, s_next = x.new_full((x.shape[0],), sigma), x.new_full((x.shape[0],), sigma_next)
        if solver == "euler" or sigma_next == 0:
            x, nfe = euler_step(denoiser, x, s, s_next), nfe + 1
        else:
            x, nfe = heun_step(denoiser, x, s, s_next), nfe + 2
    return EditResult(x, nfe)


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
    problem = EditProblem(reference, transform, mask)
    z = _randn_like(reference, generator)

    def guide(x: torch.Tensor, sigma: float) -> torch.Tensor:
        return problem.project(x, problem.transform.forward(reference + sigma * z))

    result = _teacher_solve(denoiser, problem.known() + levels[0] * z, levels, solver, guide)
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
