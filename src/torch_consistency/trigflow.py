"""TrigFlow, the form of continuous-time consistency models (sCM, reference.md §10).

x_t = cos t·x0 + sin t·z with z ~ N(0, σ_d²I), t ∈ [0, π/2]; an EDM sample x_σ = x0 + σ·ε maps to it by
tan t = σ/σ_d and x_t = cos t·x_σ. The consistency function is f(x_t, t) = cos t·x_t − sin t·σ_d·F_θ(x_t/σ_d, t).

Why an EDM network is a TrigFlow network: with σ = σ_d tan t, EDM's c_in = 1/√(σ²+σ_d²) = cos t/σ_d, so the
EDM network sees exactly x_t/σ_d, and D = c_skip·x_σ + c_out·F_EDM = cos t·x_t + σ_d sin t·F_EDM. The TrigFlow
velocity of a denoiser, F = (cos t·x_t − D)/(σ_d sin t), is therefore −F_EDM. `TrigFlowModel` feeds the network
c_noise(σ_d tan t) of the config's EDM conditioning (openai's 250·ln σ by default, in fp32) and uses
F_θ = −net(...), so a TrigFlow model built on an EDM teacher's weights *is* that teacher's velocity, and sCD
(or sCT) can start from them unchanged. Outside [σ_min, σ_max] the conditioning saturates (t is clamped for
c_noise only), which keeps it finite at t = 0 and t = π/2.
"""

import math
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import nn

from .embedding import FourierEmbedding
from .objectives import paired_passes
from .parameterization import append_dims, call_network, noise_conditioning

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
HALF_PI = math.pi / 2
TWO_STEP_TIME = 1.1  # sCM's intermediate time for 2-step sampling (§6, §10)


