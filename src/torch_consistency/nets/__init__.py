"""Networks F_θ(x, c_noise, class) and the preconditioned models built on them."""

from torch import nn

from ..config import Config
from ..parameterization import Preconditioned
from .mlp import MLP

NETWORK_KINDS = ("mlp", "unet")


def build_network(config: Config, sample_shape: tuple[int, ...], num_classes: int = 0) -> nn.Module:
    """The network described by `config.network` for samples of `sample_shape`."""
    net = config.network
    if net.kind == "mlp":
        dim = 1
        for size in sample_shape:
            dim *= size
        return MLP(
            dim,
            width=net.width,
            depth=net.depth,
            embedding_dim=net.embedding_dim,
            embedding=net.embedding,
            fourier_scale=net.fourier_scale,
            num_classes=num_classes,
            dropout=net.dropout,
        )
    if net.kind == "unet":
        from .unet import build_unet  # imports diffusers: only when needed

        return build_unet(net.preset, sample_shape, num_classes, net.dropout)
    raise ValueError(f"unknown network kind {net.kind!r}; choose one of {', '.join(NETWORK_KINDS)}")


def build_model(
    config: Config, parameterization: str, sample_shape: tuple[int, ...], num_classes: int = 0
) -> Preconditioned:
    """F_θ wrapped as a denoiser (`denoiser`) or a consistency function (`consistency`)."""
    d = config.diffusion
    return Preconditioned(
        build_network(config, sample_shape, num_classes),
        parameterization,
        sigma_data=d.sigma_data,
        sigma_min=d.sigma_min,
        noise_conditioning_name=d.noise_conditioning,
    )
