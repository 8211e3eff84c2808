"""Curricula of consistency training: pure functions of the training step k (reference.md §5, §8–10).

Past the last step K every schedule stays at its final value, so all ranks and every resume agree.
"""

import math

import torch

CT_SCHEDULE_VARIANTS = ("code", "paper")


def _progress(step: int, total_steps: int) -> float:
    """k/K clamped to [0, 1]."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    return min(max(step, 0), total_steps) / total_steps


def ct_scale(step: int, total_steps: int, s0: int, s1: int) -> int:
    """m(k) = max(1, ⌈√(k/K·((s1+1)² − s0²) + s0²) − 1⌉), the released code's `scales` before +1 (§5)."""
    progress = _progress(step, total_steps)
    return max(1, math.ceil(math.sqrt(progress * ((s1 + 1) ** 2 - s0**2) + s0**2) - 1))


def ct_num_points(step: int, total_steps: int, s0: int, s1: int) -> int:
    """N(k) = m(k) + 1 points on the CT grid at step k (§5)."""
    return ct_scale(step, total_steps, s0, s1) + 1


def ct_target_ema(step: int, total_steps: int, s0: int, s1: int, mu0: float, variant: str = "code") -> float:
    """μ(k) = exp(s0·ln μ0 / m(k)) as the code computes it, or exp(s0·ln μ0 / N(k)) as the paper writes it (§5).

    μ0 = 0 gives its limit μ(k) = 0: the target is the current weights, gradient stopped (iCT's finding, §8)."""
    if variant not in CT_SCHEDULE_VARIANTS:
        raise ValueError(f"unknown CT schedule variant {variant!r}; choose one of {CT_SCHEDULE_VARIANTS}")
    if mu0 == 0:
        return 0.0
    scale = ct_scale(step, total_steps, s0, s1)
    divisor = scale if variant == "code" else scale + 1
    return math.exp(s0 * math.log(mu0) / divisor)


def ict_num_points(step: int, total_steps: int, s0: int = 10, s1: int = 1280) -> int:
    """iCT's N(k) = min(s0·2^⌊k/K'⌋, s1) + 1 with K' = ⌊K/(log2⌊s1/s0⌋ + 1)⌋ (§8)."""
    stage_length = max(1, math.floor(total_steps / (math.log2(math.floor(s1 / s0)) + 1)))
    stage = min(max(step, 0), total_steps) // stage_length
    return min(s0 * 2**stage, s1) + 1


def ect_stage(step: int, stage_steps: int) -> int:
    """ECT's stage s = ⌊k/d⌋ with d iterations per stage (§9)."""
    return max(step, 0) // stage_steps


def ect_second_point(t: torch.Tensor, stage: int, q: float, k: float = 8.0) -> torch.Tensor:
    """ECT's r = max(0, t·(1 − q^{−(s+1)}·(1 + k·sigmoid(−t)))) with k = 8 (§9): r < t, r → t as s grows."""
    return torch.clamp(t * (1 - q ** -(stage + 1) * (1 + k * torch.sigmoid(-t))), min=0)


def tangent_warmup(step: int, warmup_steps: int) -> float:
    """sCM's r(k) = min(1, k/warmup): the weight of the second tangent term ramps 0 → 1 (§10)."""
    return 1.0 if warmup_steps <= 0 else min(1.0, max(step, 0) / warmup_steps)
