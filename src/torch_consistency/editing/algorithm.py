"""Paper Algorithm 4 (reference.md §7): invertible transforms, masks and the editing iteration.

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

from ..errors import ConfigError, DataError
from ..samplers import ConsistencyFunction, multistep_renoise, sampling_loop
from ..sigmas import default_sampling_sigmas

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


def check_images(images: torch.Tensor, shape: Sequence[int], name: str = "images") -> None:
    """DataError naming `name` unless `images` is a batch (B, C, H, W) of images of `shape` (C, H, W)."""
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(shape):
        expected = ", ".join(map(str, shape))
        raise DataError(f"{name}: expected a batch of shape (B, {expected}), got {tuple(images.shape)}")


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


def randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def iterate(
    consistency_fn: ConsistencyFunction,
    start: torch.Tensor,
    project: Callable[[torch.Tensor], torch.Tensor] | None,
    levels: list[float],
    sigma_min: float,
    generator: torch.Generator | None,
    clip_denoised: bool,
    noises: Sequence[torch.Tensor] | None = None,
) -> EditResult:
    """x ~ N(start, t_1²I); then per t_n: re-noise by √(t_n² − ε²) (n ≥ 2), x ← f(x, t_n), x ← project(x): the
    sampling loop of Algorithm 1 (`samplers.sampling_loop`) with Algorithm 4's projection (§7)."""
    first = randn_like(start, generator) if noises is None else noises[0]
    renoise = multistep_renoise(sigma_min)
    result = sampling_loop(consistency_fn, levels, start + levels[0] * first, renoise, generator, clip_denoised,
                           project, noises)  # fmt: skip
    return EditResult(result.x, result.nfe)


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
    return iterate(consistency_fn, problem.known(), problem.project, levels, sigma_min, generator, clip_denoised)
