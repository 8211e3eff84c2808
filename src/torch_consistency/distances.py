"""Distances d(x, y) between consistency outputs, one value per sample (reference.md §4)."""

import math
from collections.abc import Callable

import torch

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
DISTANCES = ("l2", "l1", "pseudo-huber")


def l2_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean of squared differences over all but the batch dimension (§4)."""
    return (x - y).square().flatten(1).mean(1)


def l1_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean of absolute differences over all but the batch dimension (§4)."""
    return (x - y).abs().flatten(1).mean(1)


def pseudo_huber_constant(dim: int) -> float:
    """c = 0.00054·√dim, iCT's constant for a sample with `dim` values (§4, §8)."""
    return 0.00054 * math.sqrt(dim)


def pseudo_huber_distance(x: torch.Tensor, y: torch.Tensor, c: float | None = None) -> torch.Tensor:
    """√(‖x−y‖² + c²) − c on the whole per-sample vector, not per element (§4).

    Computed as ‖x−y‖²/(√(‖x−y‖² + c²) + c), the same value without cancellation when ‖x−y‖ ≪ c.
    """
    c = pseudo_huber_constant(x[0].numel()) if c is None else c
    if c == 0:  # the plain norm, with gradient 0 (not NaN) where x = y
        return torch.linalg.vector_norm((x - y).flatten(1), dim=1)
    squared = (x - y).square().flatten(1).sum(1)
    return squared / (torch.sqrt(squared + c**2) + c)


def distance(name: str) -> Distance:
    """The distance named `l2`, `l1` or `pseudo-huber`."""
    table = {"l2": l2_distance, "l1": l1_distance, "pseudo-huber": pseudo_huber_distance}
    if name not in table:
        raise ValueError(f"unknown distance {name!r}; choose one of {', '.join(table)}")
    return table[name]
