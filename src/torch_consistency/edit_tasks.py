"""The editing tasks of a loaded `Model` by name, as `cm edit` and `cm serve` run them: one task on a batch
(`edit_task`), or many images in batches beside a teacher's PF-ODE baseline with the panels of a picture comparing
them (`edit_in_batches`). Tensors in and out; reading and writing files is the caller's (reference.md §7)."""

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from .editing import (
    EditResult,
    check_task_fits_model,
    colorization_problem,
    inpainting_problem,
    super_resolution_problem,
)
from .errors import ConfigError
from .model import Labels, Model
from .seeding import batch_generator

EDIT_TASKS = ("inpaint", "colorize", "super-resolve", "stroke", "denoise", "interpolate")
DEFAULT_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class EditInputs:
    """What a task edits: `images` (N, C, H, W) in [-1, 1] (colorize: grey (N, 1, H, W); super-resolve: the small
    ones; interpolation between noises: the first standard normal noises) and what the task takes besides."""

    images: torch.Tensor
    mask: torch.Tensor | None = None  # inpaint: 1 = generate; one mask (1, 1, H, W) for all, or one per image
    factor: int | None = None  # super-resolve: the upscaling factor
    sigma: float | None = None  # denoise: the noise level of the images
    add_noise: bool = False  # denoise: first add noise of level sigma (drawn from the batch's generator)
    second: torch.Tensor | None = None  # interpolate: the other end of each path (images, or noises)
    alphas: Sequence[float] = DEFAULT_ALPHAS  # interpolate: the weights of the second end
    noises: bool = False  # interpolate: between standard normal noises instead of images

    def batch(self, start: int, stop: int, device: torch.device) -> "EditInputs":
        """Images start … stop − 1 (with their masks, or the one mask for all) on `device`."""
        mask = self.mask if self.mask is None or len(self.mask) == 1 else self.mask[start:stop]
        second = None if self.second is None else self.second[start:stop].to(device)
        return replace(self, images=self.images[start:stop].to(device), second=second,
                       mask=None if mask is None else mask.to(device))  # fmt: skip


def check_edit(model: Model, task: str, teacher: Model | None = None, factor: int | None = None) -> None:
    """ConfigError unless `model` is a consistency (or TrigFlow) model of images that `task` fits, and `teacher`, if
    given, a teacher (denoiser) for images of the same shape with a baseline for the task."""
    if task not in EDIT_TASKS:
        raise ConfigError(f"task {task!r} is unknown; choose one of {', '.join(EDIT_TASKS)}")
    if model.parameterization == "denoiser":
        raise ConfigError(
            f"{model.checkpoint} is a {model.method} model (denoiser); editing needs a consistency model f(x, σ) "
            "(cd, ct, ict, ect, scm), and takes a teacher as the baseline"
        )
    shape = model.sample_shape
    if len(shape) != 3:
        raise ConfigError(f"editing needs an image model; {model.checkpoint} makes samples of shape {shape}")
    check_task_fits_model(task, shape, factor)
    if teacher is not None:
        if teacher.parameterization != "denoiser" or teacher.sample_shape != shape:
            raise ConfigError(f"teacher {teacher.checkpoint} is not a teacher (denoiser) for images of shape {shape}")
        if task == "interpolate":
            raise ConfigError("there is no teacher baseline for interpolate")


def edit_task(model: Model, task: str, inputs: EditInputs, **options) -> EditResult:
    """`task` on `inputs` with `model`'s method of that name; `options` as the method takes them (steps or sigmas,
    seed or generator, labels, guidance; a teacher's teacher_steps and solver; denoise draws no noise, so it takes
    neither time points nor a seed). Denoise edits the images at inputs.sigma as they are (`edit_in_batches` adds
    the noise)."""
    x = inputs.images
    if task == "inpaint":
        if inputs.mask is None:
            raise ConfigError("inpaint needs a mask")
        return model.inpaint(x, inputs.mask, **options)
    if task == "colorize":
        return model.colorize(x, **options)
    if task == "super-resolve":
        if inputs.factor is None:
            raise ConfigError("super-resolve needs a factor")
        return model.super_resolve(x, inputs.factor, **options)
    if task == "stroke":
        return model.edit_strokes(x, **options)
    if task == "denoise":
        if inputs.sigma is None:
            raise ConfigError("denoise needs the noise level sigma")
        return model.denoise(x, inputs.sigma, **options)
    if task == "interpolate":
        if inputs.second is None:
            raise ConfigError("interpolate needs the second end of each path")
        return model.interpolate(x, inputs.second, inputs.alphas, noises=inputs.noises, **options)
    raise ConfigError(f"task {task!r} is unknown; choose one of {', '.join(EDIT_TASKS)}")


