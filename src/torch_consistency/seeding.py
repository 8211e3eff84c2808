"""Randomness as a pure function of integer keys: (seed, step, stream) in training, (seed, batch, stream) in
sampling, so that ranks, resumed runs and repeated calls agree exactly."""

import numpy as np
import torch

STREAM_DATA = 0  # the global data batch
STREAM_NOISE = 1  # the method's draws (σ indices, z) for the global batch
STREAM_DEVICE = 2  # the per-rank device RNG (dropout)
STREAM_INIT = 3  # the initial weights
STREAM_SAMPLE = 4  # a sampling or editing batch


def derive_seed(*keys: int) -> int:
    """A 63-bit seed mixed from integer keys by numpy's SeedSequence."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0] >> 1)


def step_generator(seed: int, step: int, stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on `device` seeded from (seed, step, stream)."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, step, stream))


def batch_generator(seed: int, batch: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator of batch `batch` of a sampling or editing call with `seed`: mixed from both, so that the batches
    of nearby seeds share no noise (seed + batch would give seed 2's first batch to seed 1's second)."""
    return step_generator(seed, batch, STREAM_SAMPLE, device)
