"""Draw samples from a trained model in batches: a consistency model at given σ's (a TrigFlow model at given t's),
or a teacher by its ODE; for chosen classes and, for models that take it, a guidance scale w (guidance.py).
`sample_model` chooses the time points from a model's config (what `Model.sample`, `cm sample`, evaluation and the
trainer's preview pictures use); `generate` runs them."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm

from .config import Config, guidance_section, has_guidance_input, has_null_class
from .errors import ConfigError
from .guidance import guided_denoiser, network_calls
from .parameterization import Preconditioned
from .samplers import SampleResult, sample_multistep, sample_trigflow
from .seeding import batch_generator
from .sigmas import default_sampling_sigmas, karras_sigmas
from .solvers import ODESolution, solve_ode
from .trigflow import TrigFlowModel, trigflow_sampling_times, trigflow_time


@dataclass
class Generated:
    """Samples, their class labels (or None) and the network evaluations per sample."""

    x: torch.Tensor
    labels: torch.Tensor | None
    nfe: int
    guidance: float | None = None  # the w sampled with (a CFG teacher's or a w-input student's), None without
    sigmas: list[float] | None = None  # the time points sampled at: σ's (a teacher's end at 0), TrigFlow times t


def teacher_sigmas(num_levels: int, sigma_min: float, sigma_max: float, rho: float) -> torch.Tensor:
    """EDM's sampling levels: a Karras grid of K points followed by σ = 0 (reference.md §3)."""
    return torch.cat([karras_sigmas(num_levels, sigma_min, sigma_max, rho), torch.zeros(1, dtype=torch.float64)])


@torch.no_grad()
def generate(
    model: Preconditioned | TrigFlowModel,
    num_samples: int,
    sample_shape: Sequence[int],
    sigmas: Sequence[float] | torch.Tensor,
    *,
    sigma_min: float,
    solver: str | None = None,
    num_classes: int = 0,
    labels: torch.Tensor | None = None,
    guidance: float | None = None,
    seed: int = 0,
    batch_size: int = 1024,
    clip_denoised: bool = False,
    device: torch.device | str = "cpu",
    progress: bool = False,
    compile: bool = False,
) -> Generated:
    """Samples from `model`: Algorithm 1 at `sigmas` for a consistency model, `solver` along `sigmas` for a denoiser,
    sCM sampling for a TrigFlow model, whose `sigmas` are TrigFlow times t (`trigflow.trigflow_time` converts).

    A class-conditional model (`num_classes` > 0) samples `labels` (one per sample; `requested_labels` makes them),
    else uniformly random labels drawn after each batch's noise. `guidance` is w: a denoiser follows the guided
    D_w with the null class num_classes (two network calls per step, one at w = 0 or 1; NFE counts calls); a
    consistency or TrigFlow model takes it as its input. Check both first (`requested_labels`, `sampling_guidance`).
    Batch b draws its noise from `seeding.batch_generator(seed, b)`, so results do not depend on the device count.
    `compile` runs the network through `torch.compile` (sampling.compile; benchmarks/compile_speed.py).
    """
    memory_format = torch.channels_last if len(sample_shape) == 3 else torch.contiguous_format
    if not placed(model, device, memory_format):
        model = model.to(device, memory_format=memory_format)  # type: ignore[call-overload]  # stubs omit it
    if any(module.training for module in model.modules()):
        model.eval()
    forward = torch.compile(model) if compile else model
    if isinstance(model, TrigFlowModel):
        trigflow_consistency = torch.compile(model.consistency) if compile else model.consistency
    outputs, all_labels, nfe = [], [], 0
    starts = range(0, num_samples, batch_size)
    for b, start in enumerate(tqdm(starts, disable=not progress, desc="sampling")):
        count = min(batch_size, num_samples - start)
        generator = batch_generator(seed, b, device)
        noise = torch.randn((count, *sample_shape), generator=generator, device=device)
        noise = noise.contiguous(memory_format=memory_format)
        if labels is not None:
            batch_labels = labels[start : start + count].to(device)
        elif num_classes > 0:
            batch_labels = torch.randint(0, num_classes, (count,), generator=generator, device=device)
        else:
            batch_labels = None
        w = None if guidance is None else torch.full((count,), float(guidance), device=device)

        def network(x, sigma, labels=batch_labels, w=w):
            return forward(x, sigma, labels, guidance=w)

        result: SampleResult | ODESolution
        if model.parameterization == "consistency":
            result = sample_multistep(network, sigmas, noise, sigma_min, generator, clip_denoised)
        elif isinstance(model, TrigFlowModel):

            def consistency(x, t, labels=batch_labels, w=w):
                return trigflow_consistency(x, t, labels, w)

            result = sample_trigflow(consistency, sigmas, noise, model.sigma_data, generator, clip_denoised)
        else:
            levels = torch.as_tensor(sigmas, dtype=torch.float64)
            denoiser: Callable[..., torch.Tensor] = network
            if guidance is not None:
                assert batch_labels is not None  # guidance is checked first: only a class-conditional model takes it
                denoiser = guided_denoiser(forward, batch_labels, num_classes, guidance)
            result = solve_ode(denoiser, noise * float(levels[0]), levels, solver or "heun", generator=generator)
            result.nfe *= network_calls(guidance)
            if clip_denoised:
                result.x = result.x.clamp(-1, 1)
        outputs.append(result.x.cpu())
        if batch_labels is not None:
            all_labels.append(batch_labels.cpu())
        nfe = result.nfe
    labels_out = torch.cat(all_labels) if all_labels else None
    return Generated(torch.cat(outputs), labels_out, nfe, guidance, [float(s) for s in sigmas])


