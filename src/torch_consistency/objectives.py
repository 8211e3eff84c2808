"""Training objectives with their randomness passed in, so each is a pure function (reference.md §3–5, §9).

`model`, `target` and `teacher` are callables `(x, sigma) -> tensor` with `sigma` of shape (B,): a
`Preconditioned` network with its class labels bound, or an exact denoiser. Losses are per sample.
"""

from collections.abc import Callable
from typing import TypeVar

import torch

from .distances import Distance, pseudo_huber_distance
from .parameterization import append_dims

Network = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
TeacherStep = Callable[[Network, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Online = TypeVar("Online")
Target = TypeVar("Target")
WEIGHTINGS = ("uniform", "snr", "snr+1", "karras", "truncated-snr", "inverse-delta")


def edm_loss_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """λ(σ) = (σ² + σ_d²)/(σ·σ_d)², EDM's weighting (reference.md §3)."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def consistency_weight(name: str, sigma: torch.Tensor, sigma_next: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """λ for the pair (σ_i, σ_{i+1}): uniform (the paper's), openai's SNR variants, or iCT's 1/(σ_i−σ_{i+1})."""
    if name == "uniform":
        return torch.ones_like(sigma)
    if name == "snr":
        return sigma**-2
    if name == "snr+1":
        return sigma**-2 + 1
    if name == "karras":
        return edm_loss_weight(sigma, sigma_data)
    if name == "truncated-snr":
        return torch.clamp(sigma**-2, min=1.0)
    if name == "inverse-delta":
        return 1 / (sigma - sigma_next)
    raise ValueError(f"unknown weighting {name!r}; choose one of {', '.join(WEIGHTINGS)}")


def edm_loss(
    denoiser: Network, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor, sigma_data: float
) -> torch.Tensor:
    """λ(σ)·mean((D(x0 + σz, σ) − x0)²) per sample: the teacher's denoising loss (§3)."""
    denoised = denoiser(x0 + append_dims(sigma, x0.ndim) * noise, sigma)
    return edm_loss_weight(sigma, sigma_data) * (denoised - x0).square().flatten(1).mean(1)


def _device_rng_state(device: torch.device) -> torch.Tensor:
    module = torch if device.type == "cpu" else torch.get_device_module(device.type)
    return module.get_rng_state()


def _set_device_rng_state(device: torch.device, state: torch.Tensor) -> None:
    module = torch if device.type == "cpu" else torch.get_device_module(device.type)
    module.set_rng_state(state)


def paired_passes(
    online: Callable[[], Online], target: Callable[[], Target], device: torch.device
) -> tuple[Online, Target]:
    """Run the online pass, then the target pass without gradient on the same random stream of `device`.

    Both passes therefore draw the same dropout mask (reference.md §4); the stream continues after the
    online pass as if the target pass had not happened.
    """
    start = _device_rng_state(device)
    online_out = online()
    after_online = _device_rng_state(device)
    _set_device_rng_state(device, start)
    with torch.no_grad():
        target_out = target()
    _set_device_rng_state(device, after_online)
    return online_out, target_out


def consistency_distillation_loss(
    model: Network,
    target: Network,
    teacher: Network,
    teacher_step: TeacherStep,
    x0: torch.Tensor,
    noise: torch.Tensor,
    sigma: torch.Tensor,
    sigma_next: torch.Tensor,
    distance: Distance,
    weight: torch.Tensor,
) -> torch.Tensor:
    """λ·d(f_θ(x_σ, σ), f_θ⁻(x̂_σ', σ')) with x̂ one teacher ODE step from x_σ = x0 + σz (Algorithm 2, §4)."""
    online, target_out = consistency_distillation_pair(
        model, target, teacher, teacher_step, x0, noise, sigma, sigma_next
    )
    return weight * distance(online, target_out)


def consistency_distillation_pair(
    model: Network,
    target: Network,
    teacher: Network,
    teacher_step: TeacherStep,
    x0: torch.Tensor,
    noise: torch.Tensor,
    sigma: torch.Tensor,
    sigma_next: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(f_θ(x_σ, σ), f_θ⁻(x̂_σ', σ')): the two outputs CD compares, x̂ one teacher step from x_σ = x0 + σz (§4)."""
    x_sigma = x0 + append_dims(sigma, x0.ndim) * noise
    with torch.no_grad():
        x_next = teacher_step(teacher, x_sigma, sigma, sigma_next)
    return paired_passes(lambda: model(x_sigma, sigma), lambda: target(x_next, sigma_next), x0.device)


def consistency_training_loss(
    model: Network,
    target: Network,
    x0: torch.Tensor,
    noise: torch.Tensor,
    sigma: torch.Tensor,
    sigma_next: torch.Tensor,
    distance: Distance,
    weight: torch.Tensor,
) -> torch.Tensor:
    """λ·d(f_θ(x0 + σz, σ), f_θ⁻(x0 + σ'z, σ')) with one z for both points, no teacher (Algorithm 3, §5)."""
    online, target_out = paired_passes(
        lambda: model(x0 + append_dims(sigma, x0.ndim) * noise, sigma),
        lambda: target(x0 + append_dims(sigma_next, x0.ndim) * noise, sigma_next),
        x0.device,
    )
    return weight * distance(online, target_out)


def ect_loss(
    model: Network,
    target: Network,
    x0: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    r: torch.Tensor,
    sigma_min: float,
    huber_c: float,
) -> torch.Tensor:
    """(√(‖f_θ(x0+tz, t) − f_θ⁻(x0+rz, r)‖² + c²) − c)/(t − r), one z for both points (ECT, §9).

    Rows with r < σ_min count as r = 0 and take x0 itself as the target (f(x, σ_min) = x, so this differs from
    evaluating f at such an r by at most σ_min·z); with r = 0 everywhere the loss is a denoising loss.
    """
    to_network = r >= sigma_min
    r_evaluated = torch.where(to_network, r, torch.full_like(r, sigma_min))  # discarded rows stay finite
    online, target_out = paired_passes(
        lambda: model(x0 + append_dims(t, x0.ndim) * noise, t),
        lambda: target(x0 + append_dims(r_evaluated, x0.ndim) * noise, r_evaluated),
        x0.device,
    )
    target_out = torch.where(append_dims(to_network, x0.ndim), target_out.to(x0.dtype), x0)
    gap = t - torch.where(to_network, r, torch.zeros_like(r))
    return pseudo_huber_distance(online.to(x0.dtype), target_out, huber_c) / gap


def discriminator_hinge_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """E[max(0, 1 − D(x))] + E[max(0, 1 + D(x̂))]: the discriminator's hinge loss (Lim & Ye 2017; as ADD, LADD)."""
    return torch.relu(1 - real_logits).mean() + torch.relu(1 + fake_logits).mean()


def generator_hinge_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """−E[D(x̂)]: the generator's side of the hinge loss."""
    return -fake_logits.mean()


def adaptive_adversarial_weight(
    reconstruction: torch.Tensor, adversarial: torch.Tensor, last_layer: torch.Tensor, max_weight: float = 1e4
) -> torch.Tensor:
    """‖∇_L ℒ_rec‖ / (‖∇_L ℒ_adv‖ + 10⁻⁸), L the generator's last layer, at most `max_weight`, without gradient: the
    weight that gives both losses equal pull on the output (VQGAN, Esser et al. 2021, eq. 7; CTM's GAN term)."""
    rec_grad = torch.autograd.grad(reconstruction, last_layer, retain_graph=True)[0]
    adv_grad = torch.autograd.grad(adversarial, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (adv_grad.norm() + 1e-8)).clamp(max=max_weight).detach()
