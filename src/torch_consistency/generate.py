"""Draw samples from a trained model in batches: a consistency model at given σ's (a TrigFlow model at given t's),
or a teacher by its ODE."""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm

from .parameterization import Preconditioned
from .samplers import sample_multistep, sample_trigflow
from .sigmas import karras_sigmas
from .solvers import solve_ode
from .trigflow import TrigFlowModel


@dataclass
class Generated:
    """Samples, their class labels (or None) and the network evaluations per sample."""

    x: torch.Tensor
    labels: torch.Tensor | None
    nfe: int


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
    seed: int = 0,
    batch_size: int = 1024,
    clip_denoised: bool = False,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> Generated:
    """Samples from `model`: Algorithm 1 at `sigmas` for a consistency model, `solver` along `sigmas` for a denoiser,
    sCM sampling for a TrigFlow model, whose `sigmas` are TrigFlow times t (`trigflow.trigflow_time` converts).

    Batch b draws its noise from a generator seeded with seed + b, so results do not depend on the device count.
    """
    memory_format = torch.channels_last if len(sample_shape) == 3 else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).eval()
    outputs, all_labels, nfe = [], [], 0
    starts = range(0, num_samples, batch_size)
    for b, start in enumerate(tqdm(starts, disable=not progress, desc="sampling")):
        count = min(batch_size, num_samples - start)
        generator = torch.Generator(device=device).manual_seed(seed + b)
        noise = torch.randn((count, *sample_shape), generator=generator, device=device)
        noise = noise.contiguous(memory_format=memory_format)
        labels = (
            torch.randint(0, num_classes, (count,), generator=generator, device=device) if num_classes > 0 else None
        )

        def network(x, sigma, labels=labels):
            return model(x, sigma, labels)

        if model.parameterization == "consistency":
            result = sample_multistep(network, sigmas, noise, sigma_min, generator, clip_denoised)
        elif model.parameterization == "trigflow":
            result = sample_trigflow(
                lambda x, t, labels=labels: model.consistency(x, t, labels), sigmas, noise, model.sigma_data,
                generator, clip_denoised,
            )  # fmt: skip
        else:
            levels = torch.as_tensor(sigmas, dtype=torch.float64)
            result = solve_ode(network, noise * float(levels[0]), levels, solver or "heun", generator=generator)
            if clip_denoised:
                result.x = result.x.clamp(-1, 1)
        outputs.append(result.x.cpu())
        if labels is not None:
            all_labels.append(labels.cpu())
        nfe = result.nfe
    labels_out = torch.cat(all_labels) if all_labels else None
    return Generated(torch.cat(outputs), labels_out, nfe)