def placed(model: torch.nn.Module, device: torch.device | str, memory_format: torch.memory_format) -> bool:
    """Whether `model` lies on `device` (judged by its first parameter: Module.to moves them all together) with
    every 4-D weight in `memory_format`. Cheaper than a Module.to that changes nothing (1.3 ms for MNIST's U-Net)."""
    device = torch.device(device)
    first = next(model.parameters(), None)
    if first is None:
        return True
    if first.device.type != device.type or (device.index is not None and first.device.index != device.index):
        return False
    return all(p.is_contiguous(memory_format=memory_format) for p in model.parameters() if p.dim() == 4)


def requested_labels(choice: int | str | Sequence[int], num_samples: int, num_classes: int) -> torch.Tensor:
    """One label per sample for a class-conditional model: a class, or "all" (every class) or a list of classes in
    equal contiguous blocks (label index ⌊i·k/n⌋ of sample i, so k classes get n/k samples each, ±1).

    Raises ConfigError for an unconditional model, an empty list or a label outside 0 … num_classes − 1."""
    if num_classes == 0:
        raise ConfigError("labels choose classes of a class-conditional model; this model is unconditional")
    if choice == "all":
        choice = range(num_classes)
    elif isinstance(choice, str):
        raise ConfigError(f"labels must be class numbers or 'all', got {choice!r}")
    classes = [int(choice)] if isinstance(choice, int) else [int(c) for c in choice]
    if not classes:
        raise ConfigError("labels: give at least one class")
    outside = [c for c in classes if not 0 <= c < num_classes]
    if outside:
        raise ConfigError(f"label {outside[0]} is out of range: this model has classes 0 to {num_classes - 1}")
    return torch.tensor(classes)[torch.arange(num_samples) * len(classes) // num_samples]


def sampling_guidance(config: Config, parameterization: str, num_classes: int, guidance: float | None) -> float | None:
    """The w to sample with, or None: a teacher with a null class takes `guidance` (CFG; default sampling.guidance);
    a w-input student takes it within its trained range (default sampling.guidance); a fixed-w student and every
    other model take none. Raises ConfigError for a `guidance` the model cannot take."""
    if parameterization == "denoiser" and num_classes > 0 and has_null_class(config):
        w = config.sampling.guidance if guidance is None else float(guidance)
        if w < 0:
            raise ConfigError(f"guidance (w) must be ≥ 0, got {w}")
        return w
    if parameterization != "denoiser" and has_guidance_input(config):
        section = guidance_section(config)
        assert section is not None  # has_guidance_input: a cd or scd section
        w = config.sampling.guidance if guidance is None else float(guidance)
        if not section.guidance_min <= w <= section.guidance_max:
            raise ConfigError(
                f"guidance w = {w} lies outside the range this student was trained on "
                f"[{section.guidance_min}, {section.guidance_max}]"
            )
        return w
    if guidance is None:
        return None
    section = guidance_section(config)
    if parameterization != "denoiser" and section is not None and section.guidance == "fixed":
        raise ConfigError(f"this student was distilled at a fixed w = {section.guidance_min}: it takes no guidance")
    if parameterization == "denoiser" and num_classes > 0:
        raise ConfigError("guidance needs a null class: this teacher was trained without teacher.label_dropout")
    raise ConfigError(f"this {config.train.method} model takes no guidance: it has no null class and no w input")


def sample_model(
    model: Preconditioned | TrigFlowModel, config: Config, sample_shape: tuple[int, ...], num_classes: int,
    num_samples: int, *,
    steps: int | None = None, sigmas: Sequence[float] | None = None, teacher_levels: int | None = None,
    solver: str | None = None, labels: int | str | Sequence[int] | None = None, guidance: float | None = None,
    seed: int = 0, batch_size: int = 1024, device: str | torch.device = "cpu", progress: bool = False,
) -> Generated:  # fmt: skip
    """Samples from a model: a consistency model at `steps` (or `sigmas`), a teacher at `teacher_levels`; `labels`
    (a class, a list of classes or "all", in equal blocks; default random) and `guidance` w are checked first
    (generate.requested_labels, generate.sampling_guidance: ConfigError for what the model cannot take)."""
    chosen = None if labels is None else requested_labels(labels, num_samples, num_classes)
    w = sampling_guidance(config, model.parameterization, num_classes, guidance)
    d = config.diffusion
    levels: Sequence[float] | torch.Tensor
    if model.parameterization == "denoiser":
        levels = teacher_sigmas(teacher_levels or config.sampling.teacher_steps, d.sigma_min, d.sigma_max, d.rho)
        solver = solver or config.sampling.teacher_solver
    elif model.parameterization == "trigflow":  # times t: π/2 (and 1.1), or the σ's given, as arctan(σ/σ_d)
        default = default_sampling_sigmas(steps or 1, d.sigma_min, d.sigma_max, d.rho)
        levels = (
            trigflow_sampling_times(steps or 1, default, d.sigma_data)
            if sigmas is None
            else trigflow_time(torch.as_tensor(sigmas, dtype=torch.float64), d.sigma_data).tolist()
        )
    else:
        levels = sigmas if sigmas is not None else sampling_sigmas(config, steps or 1)
    return generate(
        model, num_samples, sample_shape, levels, sigma_min=d.sigma_min, solver=solver, num_classes=num_classes,
        labels=chosen, guidance=w, seed=seed, batch_size=batch_size, clip_denoised=config.sampling.clip_denoised,
        device=device, progress=progress, compile=config.sampling.compile,
    )  # fmt: skip


def sampling_sigmas(config: Config, steps: int) -> list[float]:
    """The σ's for `steps`-step sampling: those stored by a time-point search, else a Karras grid."""
    searched = {2: config.sampling.sigmas_2, 3: config.sampling.sigmas_3}.get(steps)
    if searched:
        return list(searched)
    d = config.diffusion
    return default_sampling_sigmas(steps, d.sigma_min, d.sigma_max, d.rho).tolist()
