"""Embeddings of the noise conditioning c_noise (reference.md §2, §8) and of the guidance scale w (guidance.py):
the networks (nets/) and TrigFlow's learned weighting w(t) (trigflow.py) build on them."""

import math

import torch
from torch import nn

EMBEDDINGS = ("positional", "fourier")


class PositionalEmbedding(nn.Module):
    """Sinusoidal [cos(c·ω_j), sin(c·ω_j)], ω_j = 10000^{−j/(dim/2)}, as openai's U-Net and diffusers use."""

    def __init__(self, dim: int, max_period: float = 10000.0) -> None:
        super().__init__()
        half = dim // 2
        self.frequencies: torch.Tensor
        self.register_buffer("frequencies", torch.exp(-math.log(max_period) * torch.arange(half) / half))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        angles = c_noise.float()[:, None] * self.frequencies[None]
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class FourierEmbedding(nn.Module):
    """Random Fourier features [cos 2πcω, sin 2πcω], ω ~ N(0, scale²); iCT uses scale 0.02 instead of 16 (§8)."""

    def __init__(self, dim: int, scale: float) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.frequencies: torch.Tensor
        self.register_buffer("frequencies", torch.randn(dim // 2, generator=generator) * scale)

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * c_noise.float()[:, None] * self.frequencies[None]
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class GuidanceEmbedding(nn.Module):
    """The guidance scale's embedding, added to the noise embedding (LCM §4.2): sinusoidal features of 1000·w (as
    diffusers' LCM pipeline computes them) through a linear map. The map starts at zero (LCM's script initialises it
    at random), so a guided student starts as its teacher at every w; training moves it."""

    def __init__(self, features: int, out_dim: int) -> None:
        super().__init__()
        self.features = PositionalEmbedding(features)
        self.linear = nn.Linear(features, out_dim, bias=False)
        nn.init.zeros_(self.linear.weight)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(1000.0 * w.float()).to(self.linear.weight.dtype))


def noise_embedding(kind: str, dim: int, fourier_scale: float) -> nn.Module:
    """The embedding named `positional` or `fourier`."""
    if kind == "positional":
        return PositionalEmbedding(dim)
    if kind == "fourier":
        return FourierEmbedding(dim, fourier_scale)
    raise ValueError(f"unknown noise embedding {kind!r}; choose one of {', '.join(EMBEDDINGS)}")
