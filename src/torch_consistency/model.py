"""The model object of the public API: a checkpoint loaded once, sampled and edited with tensors in and out.

`load(path)` gives a `Model` for any method: a consistency model (CD, CT, iCT, ECT), a TrigFlow model (sCM) or a
teacher (EDM denoiser). Sampling goes through `generate.sample_model` (what `cm sample` runs); editing
through the tasks of `editing` (paper Algorithm 4, reference.md §7), with a TrigFlow model's f at EDM σ's and a
teacher's PF-ODE with replacement guidance as the baseline. Bad arguments raise a `UserInputError` subclass whose
message names the argument.
"""

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from . import editing
from .checkpoint import Checkpoint, load_checkpoint
from .config import Config, guidance_section, has_guidance_input, has_null_class
from .devices import available_device
from .editing import EditResult
from .errors import ConfigError
from .generate import requested_labels, sample_model, sampling_guidance, teacher_sigmas
from .guidance import guided_denoiser, network_calls
from .seeding import batch_generator
from .sigmas import karras_sigmas
from .solvers import ONE_STEP_SOLVERS, SOLVERS, solve_ode
from .trigflow import TrigFlowModel

Labels = int | str | Sequence[int] | None
EditFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Samples:
    """What `Model.sample` drew: `x` (n, *sample_shape) in the data's range ([-1, 1] for images), the class labels
    (or None), the network evaluations per sample, the time points used (σ's; a teacher's levels end at 0; TrigFlow
    times t for sCM models) and the guidance scale w (None for a model that takes none)."""

    x: torch.Tensor
    labels: torch.Tensor | None
    nfe: int
    sigmas: list[float]
    guidance: float | None


@dataclass(frozen=True)
class GuidanceRange:
    """The guidance scale w a model takes: classifier-free guidance for a teacher with a null class (any w ≥ 0) or
    the trained range of a w-input student; `default` is its config's sampling.guidance."""

    default: float
    minimum: float
    maximum: float


def load(run_or_checkpoint: str | Path, weights: str | None = None, device: str | torch.device = "cpu") -> "Model":
    """The model of a checkpoint folder, or of the newest readable checkpoint of a run folder, with the weight set
    `weights` (online, target, ema-RATE; default: the first EMA) on `device`. CheckpointError for missing, foreign
    or corrupt input."""
    return Model(load_checkpoint(run_or_checkpoint), weights, device)


def _at_least_one(**values: int | None) -> None:
    for name, value in values.items():
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")