def trigflow_time(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """t = arctan(σ/σ_d): the TrigFlow time of the EDM noise level σ (§10)."""
    return torch.atan(sigma / sigma_data)


def trigflow_sigma(t: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """σ = σ_d·tan t: the EDM noise level of TrigFlow time t (§10)."""
    return sigma_data * torch.tan(t)


def trigflow_training_time(normal: torch.Tensor, p_mean: float, p_std: float, sigma_data: float) -> torch.Tensor:
    """t = arctan(e^τ/σ_d) with τ = P_mean + P_std·n, n ~ N(0, 1): sCM's training times (§10)."""
    return torch.atan(torch.exp(p_mean + p_std * normal) / sigma_data)


def trigflow_noisy(x0: torch.Tensor, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = cos t·x0 + sin t·z, z ~ N(0, σ_d²I) (§10)."""
    return append_dims(torch.cos(t), x0.ndim) * x0 + append_dims(torch.sin(t), x0.ndim) * z


def sct_velocity(x0: torch.Tensor, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """dx_t/dt = cos t·z − sin t·x0: sCT's one-sample estimate of the PF-ODE velocity (§10)."""
    return append_dims(torch.cos(t), x0.ndim) * z - append_dims(torch.sin(t), x0.ndim) * x0


def edm_to_trigflow_velocity(denoiser: Denoiser, x_t: torch.Tensor, t: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """F(x_t/σ_d, t) = (cos t·x_t − D(x_t/cos t, σ_d tan t))/(σ_d sin t) for t ∈ (0, π/2): an EDM denoiser's
    TrigFlow velocity, so that σ_d·F is dx_t/dt of its PF-ODE (§10)."""
    cos, sin = append_dims(torch.cos(t), x_t.ndim), append_dims(torch.sin(t), x_t.ndim)
    denoised = denoiser(x_t / cos, trigflow_sigma(t, sigma_data))
    return (cos * x_t - denoised.to(x_t.dtype)) / (sigma_data * sin)


def velocity_tangent(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x_t: torch.Tensor,
    t: torch.Tensor,
    dxdt: torch.Tensor,
    sigma_data: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(F, cos t sin t·dF/dt) along the trajectory, by one forward-mode JVP of F(x/σ_d, t) with the tangents
    (cos t sin t·(dx_t/dt)/σ_d, cos t sin t) (§10). No finite differences."""
    scale = torch.cos(t) * torch.sin(t)
    tangents = (append_dims(scale, x_t.ndim) * dxdt / sigma_data, scale)
    output, derivative = torch.func.jvp(velocity, (x_t / sigma_data, t), tangents)[:2]
    return output, derivative


def scm_tangent(
    velocity: torch.Tensor,
    velocity_derivative: torch.Tensor,
    x_t: torch.Tensor,
    dxdt: torch.Tensor,
    t: torch.Tensor,
    r: float,
    sigma_data: float,
) -> torch.Tensor:
    """g = −cos²t·(σ_d F⁻ − dx_t/dt) − r·cos t sin t·(x_t + σ_d·dF⁻/dt) (§10);
    `velocity_derivative` is cos t sin t·dF⁻/dt as `velocity_tangent` returns it."""
    cos, sin = append_dims(torch.cos(t), x_t.ndim), append_dims(torch.sin(t), x_t.ndim)
    return -(cos**2) * (sigma_data * velocity - dxdt) - r * (cos * sin * x_t + sigma_data * velocity_derivative)


def normalise_tangent(g: torch.Tensor, c: float = 0.1) -> torch.Tensor:
    """g/(‖g‖ + c) with the norm of each sample's whole vector: sCM's tangent normalisation (§10)."""
    return g / (append_dims(torch.linalg.vector_norm(g.flatten(1), dim=1), g.ndim) + c)


def scm_loss(
    velocity: torch.Tensor, velocity_target: torch.Tensor, g: torch.Tensor, log_weight: torch.Tensor
) -> torch.Tensor:
    """e^{−w(t)}/D·‖F_θ − F_θ⁻ − g‖² + w(t) per sample, D the sample's dimension (§10)."""
    squared = (velocity - velocity_target - g).square().flatten(1).mean(1)
    return torch.exp(-log_weight) * squared + log_weight


def scm_training_loss(
    model: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    target: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    r: float,
    sigma_data: float,
    tangent_norm_c: float = 0.1,
    teacher: Denoiser | None = None,
    jvp_fp32: bool = True,
) -> torch.Tensor:
    """sCT (no teacher) or sCD (an EDM `teacher`) per sample: F_θ regressed onto F_θ⁻ + g/(‖g‖ + c), weighted by
    the learned w(t) (§10). `noise` is standard normal (z = σ_d·noise).

    `model(x/σ_d, t, with_log_weight=True)` gives (F_θ, w(t)); `target(x/σ_d, t)` is F_θ⁻. With θ⁻ = stopgrad θ
    and the same dropout mask, F_θ⁻ is the online output with its gradient stopped (bit for bit equal to the
    target pass in fp32, and free of bf16 rounding differences under autocast); the target pass contributes
    cos t sin t·dF_θ⁻/dt through one JVP, in fp32 when `jvp_fp32` (forward-mode AD through autocast's casts is
    unreliable).
    """
    z = sigma_data * noise
    x_t = trigflow_noisy(x0, z, t)
    with torch.no_grad():
        if teacher is None:
            dxdt = sct_velocity(x0, z, t)
        else:
            dxdt = sigma_data * edm_to_trigflow_velocity(teacher, x_t, t, sigma_data)
    precision = torch.autocast(x0.device.type, enabled=False) if jvp_fp32 else nullcontext()

    def tangent_pass() -> torch.Tensor:
        with precision:
            return velocity_tangent(target, x_t, t, dxdt, sigma_data)[1]

    (velocity, log_weight), derivative = paired_passes(
        lambda: model(x_t / sigma_data, t, with_log_weight=True), tangent_pass, x0.device
    )
    velocity = velocity.to(x0.dtype)
    velocity_target = velocity.detach()
    g = scm_tangent(velocity_target, derivative.to(x0.dtype), x_t, dxdt, t, r, sigma_data)
    return scm_loss(velocity, velocity_target, normalise_tangent(g, tangent_norm_c), log_weight.to(x0.dtype))


class TimeWeighting(nn.Module):
    """The learned log-weight w(t) = Linear(Fourier features of ln(σ_d tan t)/4), computed in fp32; starts at 0."""

    def __init__(self, t_range: tuple[float, float], sigma_data: float, dim: int = 128) -> None:
        super().__init__()
        self.t_range, self.sigma_data = t_range, sigma_data
        self.embed = FourierEmbedding(dim, scale=1.0)
        self.linear = nn.Linear(dim, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        with torch.autocast(t.device.type, enabled=False):
            sigma = trigflow_sigma(t.float().clamp(*self.t_range), self.sigma_data)
            features = self.embed(0.25 * torch.log(sigma)).to(self.linear.weight.dtype)
            return self.linear(features).squeeze(1)


class TrigFlowModel(nn.Module):
    """F_θ(x_t/σ_d, t) = −net(x_t/σ_d, c_noise(σ_d tan t), class) and f_θ(x_t, t) = cos t·x_t − sin t·σ_d·F_θ (§10).

    `weighting` is sCM's learned w(t): trained, saved and restored with the model, ignored by sampling.
    """

    parameterization = "trigflow"

    def __init__(
        self,
        net: nn.Module,
        sigma_data: float,
        sigma_min: float,
        sigma_max: float,
        noise_conditioning_name: str = "openai",
    ) -> None:
        super().__init__()
        self.net = net
        self.sigma_data, self.sigma_min = sigma_data, sigma_min
        self.c_noise = noise_conditioning(noise_conditioning_name)
        self.t_range = (math.atan(sigma_min / sigma_data), math.atan(sigma_max / sigma_data))
        self.weighting = TimeWeighting(self.t_range, sigma_data)

    def noise_input(self, t: torch.Tensor) -> torch.Tensor:
        """c_noise(σ_d tan t) in fp32 (or wider), with t clamped to [arctan(σ_min/σ_d), arctan(σ_max/σ_d)]."""
        t = t.to(torch.promote_types(t.dtype, torch.float32)).clamp(*self.t_range)
        return self.c_noise(trigflow_sigma(t, self.sigma_data))

    def forward(
        self,
        x_scaled: torch.Tensor,
        t: torch.Tensor | float,
        class_labels: torch.Tensor | None = None,
        with_log_weight: bool = False,
        guidance: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """F_θ(x_t/σ_d, t) for x_scaled = x_t/σ_d (a guided student also takes w); with `with_log_weight`, the pair
        (F_θ, w(t))."""
        t = _per_sample(t, x_scaled)
        velocity = -call_network(self.net, x_scaled, self.noise_input(t), class_labels, guidance).to(x_scaled.dtype)
        return (velocity, self.weighting(t)) if with_log_weight else velocity

    def consistency(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor | float,
        class_labels: torch.Tensor | None = None,
        guidance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """f_θ(x_t, t) = cos t·x_t − sin t·σ_d·F_θ(x_t/σ_d, t); f(x, 0) = x exactly (§10)."""
        t = _per_sample(t, x_t)
        cos, sin = append_dims(torch.cos(t), x_t.ndim), append_dims(torch.sin(t), x_t.ndim)
        velocity = self(x_t / self.sigma_data, t, class_labels, guidance=guidance)
        return (cos * x_t - sin * self.sigma_data * velocity).to(x_t.dtype)

    def edm_consistency(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor | float,
        class_labels: torch.Tensor | None = None,
        guidance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """f at an EDM sample x_σ: t = arctan(σ/σ_d), x_t = cos t·x_σ; the output (an estimate of x0) is shared."""
        t = trigflow_time(_per_sample(sigma, x), self.sigma_data)
        return self.consistency(append_dims(torch.cos(t), x.ndim) * x, t, class_labels, guidance)


def _per_sample(t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """A time or noise level as a floating (B,) vector on x's device."""
    t = torch.as_tensor(t, device=x.device)
    t = t if t.is_floating_point() else t.to(x.dtype)
    return t.expand(x.shape[0]) if t.ndim == 0 else t


def trigflow_sampling_times(num_steps: int, default_sigmas: torch.Tensor, sigma_data: float) -> list[float]:
    """sCM's times: π/2 for one step, (π/2, 1.1) for two (§10); more steps: π/2, then arctan(σ/σ_d) of the
    remaining EDM default levels `default_sigmas`."""
    if num_steps < 1:
        raise ValueError(f"the number of sampling steps must be at least 1, got {num_steps}")
    if num_steps == 1:
        return [HALF_PI]
    if num_steps == 2:
        return [HALF_PI, TWO_STEP_TIME]
    return [HALF_PI, *trigflow_time(default_sigmas[1:].double(), sigma_data).tolist()]
