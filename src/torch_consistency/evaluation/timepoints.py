"""Choosing the time points of 2- and 3-step sampling by the paper's greedy ternary search (reference.md §6).

The search runs over indices of the training grid (descending σ's). For 2 steps it picks σ_2 in
(σ_max, σ_min); for 3 steps it keeps that σ_2 and picks σ_3 below it: greedy, one point at a time.
`search_checkpoint_sigmas` runs it on a checkpoint's samples with any metric (FD for images, MMD for vectors).
"""

from collections.abc import Callable, Sequence

import torch

from ..checkpoint import Checkpoint
from ..errors import ConfigError
from ..sigmas import karras_sigmas
from .evaluate import sample_checkpoint

Objective = Callable[[list[float]], float]


def ternary_search(objective: Callable[[int], float], low: int, high: int) -> tuple[int, float]:
    """The integer in [low, high] minimising a unimodal `objective`, with each point evaluated once."""
    cache: dict[int, float] = {}

    def value(index: int) -> float:
        if index not in cache:
            cache[index] = objective(index)
        return cache[index]

    while high - low > 2:
        left, right = low + (high - low) // 3, high - (high - low) // 3
        if value(left) < value(right):
            high = right - 1
        else:
            low = left + 1
    best = min(range(low, high + 1), key=value)
    return best, value(best)


def greedy_time_points(objective: Objective, grid: Sequence[float], max_steps: int = 3) -> dict[int, list[float]]:
    """{steps: σ's} for 2 … max_steps steps, each new σ chosen by ternary search below the previous one."""
    if len(grid) < 3:
        raise ValueError("the time-point search needs a training grid of at least 3 points")
    chosen, lowest = [float(grid[0])], 0
    found: dict[int, list[float]] = {}
    for steps in range(2, max_steps + 1):
        if lowest + 1 > len(grid) - 2:
            break

        def score(index: int, prefix: list[float] = chosen) -> float:
            return objective([*prefix, float(grid[index])])

        lowest, _ = ternary_search(score, lowest + 1, len(grid) - 2)
        chosen = [*chosen, float(grid[lowest])]
        found[steps] = chosen
    return found


def check_searchable(checkpoint: Checkpoint) -> None:
    """Only consistency models sampled on σ's have time points to search."""
    if checkpoint.parameterization != "consistency":
        raise ConfigError("--search-sigmas applies to consistency models on σ's, not teachers or sCM (TrigFlow)")


def search_checkpoint_sigmas(
    checkpoint: Checkpoint,
    metric: Callable[[torch.Tensor], float],
    num_samples: int,
    seed: int = 0,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] = print,
    max_steps: int = 3,
) -> dict[int, list[float]]:
    """The 2- … `max_steps`-step σ's on the checkpoint's training grid that minimise `metric` of `num_samples`
    samples."""
    check_searchable(checkpoint)
    d = checkpoint.config.diffusion
    grid = karras_sigmas(checkpoint.grid_points(), d.sigma_min, d.sigma_max, d.rho).tolist()

    def objective(sigmas: list[float]) -> float:
        value = metric(sample_checkpoint(checkpoint, num_samples, sigmas=sigmas, seed=seed + 1, device=device).x)
        log(f"  σ's {[round(s, 4) for s in sigmas]}: {value:.4f}")
        return value

    return greedy_time_points(objective, grid, max_steps=max_steps)
