"""The adversarial term of CD (cd.adversarial_weight > 0): a discriminator on the teacher's encoder, its step, and
the student's side of the loss, as CTM adds a GAN term to consistency training and LADD builds the discriminator
from the teacher.

Each CD step first takes one discriminator step on the batch's images against the student's outputs f_θ(x_σ, σ)
(the hinge loss; both noised at a σ_d ~ lognormal(teacher.p_mean, teacher.p_std) per sample, the teacher's training
levels, with independent noise), then adds λ·a·(−E[D(f_θ)]) to the CD loss: λ = cd.adversarial_weight and a the
adaptive weight that matches the two losses' gradients at the student's last layer (VQGAN, CTM).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import UNet2DModel

from ..errors import ConfigError
from ..nets.teacher_discriminator import TeacherDiscriminator
from ..nets.unet import UNet
from ..objectives import adaptive_adversarial_weight, discriminator_hinge_loss, generator_hinge_loss
from ..parameterization import Preconditioned, append_dims


@dataclass
class AdversarialStep:
    """What the last step measured: the discriminator's hinge loss and the adaptive weight a."""

    discriminator_loss: torch.Tensor
    adaptive_weight: torch.Tensor


@dataclass
class Adversary:
    """The discriminator and its optimizer: Adam with β = (0, 0.99), the usual choice for GANs (StyleGAN2, ADD)."""

    discriminator: TeacherDiscriminator
    optimizer: torch.optim.Optimizer
    last: AdversarialStep | None = None

    @classmethod
    def create(cls, teacher: Callable[..., torch.Tensor], null_label: int | None, lr: float) -> "Adversary":
        discriminator = TeacherDiscriminator(teacher, null_label)
        return cls(discriminator, torch.optim.Adam(discriminator.parameters(), lr=lr, betas=(0.0, 0.99)))

    def logits(self, x: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """D(x + σ_d·n, σ_d)."""
        return self.discriminator(x + append_dims(sigma, x.ndim) * noise, sigma)

    def term(
        self, cd_loss: torch.Tensor, real: torch.Tensor, fake: torch.Tensor, sigma: torch.Tensor,
        real_noise: torch.Tensor, fake_noise: torch.Tensor, last_layer: torch.Tensor, weight: float,
    ) -> torch.Tensor:  # fmt: skip
        """One discriminator step, then the student's term λ·a·(−E[D(f_θ)]) for its loss (λ = `weight`). `fake`: the
        student's outputs with their graph; both sides are noised at σ_d = `sigma` (B,), each with its own noise."""
        self.discriminator.to(real.device)
        fake_logits = self.logits(fake.detach(), sigma, fake_noise)
        discriminator_loss = discriminator_hinge_loss(self.logits(real, sigma, real_noise), fake_logits)
        self.optimizer.zero_grad(set_to_none=True)
        discriminator_loss.backward()
        self.optimizer.step()
        self.discriminator.requires_grad_(False)  # the student's term trains the student only
        try:
            generator_loss = generator_hinge_loss(self.logits(fake, sigma, fake_noise))
        finally:
            self.discriminator.requires_grad_(True)
        adaptive = adaptive_adversarial_weight(cd_loss, generator_loss, last_layer)
        self.last = AdversarialStep(discriminator_loss.detach(), adaptive)
        return weight * adaptive * generator_loss

    def state_dict(self) -> dict:
        return {"discriminator": self.discriminator.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])


def last_layer(model: Callable[..., torch.Tensor]) -> torch.Tensor:
    """The weight of a U-Net student's output convolution (the layer the adaptive weight compares gradients at)."""
    if not isinstance(model, Preconditioned) or not isinstance(model.net, UNet):
        raise ConfigError("cd.adversarial_weight > 0 needs a U-Net student (the teacher's network)")
    unet: UNet2DModel = model.net.unet
    return unet.conv_out.weight
