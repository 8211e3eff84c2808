"""A perceptual distance made of the teacher's own U-Net: LPIPS's form on the teacher's encoder instead of VGG16.

d(x, y) = Σ_l mean_hw ‖ĝ_l(x) − ĝ_l(y)‖², ĝ_l the unit-normalised activations (over channels) of the teacher
U-Net's down blocks and middle block when it denoises x at a fixed σ (`cd.feature_sigma`): LPIPS's formula
(reference.md §4) with equal layer weights. The paper's best CD runs use LPIPS; its VGG16 weights do not ship
with the project (and are ImageNet's, far from 28 × 28 digits), while the teacher that CD distils has learnt
features of exactly the student's data. The teacher sees x itself, without noise, so the distance is
deterministic (zero at x = y, symmetric). The up path is never run: a hook stops the forward pass after the middle
block.
"""

from collections.abc import Callable

import torch
from diffusers import UNet2DModel
from torch import nn

from ..errors import ConfigError
from ..parameterization import Preconditioned
from .lpips import unit_normalize
from .unet import UNet


class _EncoderDone(Exception):
    """Raised by the hook on the middle block: the features are in, the up path is not needed."""


def unet_teacher(denoiser: Callable[..., torch.Tensor], option: str) -> Preconditioned:
    """The teacher as a U-Net denoiser, or one line naming the option that needs it."""
    if not isinstance(denoiser, Preconditioned) or not isinstance(denoiser.net, UNet):
        raise ConfigError(f"{option} needs a U-Net teacher (a teacher checkpoint or a UNet2DModel)")
    return denoiser


def encoder_activations(
    denoiser: Preconditioned, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor | None
) -> list[torch.Tensor]:
    """The outputs of every down block and of the middle block of a U-Net denoiser at x and noise levels σ (B,);
    a hook on the middle block stops the pass there, so the up path never runs."""
    unet: UNet2DModel = denoiser.net.unet
    taps: list[torch.Tensor] = []

    def keep(_module: nn.Module, _args: object, output: torch.Tensor | tuple[torch.Tensor, ...]) -> None:
        taps.append(output[0] if isinstance(output, tuple) else output)

    def keep_and_stop(module: nn.Module, args: object, output: torch.Tensor) -> None:
        keep(module, args, output)
        raise _EncoderDone

    hooks = [block.register_forward_hook(keep) for block in unet.down_blocks]
    hooks.append(unet.mid_block.register_forward_hook(keep_and_stop))
    try:
        denoiser(x, sigma, labels)
    except _EncoderDone:
        pass
    finally:
        for hook in hooks:
            hook.remove()
    return taps


def null_labels(null_label: int | None, x: torch.Tensor) -> torch.Tensor | None:
    """The batch's labels for a teacher seen without a class: its null class, or none for an unconditional one."""
    return None if null_label is None else x.new_full((x.shape[0],), null_label, dtype=torch.long)


class DenoiserFeatureDistance:
    """Σ_l mean_hw ‖ĝ_l(x) − ĝ_l(y)‖² on a U-Net denoiser's encoder at σ = `sigma` (images of the teacher's shape).

    `null_label` is the class index the teacher is given for a class-conditional teacher (its null class); the
    features of an unconditional teacher take no label.
    """

    def __init__(self, denoiser: Callable[..., torch.Tensor], sigma: float, null_label: int | None = None) -> None:
        teacher = unet_teacher(denoiser, "cd.distance = 'teacher-features'")
        if not sigma > 0:  # the config's own range check (config.RANGES) does not reach a distance built in code
            raise ConfigError(f"cd.feature_sigma must be > 0, got {sigma}")
        self.denoiser = teacher.requires_grad_(False)
        self.sigma = sigma
        self.null_label = null_label

    def activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The unit-normalised outputs of every down block and of the middle block for the batch x."""
        sigma = torch.full((x.shape[0],), self.sigma, device=x.device, dtype=x.dtype)
        labels = null_labels(self.null_label, x)
        return [unit_normalize(a) for a in encoder_activations(self.denoiser, x, sigma, labels)]

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """d(x, y), shape (N,)."""
        distance = x.new_zeros(x.shape[0])
        with torch.set_grad_enabled(torch.is_grad_enabled() and y.requires_grad):
            target = self.activations(y)
        for a, b in zip(self.activations(x), target, strict=True):
            distance = distance + (a - b).square().sum(dim=1).mean(dim=(1, 2))
        return distance
