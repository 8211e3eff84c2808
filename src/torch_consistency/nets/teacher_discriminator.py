"""A discriminator made of the teacher's own encoder: small trainable heads on its frozen features (as LADD).

D(x_σ, σ) = Σ_l mean_hw h_l(a_l(x_σ, σ)), a_l the outputs of the teacher U-Net's down blocks and middle block on a
noised image x_σ = x + σn (the teacher's input as in training; the up path is never run), h_l a 3×3 convolution,
group norm, leaky ReLU and a 1×1 convolution to one logit per position. Latent adversarial diffusion distillation
(Sauer et al. 2024) builds its discriminator this way from the teacher being distilled: no weights to download, and
features learnt on exactly the student's data. Only the heads are parameters of this module (its state_dict and an
optimizer's); the teacher is held outside them and stays frozen, though gradients flow through it to x.
"""

import math
from collections.abc import Callable

import torch
from diffusers import UNet2DModel
from torch import nn

from ..parameterization import Preconditioned
from .denoiser_features import encoder_activations, null_labels, unet_teacher


def _head(channels: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1),
        nn.GroupNorm(math.gcd(8, channels), channels),
        nn.LeakyReLU(0.2),
        nn.Conv2d(channels, 1, 1),
    )


class TeacherDiscriminator(nn.Module):
    """Logits D(x_σ, σ), shape (B,), from heads on a U-Net teacher's encoder; `null_label`: the class a
    class-conditional teacher is given (its null class), None for an unconditional one."""

    def __init__(self, denoiser: Callable[..., torch.Tensor], null_label: int | None = None) -> None:
        super().__init__()
        teacher = unet_teacher(denoiser, "cd.adversarial_weight > 0")
        unet: UNet2DModel = teacher.net.unet
        channels = list(unet.config["block_out_channels"])
        self.heads = nn.ModuleList(_head(c) for c in [*channels, channels[-1]])  # the down blocks, the middle block
        self.null_label = null_label
        self._teacher = (teacher.requires_grad_(False),)  # a tuple: not a submodule, so neither saved nor trained

    @property
    def teacher(self) -> Preconditioned:
        return self._teacher[0]

    def forward(self, x_noisy: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        taps = encoder_activations(self.teacher, x_noisy, sigma, null_labels(self.null_label, x_noisy))
        logits = x_noisy.new_zeros(x_noisy.shape[0])
        for head, tap in zip(self.heads, taps, strict=True):
            logits = logits + head(tap).mean(dim=(1, 2, 3))
        return logits
