"""The improved methods: iCT (reference.md §8), ECT (§9) and sCM in TrigFlow form (§10).

All three use μ = 0: the target is the online weights with the gradient stopped (`uses_target = False`), so
the trainer keeps no separate θ⁻; evaluation EMAs (train.ema_rates) are kept as usual.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch

from ..config import Config
from ..distances import distance
from ..objectives import consistency_training_loss, ect_loss
from ..schedules import ect_second_point, ect_stage, ict_num_points, tangent_warmup
from ..sigmas import edm_training_sigma, karras_sigmas, lognormal_pair_probabilities
from ..trigflow import scm_training_loss, trigflow_training_time
from .methods import (
    Draws,
    Network,
    _GridPairs,
    _normal,
    conditioned,
    distillation_teacher,
    draw_guidance,
    student_guidance,
    teacher_guidance,
)


@cache
def _pair_probabilities(
    num_points: int, sigma_min: float, sigma_max: float, rho: float, p_mean: float, p_std: float
) -> torch.Tensor:
    """iCT's discrete lognormal over the N − 1 adjacent pairs of the N-point Karras grid (§8)."""
    return lognormal_pair_probabilities(karras_sigmas(num_points, sigma_min, sigma_max, rho), p_mean, p_std).float()


@dataclass
class ImprovedConsistencyTraining(_GridPairs):
    """iCT (§8): pairs drawn from a discrete lognormal on the N(k)-point grid, λ = 1/(σ_i − σ_{i+1}),
    pseudo-Huber distance, the exponential curriculum N(k), μ = 0; dropout masks shared by both passes."""

    config: Config
    parameterization = "consistency"
    uses_target = False

    def num_points(self, step: int) -> int:
        ict = self.config.ict
        return ict_num_points(step, self.config.train.total_steps, ict.s0, ict.s1)

    def probabilities(self, step: int) -> torch.Tensor:
        """p(i) of the pair (σ_i, σ_{i+1}) at step k."""
        d, ict = self.config.diffusion, self.config.ict
        return _pair_probabilities(self.num_points(step), d.sigma_min, d.sigma_max, d.rho, ict.p_mean, ict.p_std)

    def draw(self, step: int, batch: int, shape: tuple[int, ...], generator: torch.Generator) -> Draws:
        probabilities = self.probabilities(step).to(generator.device)
        index = torch.multinomial(probabilities, batch, replacement=True, generator=generator)
        return {"index": index, "noise": _normal((batch, *shape), generator)}

    def loss(
        self, model: Network, target: Network, x0: torch.Tensor, draws: Draws, step: int,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        ict = self.config.ict
        sigma, sigma_next, weight = self.pair(step, draws, ict.weighting)
        return consistency_training_loss(
            conditioned(model, labels), conditioned(target, labels), x0, draws["noise"], sigma, sigma_next,
            distance(ict.distance), weight,
        )  # fmt: skip

    def target_rate(self, step: int) -> float:
        return 0.0

    def log_values(self, step: int) -> dict[str, Any]:
        return {"N": self.num_points(step)}


@dataclass
class EasyConsistencyTuning:
    """ECT (§9): t lognormal, r = max(0, t·(1 − q^{−(s+1)}·(1 + 8·sigmoid(−t)))) at stage s, one z for both
    points, the online network under no_grad as the target, x0 as the target where r = 0."""

    config: Config
    parameterization = "consistency"
    uses_target = False

    def stage(self, step: int) -> int:
        return ect_stage(step, self.config.ect.stage_steps)

    def draw(self, step: int, batch: int, shape: tuple[int, ...], generator: torch.Generator) -> Draws:
        return {"normal": _normal((batch,), generator), "noise": _normal((batch, *shape), generator)}

    def points(self, step: int, draws: Draws) -> tuple[torch.Tensor, torch.Tensor]:
        """(t, r): t = exp(P_mean + P_std·n) clamped to [σ_min, σ_max], and ECT's second point r."""
        ect, d = self.config.ect, self.config.diffusion
        t = edm_training_sigma(draws["normal"], ect.p_mean, ect.p_std).clamp(d.sigma_min, d.sigma_max)
        return t, ect_second_point(t, self.stage(step), ect.q)

    def loss(
        self, model: Network, target: Network, x0: torch.Tensor, draws: Draws, step: int,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        t, r = self.points(step, draws)
        d = self.config.diffusion
        return ect_loss(
            conditioned(model, labels), conditioned(target, labels), x0, draws["noise"], t, r, d.sigma_min,
            self.config.ect.huber_c,
        )  # fmt: skip

    def target_rate(self, step: int) -> float:
        return 0.0

    def log_values(self, step: int) -> dict[str, Any]:
        return {"stage": self.stage(step)}


@dataclass
class ContinuousTimeConsistency:
    """sCM (§10) in TrigFlow form: sCT (`teacher` None) or sCD (`teacher` an EDM denoiser D(x, σ[, labels]); with
    scm.guidance the guided D_w, as CD's).

    The trainer's `model(x/σ_d, t, with_log_weight=True)` is the online TrigFlowModel (F_θ and the learned w(t));
    `target(x/σ_d, t)` is F_θ⁻, the same weights under no_grad, differentiated by one JVP.
    """

    config: Config
    teacher: Callable[..., torch.Tensor] | None = None
    num_classes: int = 0  # the null class of a guided teacher is index num_classes
    parameterization = "trigflow"
    uses_target = False

    def draw(self, step: int, batch: int, shape: tuple[int, ...], generator: torch.Generator) -> Draws:
        draws = {"normal": _normal((batch,), generator), "noise": _normal((batch, *shape), generator)}
        return {**draws, **draw_guidance(self.config.scm, batch, generator)}

    def times(self, draws: Draws) -> torch.Tensor:
        """t = arctan(e^τ/σ_d), τ ~ N(P_mean, P_std²)."""
        scm = self.config.scm
        return trigflow_training_time(draws["normal"], scm.p_mean, scm.p_std, self.config.diffusion.sigma_data)

    def tangent_weight(self, step: int) -> float:
        return tangent_warmup(step, self.config.scm.tangent_warmup_steps)

    def loss(
        self, model: Callable[..., Any], target: Network, x0: torch.Tensor, draws: Draws, step: int,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        scm = self.config.scm
        teacher = None
        if self.teacher is not None:
            teacher = distillation_teacher(self.teacher, labels, teacher_guidance(scm, draws), self.num_classes)
        w = student_guidance(scm, draws)
        return scm_training_loss(
            conditioned(model, labels, w), conditioned(target, labels, w), x0, draws["noise"], self.times(draws),
            self.tangent_weight(step), self.config.diffusion.sigma_data, scm.tangent_norm_c, teacher, scm.jvp_fp32,
        )  # fmt: skip

    def target_rate(self, step: int) -> float:
        return 0.0

    def log_values(self, step: int) -> dict[str, Any]:
        return {"r": self.tangent_weight(step)}
