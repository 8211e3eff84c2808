"""Classifier-free guidance (CFG; Ho & Salimans 2022) and its distillation as latent consistency models do it
(LCM; Luo et al. 2023, §4.2). reference.md has no section for it, so the formulas are written here.

A class-conditional denoiser trained with label dropout (the label replaced by the null class ∅ with
probability p) is both D(x, σ, c) and D(x, σ, ∅). The guided denoiser is

    D_w(x, σ, c) = D(x, σ, ∅) + w·(D(x, σ, c) − D(x, σ, ∅)),

so w = 0 is the unconditional model, w = 1 the conditional one and w > 1 extrapolates towards the class.
CFG's paper and LCM write ε̃ = (1 + ω)·ε(c) − ω·ε(∅), which is this formula with w = 1 + ω (D and ε are affine
in each other at a fixed x and σ). LCM draws ω per sample from [ω_min, ω_max], takes the teacher's ODE step with
the guided prediction and gives the student ω as an input (an embedding added to the time embedding).
"""

from collections.abc import Callable

import torch

from .parameterization import append_dims

ConditionalDenoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
GUIDANCE_MODES = ("none", "input", "fixed")


def guided_denoised(unconditional: torch.Tensor, conditional: torch.Tensor, w: torch.Tensor | float) -> torch.Tensor:
    """D_w = D_∅ + w·(D_c − D_∅) (CFG, Ho & Salimans 2022, Algorithm 2 with w = 1 + ω; LCM §4.2); `w` is a number
    or one value per sample. Computed by torch.lerp, which returns D_∅ at w = 0 and D_c at w = 1 exactly."""
    weight = append_dims(w, unconditional.ndim).to(unconditional.dtype) if torch.is_tensor(w) else float(w)
    return torch.lerp(unconditional, conditional.to(unconditional.dtype), weight)


def guided_denoiser(
    denoiser: ConditionalDenoiser, labels: torch.Tensor, null_label: int, w: torch.Tensor | float
) -> Denoiser:
    """x, σ ↦ D_w(x, σ, labels) from a denoiser with a null class (`denoiser(x, σ, labels)`, ∅ = `null_label`).

    Two calls (c and ∅); one when w is the number 0 (∅ alone) or 1 (c alone), see `network_calls`.
    """
    null = torch.full_like(labels, null_label)
    if not torch.is_tensor(w) and float(w) in (0.0, 1.0):
        chosen = labels if float(w) == 1.0 else null
        return lambda x, sigma: denoiser(x, sigma, chosen)

    def guided(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return guided_denoised(denoiser(x, sigma, null), denoiser(x, sigma, labels), w)

    return guided


def network_calls(w: torch.Tensor | float | None) -> int:
    """Network evaluations per guided denoiser call: 1 without guidance or at the number w = 0 or 1, else 2."""
    return 2 if w is not None and (torch.is_tensor(w) or float(w) not in (0.0, 1.0)) else 1


def drop_labels(labels: torch.Tensor, uniform: torch.Tensor, fraction: float, null_label: int) -> torch.Tensor:
    """CFG's label dropout: c ← ∅ (index `null_label`) where u < p, u ~ U[0, 1) per sample (Ho & Salimans 2022,
    Algorithm 1 with p_uncond = `fraction`)."""
    return torch.where(uniform < fraction, torch.full_like(labels, null_label), labels)


def guidance_scales(uniform: torch.Tensor, w_min: float, w_max: float) -> torch.Tensor:
    """w = w_min + (w_max − w_min)·u, u ~ U[0, 1): one guidance scale per sample, uniform on [w_min, w_max]
    (LCM §4.2)."""
    return w_min + (w_max - w_min) * uniform


def with_anchors(w: torch.Tensor, uniform: torch.Tensor, unconditional: float, conditional: float) -> torch.Tensor:
    """w ← 0 where u < p_∅ and w ← 1 where p_∅ ≤ u < p_∅ + p_c, u ~ U[0, 1) per sample: the shares of a guided
    student's samples distilled from D_∅ and from D_c exactly, the two ends of guidance that a w drawn from a range
    almost never hits."""
    w = torch.where(uniform < unconditional, torch.zeros_like(w), w)
    return torch.where((uniform >= unconditional) & (uniform < unconditional + conditional), torch.ones_like(w), w)


def unguided_labels(labels: torch.Tensor, w: torch.Tensor, null_label: int) -> torch.Tensor:
    """c ← ∅ where w = 0: at w = 0 the student is asked for D_0 = D_∅, which no label changes."""
    return torch.where(w == 0, torch.full_like(labels, null_label), labels)
