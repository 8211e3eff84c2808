"""Exponential moving averages of weights: the target network θ⁻ and the evaluation EMAs (reference.md §4)."""

import copy

import torch
from torch import nn


def ema_copy(model: nn.Module) -> nn.Module:
    """A frozen copy of `model` to hold an average of its weights."""
    return copy.deepcopy(model).requires_grad_(False)


@torch.no_grad()
def ema_update(average: nn.Module, model: nn.Module, rate: float) -> None:
    """θ_avg ← μ·θ_avg + (1−μ)·θ for every parameter and floating-point buffer (reference.md §4)."""
    averaged = [t for t in _floating_state(average)]
    current = [t for t in _floating_state(model)]
    if rate == 0.0:
        torch._foreach_copy_(averaged, current)
    else:
        torch._foreach_lerp_(averaged, current, 1.0 - rate)


def _floating_state(module: nn.Module) -> list[torch.Tensor]:
    tensors = list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]
    return [t.data for t in tensors]


def ema_label(rate: float) -> str:
    """The name under which an evaluation EMA is saved, e.g. `ema-0.999`."""
    return f"ema-{rate:g}"
