"""Networks F_θ(x, c_noise, class, w) and the preconditioned models built on them."""

from typing import TYPE_CHECKING

from torch import nn

from ..config import Config, has_guidance_input, has_null_class, unconditional_at_zero
from ..parameterization import Preconditioned
from .mlp import MLP

if TYPE_CHECKING:
    from ..trigflow import TrigFlowModel

NETWORK_KINDS = ("mlp", "unet")
# CD's distances computed by a network (cd.distance): LPIPS (nets/lpips.py) and the teacher's own encoder
# (nets/denoiser_features.py)
NETWORK_DISTANCES = ("lpips", "teacher-features")


def class_embeddings(config: Config, num_classes: int) -> int:
    """How many class embeddings the network has: the data's classes, plus the null class ∅ (index num_classes)
    of classifier-free guidance when the teacher was trained with label dropout."""
    return num_classes + 1 if num_classes > 0 and has_null_class(config) else num_classes


def build_network(config: Config, sample_shape: tuple[int, ...], num_classes: int = 0) -> nn.Module:
    """The network described by `config.network` for samples of `sample_shape` and data with `num_classes` classes
    (0: unconditional); it takes the guidance scale w when the run is a guided student with a w input, and with
    an unconditional fraction it is given the null class ∅ (index num_classes) wherever w = 0."""
    net = config.network
    embeddings, guidance_input = class_embeddings(config, num_classes), has_guidance_input(config)
    null_at_zero = num_classes if num_classes > 0 and unconditional_at_zero(config) else None
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
            num_classes=embeddings,
            dropout=net.dropout,
            guidance_input=guidance_input,
            null_at_zero=null_at_zero,
        )
    if net.kind == "unet":
        from .unet import build_unet  # imports diffusers: only when needed

        return build_unet(net.preset, sample_shape, embeddings, net.dropout, guidance_input, null_at_zero)
    raise ValueError(f"unknown network kind {net.kind!r}; choose one of {', '.join(NETWORK_KINDS)}")


def build_model(
    config: Config, parameterization: str, sample_shape: tuple[int, ...], num_classes: int = 0
) -> "Preconditioned | TrigFlowModel":
    """F_θ wrapped as a denoiser (`denoiser`), a consistency function (`consistency`) or a TrigFlow model (`trigflow`).

    A TrigFlow U-Net gets attention and GroupNorm that forward-mode AD (sCM's JVP) can differentiate.
    """
    d = config.diffusion
    net = build_network(config, sample_shape, num_classes)
    if parameterization == "trigflow":
        from ..trigflow import TrigFlowModel

        if config.network.kind == "unet":
            from .unet import prepare_for_forward_ad

            prepare_for_forward_ad(net)
        return TrigFlowModel(net, d.sigma_data, d.sigma_min, d.sigma_max, d.noise_conditioning)
    return Preconditioned(
        net,
        parameterization,
        sigma_data=d.sigma_data,
        sigma_min=d.sigma_min,
        noise_conditioning_name=d.noise_conditioning,
    )