class Model:
    """A trained model and what it needs to sample and edit: `.config`, `.sample_shape`, `.num_classes` (0 for an
    unconditional model), `.method` (train.method), `.parameterization` (consistency, trigflow or denoiser),
    `.checkpoint` (its folder), `.weights` (the weight set), `.device`, `.guidance` (a GuidanceRange or None) and
    `.network` (the torch module)."""

    def __init__(self, checkpoint: Checkpoint, weights: str | None = None, device: str | torch.device = "cpu") -> None:
        self.device = available_device(str(device), "device")
        self.weights = weights or checkpoint.default_weights()
        self.network = checkpoint.build_model(self.weights).to(self.device)
        self._checkpoint = checkpoint

    def __repr__(self) -> str:
        return f"Model({self.method} at {self.checkpoint}, weights={self.weights}, device={self.device})"

    @property
    def config(self) -> Config:
        return self._checkpoint.config

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self._checkpoint.sample_shape)

    @property
    def num_classes(self) -> int:
        return self._checkpoint.num_classes

    @property
    def method(self) -> str:
        return self.config.train.method

    @property
    def parameterization(self) -> str:
        return self._checkpoint.parameterization

    @property
    def checkpoint(self) -> Path:
        return self._checkpoint.path

    @property
    def step(self) -> int:
        return self._checkpoint.step

    @property
    def grid_points(self) -> int:
        """N of the training grid, on which openai's `ts` and diffusers' timesteps index σ's."""
        return self._checkpoint.grid_points()

    @property
    def guidance(self) -> GuidanceRange | None:
        default = self.config.sampling.guidance
        if self.parameterization == "denoiser" and self.num_classes > 0 and has_null_class(self.config):
            return GuidanceRange(default, 0.0, math.inf)
        section = guidance_section(self.config)
        if self.parameterization != "denoiser" and has_guidance_input(self.config) and section is not None:
            return GuidanceRange(default, section.guidance_min, section.guidance_max)
        return None

    def to(self, device: str | torch.device) -> "Model":
        """Move the network to `device`; returns the model itself."""
        self.device = available_device(str(device), "device")
        self.network.to(self.device)
        return self

    # ------------------------------------------------------------------ sampling

    def sample(
        self,
        n: int,
        *,
        steps: int | None = None,
        sigmas: Sequence[float] | None = None,
        labels: Labels = None,
        guidance: float | None = None,
        seed: int = 0,
        batch_size: int = 1024,
        device: str | torch.device | None = None,
        progress: bool = False,
        solver: str | None = None,
        teacher_steps: int | None = None,
    ) -> Samples:
        """n samples: a consistency or TrigFlow model at `steps` (default 1; 2 and 3 use the σ's stored by a search)
        or at explicit decreasing `sigmas`; a teacher by `solver` over `teacher_steps` Karras levels (defaults: its
        config). `labels`: None (random for a class-conditional model), a class, a list (in equal blocks) or "all";
        `guidance`: w, for the models in `.guidance`. Batch b draws from `seeding.batch_generator(seed, b)`, so the
        same arguments give the same samples bit for bit (and the same as `cm sample`), and nearby seeds share no
        batch; `device` moves the model there first."""
        _at_least_one(n=n, batch_size=batch_size, steps=steps, teacher_steps=teacher_steps)
        self._check_time_points(steps, sigmas, solver, teacher_steps)
        if device is not None:
            self.to(device)
        generated = sample_model(
            self.network, self.config, self.sample_shape, self.num_classes, n, steps=steps, sigmas=sigmas,
            teacher_levels=teacher_steps, solver=solver, labels=labels, guidance=guidance, seed=seed,
            batch_size=batch_size, device=self.device, progress=progress,
        )  # fmt: skip
        return Samples(generated.x, generated.labels, generated.nfe, generated.sigmas or [], generated.guidance)

    def _check_time_points(
        self, steps: int | None, sigmas: Sequence[float] | None, solver: str | None, teacher_steps: int | None
    ) -> None:
        if self.parameterization == "denoiser":
            if steps is not None or sigmas is not None:
                raise ConfigError("steps and sigmas: a teacher samples along Karras levels; give teacher_steps")
            if solver is not None and solver not in SOLVERS:
                raise ConfigError(f"solver {solver!r} is unknown; choose one of {', '.join(SOLVERS)}")
            return
        if solver is not None or teacher_steps is not None:
            raise ConfigError(f"solver and teacher_steps apply to teachers; this is a {self.method} model")
        if steps is not None and sigmas is not None:
            raise ConfigError("give steps or sigmas, not both")
        if sigmas is not None:
            levels = [float(s) for s in sigmas]
            if not levels or any(not math.isfinite(s) for s in levels) or min(levels) <= 0:
                raise ConfigError(f"sigmas must be positive and strictly decreasing, got {levels}")
            if any(b >= a for a, b in itertools.pairwise(levels)):
                raise ConfigError(f"sigmas must be positive and strictly decreasing, got {levels}")
            sigma_min = self.config.diffusion.sigma_min
            if self.parameterization == "consistency" and levels[-1] < sigma_min:
                raise ConfigError(f"sigmas must be at least σ_min = {sigma_min}, got {levels[-1]}")

    # ------------------------------------------------------------------ editing

    def edit_sigmas(
        self, task: str, steps: int | None = None, sigmas: Sequence[float] | None = None, noises: bool = False
    ) -> list[float]:
        """The time points of an edit: `sigmas`, or the first `steps` of a Karras grid of steps + 1; by default 40
        such steps (inpaint, colorize, super-resolve), the paper's (5.38, 2.24) (stroke, and interpolation between
        images) or σ_max (interpolation between `noises`). ConfigError unless decreasing and ≥ σ_min."""
        _at_least_one(steps=steps)
        d = self.config.diffusion
        if steps is not None and sigmas is not None:
            raise ConfigError("give steps or sigmas, not both")
        if sigmas is None and steps is None and (task == "stroke" or (task == "interpolate" and not noises)):
            sigmas = editing.STROKE_SIGMAS
        if sigmas is None:
            count = steps or (1 if task == "interpolate" else editing.DEFAULT_EDIT_STEPS)
            sigmas = editing.default_edit_sigmas(d.sigma_min, d.sigma_max, d.rho, count)
        return editing.check_sigmas(sigmas, d.sigma_min)

    @torch.no_grad()
    def inpaint(self, images: torch.Tensor, mask: torch.Tensor, **options) -> EditResult:
        """Fill the pixels where `mask` (broadcasting to the images, e.g. (H, W); 1 = generate) is 1 and keep the
        others of `images` (B, C, H, W) in [-1, 1]. Options: steps or sigmas, seed or generator, labels, guidance
        (teachers: teacher_steps, solver)."""
        images = self._images(images, "images")
        problem = editing.inpainting_problem(images, torch.as_tensor(mask, device=self.device))
        return self._solve_problem("inpaint", problem, **options)

    @torch.no_grad()
    def colorize(self, grey: torch.Tensor, **options) -> EditResult:
        """RGB images whose luminance is `grey` (B, 1, H, W) in [-1, 1]; options as for `inpaint`."""
        editing.check_task_fits_model("colorize", self._image_shape())
        _, height, width = self.sample_shape
        grey = self._images(grey, "grey", (1, height, width))
        return self._solve_problem("colorize", editing.colorization_problem(grey), **options)

    @torch.no_grad()
    def super_resolve(self, low_res: torch.Tensor, factor: int, **options) -> EditResult:
        """Images `factor` times larger whose factor×factor patch means are `low_res` (B, C, H/factor, W/factor);
        options as for `inpaint`."""
        channels, height, width = self._image_shape()
        editing.check_task_fits_model("super-resolve", self.sample_shape, factor)
        low_res = self._images(low_res, "low_res", (channels, height // factor, width // factor))
        return self._solve_problem("super-resolve", editing.super_resolution_problem(low_res, factor), **options)

    @torch.no_grad()
    def edit_strokes(
        self,
        strokes: torch.Tensor,
        *,
        steps: int | None = None,
        sigmas: Sequence[float] | None = None,
        seed: int = 0,
        generator: torch.Generator | None = None,
        labels: Labels = None,
        guidance: float | None = None,
        teacher_steps: int | None = None,
        solver: str | None = None,
    ) -> EditResult:
        """An image from coloured strokes (B, C, H, W) by SDEdit: noise of level t_1 added, then Algorithm 1 at the
        later t's (default the paper's 5.38, 2.24); a teacher solves its PF-ODE from t_1 to 0."""
        strokes = self._images(strokes, "strokes")
        levels = self.edit_sigmas("stroke", steps, sigmas)
        fn, generator, calls = self._prepare(len(strokes), labels, guidance, seed, generator, teacher_steps, solver)
        if self.parameterization != "denoiser":
            return editing.stroke_guided(fn, strokes, sigmas=levels, generator=generator, **self._common())
        start = strokes + levels[0] * editing.algorithm.randn_like(strokes, generator)
        return self._teacher_ode(fn, start, levels[0], teacher_steps, solver, calls)

    @torch.no_grad()
    def denoise(
        self,
        noisy: torch.Tensor,
        sigma: float,
        *,
        labels: Labels = None,
        guidance: float | None = None,
        teacher_steps: int | None = None,
        solver: str | None = None,
    ) -> EditResult:
        """Images with Gaussian noise of level `sigma` mapped to the data: f(x, σ), one evaluation (a teacher solves
        its PF-ODE from σ to 0)."""
        noisy = self._images(noisy, "noisy")
        fn, _, calls = self._prepare(len(noisy), labels, guidance, 0, None, teacher_steps, solver)
        if self.parameterization != "denoiser":
            return editing.denoise(fn, noisy, sigma, **self._common())
        editing.check_sigmas([sigma], self.config.diffusion.sigma_min)
        return self._teacher_ode(fn, noisy, float(sigma), teacher_steps, solver, calls)

    @torch.no_grad()
    def interpolate(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        alphas: Sequence[float],
        *,
        noises: bool = False,
        steps: int | None = None,
        sigmas: Sequence[float] | None = None,
        seed: int = 0,
        generator: torch.Generator | None = None,
        labels: Labels = None,
        guidance: float | None = None,
    ) -> EditResult:
        """Paths between two images (SDEdit of their blends, default t's 5.38, 2.24) or, with `noises`, between two
        standard normal noises (slerp, default σ_max); x is (B, len(alphas), C, H, W)."""
        if self.parameterization == "denoiser":
            raise ConfigError("there is no teacher baseline for interpolate")
        if not alphas:
            raise ConfigError("alphas must list at least one weight")
        a, b = self._images(a, "a"), self._images(b, "b")
        levels = self.edit_sigmas("interpolate", steps, sigmas, noises)
        fn, generator, _ = self._prepare(len(a), labels, guidance, seed, generator, None, None)
        task = editing.interpolate_noises if noises else editing.interpolate_images
        return task(fn, a, b, alphas, sigmas=levels, generator=generator, **self._common())

    def _solve_problem(
        self,
        task: str,
        problem: editing.EditProblem,
        *,
        steps: int | None = None,
        sigmas: Sequence[float] | None = None,
        seed: int = 0,
        generator: torch.Generator | None = None,
        labels: Labels = None,
        guidance: float | None = None,
        teacher_steps: int | None = None,
        solver: str | None = None,
    ) -> EditResult:
        """Algorithm 4 on `problem` (a consistency or TrigFlow model), or the teacher's PF-ODE with replacement
        guidance over its Karras levels."""
        count = len(problem.reference)
        if self.parameterization == "denoiser" and (steps is not None or sigmas is not None):
            raise ConfigError(f"steps and sigmas: a teacher {task}s along Karras levels; give teacher_steps")
        levels = None if self.parameterization == "denoiser" else self.edit_sigmas(task, steps, sigmas)
        fn, generator, calls = self._prepare(count, labels, guidance, seed, generator, teacher_steps, solver)
        reference, transform, mask = problem.reference, problem.transform, problem.mask
        if levels is not None:
            return editing.edit(fn, reference, transform, mask, levels, generator=generator, **self._common())
        d = self.config.diffusion
        grid = teacher_sigmas(teacher_steps or self.config.sampling.teacher_steps, d.sigma_min, d.sigma_max, d.rho)
        out = editing.edit_with_teacher(fn, reference, transform, mask, grid, self._teacher_solver(solver), generator,
                                        self.config.sampling.clip_denoised)  # fmt: skip
        return EditResult(out.x, out.nfe * calls)

    def _teacher_ode(
        self, denoiser: EditFunction, start: torch.Tensor, top: float, teacher_steps: int | None, solver: str | None,
        calls: int,
    ) -> EditResult:  # fmt: skip
        """The PF-ODE from `start` at σ = `top` to 0 over max(K, 2) Karras levels (stroke, denoise baselines)."""
        d, levels = self.config.diffusion, teacher_steps or self.config.sampling.teacher_steps
        grid = torch.cat([karras_sigmas(max(levels, 2), d.sigma_min, top, d.rho), torch.zeros(1, dtype=torch.float64)])
        out = solve_ode(denoiser, start, grid, self._teacher_solver(solver))
        return EditResult(out.x.clamp(-1, 1) if self.config.sampling.clip_denoised else out.x, out.nfe * calls)

    def _teacher_solver(self, solver: str | None) -> str:
        if solver is not None and solver not in ONE_STEP_SOLVERS:
            raise ConfigError(f"solver {solver!r}: the teacher baseline takes {' or '.join(ONE_STEP_SOLVERS)}")
        chosen = solver or self.config.sampling.teacher_solver
        return chosen if chosen in ONE_STEP_SOLVERS else "heun"

    def _prepare(
        self,
        count: int,
        labels: Labels,
        guidance: float | None,
        seed: int,
        generator: torch.Generator | None,
        teacher_steps: int | None,
        solver: str | None,
    ) -> tuple[EditFunction, torch.Generator, int]:
        """The network as the function editing calls (f(x, σ), or a teacher's D(x, σ), guided: D_w) for `count`
        images of the chosen class at the model's w, the generator of the edit's noise, and network calls per call."""
        _at_least_one(teacher_steps=teacher_steps)
        if self.parameterization != "denoiser" and (teacher_steps is not None or solver is not None):
            raise ConfigError(f"solver and teacher_steps apply to teachers; this is a {self.method} model")
        if self.num_classes > 0 and labels is None:
            raise ConfigError(
                f"labels: the model is class-conditional; give a class between 0 and {self.num_classes - 1}"
            )
        chosen = None if labels is None else requested_labels(labels, count, self.num_classes).to(self.device)
        w = sampling_guidance(self.config, self.parameterization, self.num_classes, guidance)
        if generator is None:
            generator = batch_generator(seed, 0, self.device)
        net = self.network
        if self.parameterization == "denoiser":
            if w is not None and chosen is not None:  # w: a teacher with a null class, which needs labels
                return guided_denoiser(net, chosen, self.num_classes, w), generator, network_calls(w)
            return (lambda x, sigma: net(x, sigma, chosen)), generator, 1
        w_input = None if w is None else torch.full((count,), w, device=self.device)
        if isinstance(net, TrigFlowModel):
            return (lambda x, sigma: net.edm_consistency(x, sigma, chosen, w_input)), generator, 1
        return (lambda x, sigma: net(x, sigma, chosen, guidance=w_input)), generator, 1

    def _common(self) -> dict:
        return {"sigma_min": self.config.diffusion.sigma_min, "clip_denoised": self.config.sampling.clip_denoised}

    def _image_shape(self) -> tuple[int, int, int]:
        if len(self.sample_shape) != 3:
            raise ConfigError(
                f"editing needs an image model; {self.checkpoint} makes samples of shape {self.sample_shape}"
            )
        return self.sample_shape

    def _images(self, images: torch.Tensor, name: str, shape: Sequence[int] | None = None) -> torch.Tensor:
        """`images` checked to be a batch (B, *shape) (default: the model's sample shape), as floats on the device."""
        expected = tuple(shape or self._image_shape())
        if not torch.is_tensor(images):
            raise ConfigError(f"{name} must be a tensor of shape (B, {', '.join(map(str, expected))})")
        editing.check_images(images, expected, name)
        return images.to(self.device, torch.float32)
