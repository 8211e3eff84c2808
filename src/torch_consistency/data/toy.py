"""Low-dimensional distributions sampled on the fly: 2-D toys and Gaussian mixtures in any dimension.

All are scaled to a standard deviation of about 0.5 per coordinate (σ_data of reference.md §1).
Gaussian mixtures carry their exact denoiser (reference.md §12) so they can stand in for a teacher.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..gaussian import GaussianMixture
from ..seeding import STREAM_DATA, step_generator


@dataclass
class Distribution:
    """A distribution to sample from; `mixture` is set when its denoiser is known exactly."""

    name: str
    dim: int
    sampler: Callable[[int, torch.Generator | None], torch.Tensor]
    mixture: GaussianMixture | None = None

    num_classes = 0

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.dim,)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws as a float32 tensor of shape (n, dim)."""
        return self.sampler(n, generator).float()

    def training_batch(self, step: int, batch_size: int, seed: int) -> tuple[torch.Tensor, None]:
        """The global batch of training step `step`: fresh draws seeded from (seed, step)."""
        return self.sample(batch_size, step_generator(seed, step, STREAM_DATA)), None


def eight_gaussians(component_std: float = 0.05) -> Distribution:
    """Eight isotropic Gaussians evenly spaced on the circle of radius 0.7."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = 0.7 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    mixture = GaussianMixture.isotropic(means, component_std)
    return Distribution("eight_gaussians", 2, mixture.sample, mixture)


def random_gaussian_mixture(dim: int, components: int, component_std: float, seed: int = 0) -> Distribution:
    """`components` isotropic Gaussians in `dim` dimensions with means drawn from N(0, 0.5²I) by `seed`."""
    generator = torch.Generator().manual_seed(seed)
    means = 0.5 * torch.randn(components, dim, generator=generator, dtype=torch.float64)
    mixture = GaussianMixture.isotropic(means, component_std)
    return Distribution("gmm", dim, mixture.sample, mixture)


def _two_moons(n: int, generator: torch.Generator | None) -> torch.Tensor:
    upper = torch.rand(n, generator=generator) < 0.5
    angle = math.pi * torch.rand(n, generator=generator)
    x = torch.where(upper, torch.cos(angle), 1 - torch.cos(angle))
    y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle))
    points = torch.stack([x - 0.5, y - 0.25], dim=1) + 0.05 * torch.randn(n, 2, generator=generator)
    return points * 0.55


def _swiss_roll(n: int, generator: torch.Generator | None) -> torch.Tensor:
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator))
    points = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1) + 0.5 * torch.randn(n, 2, generator=generator)
    return points / 15.0


def _checkerboard(n: int, generator: torch.Generator | None) -> torch.Tensor:
    x = 4 * torch.rand(n, generator=generator) - 2
    row = torch.randint(0, 2, (n,), generator=generator)
    y = torch.rand(n, generator=generator) - 2 * row + torch.floor(x) % 2
    return torch.stack([x, y], dim=1) * 0.45


TOY_DATASETS = ("eight_gaussians", "two_moons", "swiss_roll", "checkerboard", "gmm")


def toy_distribution(name: str, dim: int = 2, components: int = 8, component_std: float = 0.05) -> Distribution:
    """The low-dimensional distribution called `name` (one of TOY_DATASETS)."""
    if name == "eight_gaussians":
        return eight_gaussians(component_std)
    if name == "gmm":
        return random_gaussian_mixture(dim, components, component_std)
    table = {"two_moons": _two_moons, "swiss_roll": _swiss_roll, "checkerboard": _checkerboard}
    if name not in table:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(TOY_DATASETS)}")
    return Distribution(name, 2, table[name])