@dataclass
class EditComparison:
    """The edits of `edit_in_batches`: `results` (N, C, H, W), for interpolation (N, K, C, H, W); the teacher's
    (or None); `panels`, the rows of a comparison picture with `columns` images each (input | what Algorithm 4
    keeps | result [| teacher]; interpolation: the path between its ends); NFEs and the time points used."""

    results: torch.Tensor
    teacher: torch.Tensor | None
    panels: torch.Tensor
    columns: int
    nfe: int
    teacher_nfe: int | None
    sigmas: list[float]


@torch.no_grad()
def edit_in_batches(
    model: Model,
    task: str,
    inputs: EditInputs,
    *,
    teacher: Model | None = None,
    steps: int | None = None,
    sigmas: Sequence[float] | None = None,
    seed: int = 0,
    batch_size: int = 64,
    labels: Labels = None,
    guidance: float | None = None,
    teacher_steps: int | None = None,
    solver: str | None = None,
) -> EditComparison:
    """`task` on every input, `batch_size` at a time with batch b's noise from `batch_generator(seed, b)`, and the
    teacher's baseline (its Karras levels, `teacher_steps` and `solver`) from the same generator. Time points:
    `sigmas`, or `steps` of a Karras grid, or the task's default (`Model.edit_sigmas`); denoise takes inputs.sigma.
    `guidance` goes to a teacher only if it takes one. Everything is checked before the first batch."""
    check_edit(model, task, teacher, inputs.factor)
    if task == "denoise":
        if steps is not None or sigmas is not None:
            raise ConfigError("denoise takes the noise level sigma, not steps or sigmas")
        if inputs.sigma is None:
            raise ConfigError("denoise needs the noise level sigma")
        levels = [float(inputs.sigma)]
    else:
        levels = model.edit_sigmas(task, steps, sigmas, noises=inputs.noises)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    results, baseline, rows, columns, nfe, teacher_nfe = [], [], [], 0, 0, None
    for b, start in enumerate(range(0, len(inputs.images), batch_size)):
        batch = inputs.batch(start, start + batch_size, model.device)
        given = batch.images
        generator = batch_generator(seed, b, model.device)
        if task == "denoise" and batch.add_noise:
            noise = torch.randn(given.shape, generator=generator, device=given.device)
            batch = replace(batch, images=given + levels[0] * noise, add_noise=False)
        noised = {} if task == "denoise" else {"sigmas": levels, "generator": generator}  # denoise draws no noise
        out = edit_task(model, task, batch, labels=labels, guidance=guidance, **noised)
        results.append(out.x.cpu())
        nfe = out.nfe
        panels = comparison_panels(task, batch, given, out.x)
        if teacher is not None:
            generator = batch_generator(seed, b, model.device)
            noised = {} if task == "denoise" else {"generator": generator}
            if task == "stroke":  # a teacher's stroke starts at t_1; its other edits run over its Karras levels
                noised["sigmas"] = levels
            w = guidance if teacher.guidance is not None else None
            out = edit_task(teacher, task, batch, labels=labels, guidance=w, teacher_steps=teacher_steps,
                            solver=solver, **noised)  # fmt: skip
            panels.append(out.x)
            baseline.append(out.x.cpu())
            teacher_nfe = out.nfe
        rows.append(torch.stack(panels, dim=1).flatten(0, 1).cpu())
        columns = len(panels)
    teacher_results = torch.cat(baseline) if baseline else None
    return EditComparison(torch.cat(results), teacher_results, torch.cat(rows), columns, nfe, teacher_nfe, levels)


def comparison_panels(task: str, batch: EditInputs, given: torch.Tensor, edited: torch.Tensor) -> list[torch.Tensor]:
    """The columns of the comparison picture for one batch, each (B, C, H, W): what was given (for denoise the noisy
    images, then `given`, the clean ones), the reference Algorithm 4 keeps, and the edit; interpolation: its path."""
    x = batch.images
    if task == "inpaint":
        assert batch.mask is not None  # edit_task needs one
        return [x, inpainting_problem(x, batch.mask).known(), edited]
    if task == "colorize":
        return [x.expand_as(edited), colorization_problem(x).known(), edited]
    if task == "super-resolve":
        assert batch.factor is not None  # edit_task needs one
        problem = super_resolution_problem(x, batch.factor)
        return [problem.reference, problem.known(), edited]
    if task == "stroke":
        return [x, x, edited]
    if task == "denoise":
        return [x, given, edited]
    if batch.noises:
        return list(edited.unbind(1))
    assert batch.second is not None  # edit_task needs one
    return [x, *edited.unbind(1), batch.second]
