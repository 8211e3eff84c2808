"""How a network F_θ becomes a denoiser D(x, σ) or a consistency function f(x, σ) (reference.md §2).

Both wrap F_θ(c_in·x, c_noise(σ), class) and differ only in c_skip and c_out. Scalings are computed in
the dtype of σ, so that f(x, σ_min) = x holds bit for bit when σ = σ_min in that dtype.
"""

from collections.abc import Callable

import torch
from torch import nn

NOISE_CONDITIONINGS = ("openai", "edm")
PARAMETERIZATIONS = ("denoiser", "consistency")


def edm_scalings(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in) of the EDM denoiser: σ_d²/(σ²+σ_d²), σσ_d/√(σ²+σ_d²), 1/√(σ²+σ_d²) (§2)."""
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total.sqrt(), total.rsqrt()


def consistency_scalings(
    sigma: torch.Tensor, sigma_data: float, sigma_min: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in) with f(x, σ_min) = x: σ_d²/((σ−σ_min)²+σ_d²), (σ−σ_min)σ_d/√(σ²+σ_d²), c_in (§2)."""
    shifted = sigma - torch.tensor(sigma_min, dtype=sigma.dtype, device=sigma.device)
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / (shifted**2 + sigma_data**2), shifted * sigma_data / total.sqrt(), total.rsqrt()


def openai_noise_conditioning(sigma: torch.Tensor) -> torch.Tensor:
    """c_noise = 1000·0.25·ln(σ + 1e-44) = 250 ln σ, as openai's code and diffusers' scheduler feed it (§2)."""
    return 250.0 * torch.log(sigma + 1e-44)


def edm_noise_conditioning(sigma: torch.Tensor) -> torch.Tensor:
    """c_noise = ln(σ)/4, EDM's conditioning (§2)."""
    return 0.25 * torch.log(sigma)


def noise_conditioning(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The c_noise function named `openai` (250 ln σ) or `edm` (ln σ / 4)."""
    table = {"openai": openai_noise_conditioning, "edm": edm_noise_conditioning}
    if name not in table:
        raise ValueError(f"unknown noise conditioning {name!r}; choose one of {', '.join(table)}")
    return table[name]


def append_dims(values: torch.Tensor, ndim: int) -> torch.Tensor:
    """View a per-sample vector (B,) as (B, 1, ..., 1) with `ndim` dimensions, to broadcast over a batch."""
    return values.reshape(values.shape + (1,) * (ndim - values.ndim))


class Preconditioned(nn.Module):
    """`c_skip(σ)·x + c_out(σ)·F_θ(c_in(σ)·x, c_noise(σ), class)`: a denoiser or a consistency function (§2).

    `net(x_in, c_noise, class_labels)` is any network mapping a batch to a batch of the same shape.
    Call with `x` of shape (B, ...) and `sigma` of shape (B,) or a scalar.
    """

    def __init__(
        self,
        net: nn.Module,
        parameterization: str,
        sigma_data: float,
        sigma_min: float,
        noise_conditioning_name: str = "openai",
    ) -> None:
        super().__init__()
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"unknown parameterization {parameterization!r}; choose one of {PARAMETERIZATIONS}")
        self.net = net
        self.parameterization = parameterization
        self.sigma_data = sigma_data
        self.sigma_min = sigma_min
        self.c_noise = noise_conditioning(noise_conditioning_name)

    def scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c_skip, c_out, c_in) for this parameterization."""
        if self.parameterization == "denoiser":
            return edm_scalings(sigma, self.sigma_data)
        return consistency_scalings(sigma, self.sigma_data, self.sigma_min)

    def forward(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor | float,
        class_labels: torch.Tensor | None = None,
        guidance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The model at (x, σ) for `class_labels` and, for a guided student, the guidance scales w (B,)."""
        sigma = torch.as_tensor(sigma, device=x.device)
        if not sigma.is_floating_point():
            sigma = sigma.to(x.dtype)
        sigma = sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma
        c_skip, c_out, c_in = (append_dims(c, x.ndim) for c in self.scalings(sigma))
        net_out = call_network(
            self.net, (c_in * x).to(x.dtype), self.c_noise(sigma).to(x.dtype), class_labels, guidance
        )
        return (c_skip * x + c_out * net_out.to(x.dtype)).to(x.dtype)


def call_network(
    net: nn.Module,
    x: torch.Tensor,
    c_noise: torch.Tensor,
    class_labels: torch.Tensor | None,
    guidance: torch.Tensor | None,
) -> torch.Tensor:
    """`net(x, c_noise, class_labels)`, with `guidance=w` only for a network that takes it (any other network keeps
    the plain three-argument signature)."""
    if guidance is None:
        return net(x, c_noise, class_labels)
    return net(x, c_noise, class_labels, guidance=guidance)
