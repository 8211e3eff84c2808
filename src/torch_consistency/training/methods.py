"""Training methods: what each step draws and which loss it takes (teacher, CD, CT; iCT, ECT, sCM in `improved`).

A method turns the global batch's randomness into a per-sample loss through the pure objectives of
`torch_consistency.objectives`; it also names the target network's EMA rate μ(k) and the values to log.
The trainer hands it the networks unbound (`model(x, σ, labels, guidance=w)`) and the batch's class labels
(None for unconditional data); the method binds them (`conditioned`), so that it can change them: the teacher's
label dropout, a guided student's w, the labels a teacher sees in CD and sCD.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol, TypeVar

import torch

from ..config import Config, DistillationConfig, SCMConfig, has_null_class
from ..distances import Distance, distance
from ..errors import ConfigError
from ..guidance import drop_labels, guidance_scales, guided_denoiser, with_anchors
from ..objectives import (
    consistency_distillation_pair,
    consistency_training_loss,
    consistency_weight,
    edm_loss,
)
from ..schedules import ct_num_points, ct_target_ema
from ..sigmas import edm_training_sigma, karras_sigmas
from ..solvers import teacher_step
from .adversarial import Adversary, last_layer

Network = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Draws = dict[str, torch.Tensor]
Output = TypeVar("Output")


def _normal(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=generator.device)


def conditioned(
    network: Callable[..., Output], labels: torch.Tensor | None, guidance: torch.Tensor | None = None
) -> Callable[..., Output]:
    """`network(x, σ, **options)` with the batch's class labels (and a guided student's w) bound; unchanged for
    unconditional data."""
    if labels is None and guidance is None:
        return network
    if guidance is None:
        return lambda x, sigma, **options: network(x, sigma, labels, **options)
    return lambda x, sigma, **options: network(x, sigma, labels, guidance=guidance, **options)


def draw_guidance(section: DistillationConfig | SCMConfig, batch: int, generator: torch.Generator) -> Draws:
    """A guided student with a w input: w ~ U[guidance_min, guidance_max] per sample, drawn after the method's other
    draws (so the streams of unguided runs are unchanged), then w = 0 for the unconditional fraction and w = 1 for the
    conditional one (one uniform per sample drawn last, only when either is > 0); nothing otherwise."""
    if section.guidance != "input":
        return {}
    uniform = torch.rand((batch,), generator=generator, device=generator.device)
    w = guidance_scales(uniform, section.guidance_min, section.guidance_max)
    if section.unconditional_fraction > 0 or section.conditional_fraction > 0:
        w = with_anchors(w, torch.rand((batch,), generator=generator, device=generator.device),
                         section.unconditional_fraction, section.conditional_fraction)  # fmt: skip
    return {"guidance": w}


def teacher_guidance(section: DistillationConfig | SCMConfig, draws: Draws) -> torch.Tensor | float | None:
    """The w of the teacher's guided denoiser D_w: the drawn ones (input), the fixed one, or None (D_c)."""
    if section.guidance == "input":
        return draws["guidance"]
    return section.guidance_min if section.guidance == "fixed" else None


def student_guidance(section: DistillationConfig | SCMConfig, draws: Draws) -> torch.Tensor | None:
    """The w the student takes as an input: the drawn ones when guidance = input, else none."""
    return draws["guidance"] if section.guidance == "input" else None


def distillation_teacher(
    teacher: Callable[..., torch.Tensor], labels: torch.Tensor | None, w: torch.Tensor | float | None, null_label: int
) -> Network:
    """The denoiser a distillation step follows: D(x, σ, c), or the guided D_w (guidance.guided_denoiser)."""
    if w is None:
        return conditioned(teacher, labels)
    assert labels is not None  # guided distillation needs class-conditional data (configs.validate)
    return guided_denoiser(teacher, labels, null_label, w)


@cache
def _grid(num_points: int, sigma_min: float, sigma_max: float, rho: float) -> torch.Tensor:
    return karras_sigmas(num_points, sigma_min, sigma_max, rho).float()


@dataclass
class TeacherTraining:
    """EDM denoiser training: ln σ ~ N(P_mean, P_std²), loss λ(σ)‖D(x0+σz, σ) − x0‖² (reference.md §3); with
    teacher.label_dropout, a fraction of the labels becomes the null class (index num_classes) for CFG."""

    config: Config
    num_classes: int = 0
    parameterization = "denoiser"
    uses_target = False

    def draw(self, step: int, batch: int, shape: tuple[int, ...], generator: torch.Generator) -> Draws:
        draws = {"normal": _normal((batch,), generator), "noise": _normal((batch, *shape), generator)}
        if self.config.teacher.label_dropout > 0:  # after the others: runs without dropout keep their streams
            draws["label_uniform"] = torch.rand((batch,), generator=generator, device=generator.device)
        return draws

    def loss(
        self, model: Network, target: Network, x0: torch.Tensor, draws: Draws, step: int,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        t = self.config.teacher
        if labels is not None and t.label_dropout > 0:
            labels = drop_labels(labels, draws["label_uniform"], t.label_dropout, self.num_classes)
        sigma = edm_training_sigma(draws["normal"], t.p_mean, t.p_std)
        return edm_loss(conditioned(model, labels), x0, sigma, draws["noise"], self.config.diffusion.sigma_data)

    def target_rate(self, step: int) -> float:
        return 0.0

    def log_values(self, step: int) -> dict[str, Any]:
        return {}


class _GridPairs:
    """Shared by CD and CT: adjacent pairs (σ_i, σ_{i+1}) drawn uniformly from an N-point Karras grid."""

    config: Config

    def num_points(self, step: int) -> int:
        raise NotImplementedError

    def grid(self, step: int, device: torch.device) -> torch.Tensor:
        d = self.config.diffusion
        return _grid(self.num_points(step), d.sigma_min, d.sigma_max, d.rho).to(device)

    def draw(self, step: int, batch: int, shape: tuple[int, ...], generator: torch.Generator) -> Draws:
        index = torch.randint(0, self.num_points(step) - 1, (batch,), generator=generator, device=generator.device)
        return {"index": index, "noise": _normal((batch, *shape), generator)}

    def pair(self, step: int, draws: Draws, weighting: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        grid = self.grid(step, draws["noise"].device)
        sigma, sigma_next = grid[draws["index"]], grid[draws["index"] + 1]
        return (
            sigma,
            sigma_next,
            consistency_weight(weighting, sigma, sigma_next, self.config.diffusion.sigma_data),
        )


@dataclass
class ConsistencyDistillation(_GridPairs):
    """CD (paper Algorithm 2, reference.md §4): a teacher step between adjacent grid points (Euler, Heun or, with
    substeps, DPM-Solver++(2M)); the teacher sees the batch's labels, and with cd.guidance it is the guided D_w (LCM;
    guidance.py)."""

    config: Config
    teacher: Callable[..., torch.Tensor]  # D(x, σ) or, for class-conditional data, D(x, σ, labels)
    num_classes: int = 0  # the null class of a guided teacher is index num_classes
    parameterization = "consistency"

    def __post_init__(self) -> None:
        cd = self.config.cd
        if cd.distance == "lpips":
            from ..nets.lpips import load_lpips

            self.distance: Distance = load_lpips(*cd.lpips_weights.split(","))
        elif cd.distance == "teacher-features":
            from ..nets.denoiser_features import DenoiserFeatureDistance

            self.distance = DenoiserFeatureDistance(self.teacher, cd.feature_sigma, self._unlabelled_teacher())
        else:
            self.distance = distance(cd.distance)
        # the teacher's step between adjacent grid points: fixed by the config, so built once, not every step
        self.teacher_step = teacher_step(cd.solver, cd.teacher_substeps, self.config.diffusion.rho)
        self.adversary: Adversary | None = None
        if cd.adversarial_weight > 0:
            self.adversary = Adversary.create(self.teacher, self._unlabelled_teacher(), cd.discriminator_lr)

    def _unlabelled_teacher(self) -> int | None:
        """The label the teacher's features take: its null class (class-conditional data), or none."""
        if self.num_classes == 0:
            return None
        if not has_null_class(self.config):
            raise ConfigError(
                "the teacher's features (cd.distance = 'teacher-features', cd.adversarial_weight > 0) on "
                "class-conditional data need a teacher with a null class (trained with teacher.label_dropout > 0): "
                "they are taken without a label"
            )
        return self.num_classes

    @property
    def uses_target(self) -> bool:
        return self.config.cd.target_ema > 0

    def num_points(self, step: int) -> int:
        """N, or with cd.grow_from > 0 CT's N(k) = m(k) + 1 from grow_from to num_points (§5)."""
        cd = self.config.cd
        if cd.grow_from == 0:
            return cd.num_points
        return ct_num_points(step, self.config.train.total_steps, cd.grow_from, cd.num_points - 1)

    def draw(self, step: int, batch: int, shape: tuple[int, ...], generator: torch.Generator) -> Draws:
        draws = {**super().draw(step, batch, shape, generator), **draw_guidance(self.config.cd, batch, generator)}
        if self.adversary is not None:  # after the others: runs without the term keep their streams
            draws |= {
                "adversarial_normal": _normal((batch,), generator),
                "real_noise": _normal((batch, *shape), generator),
                "fake_noise": _normal((batch, *shape), generator),
            }
            if self.config.cd.adversarial_fakes == "one-step":
                draws["generator_noise"] = _normal((batch, *shape), generator)
        return draws

    def loss(
        self, model: Network, target: Network, x0: torch.Tensor, draws: Draws, step: int,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        cd = self.config.cd
        sigma, sigma_next, weight = self.pair(step, draws, cd.weighting)
        if isinstance(self.distance, torch.nn.Module):
            self.distance.to(x0.device)
        teacher = distillation_teacher(self.teacher, labels, teacher_guidance(cd, draws), self.num_classes)
        w = student_guidance(cd, draws)
        online, target_out = consistency_distillation_pair(
            conditioned(model, labels, w), conditioned(target, labels, w), teacher, self.teacher_step, x0,
            draws["noise"], sigma, sigma_next,
        )  # fmt: skip
        loss = weight * self.distance(online, target_out)
        if self.adversary is None:
            return loss
        fake = online  # the student's outputs on CD's pairs, or (one-step) its one-step samples f_θ(σ_max·z, σ_max)
        if cd.adversarial_fakes == "one-step":
            sigma_max = torch.full_like(sigma, self.config.diffusion.sigma_max)
            fake = conditioned(model, labels, w)(draws["generator_noise"] * self.config.diffusion.sigma_max, sigma_max)
        t = self.config.teacher
        return loss + self.adversary.term(
            loss.mean(), x0, fake, edm_training_sigma(draws["adversarial_normal"], t.p_mean, t.p_std),
            draws["real_noise"], draws["fake_noise"], last_layer(model), cd.adversarial_weight,
        )  # fmt: skip

    def target_rate(self, step: int) -> float:
        return self.config.cd.target_ema

    def log_values(self, step: int) -> dict[str, Any]:
        values = {"N": self.num_points(step), "mu": self.config.cd.target_ema}
        if self.adversary is not None and (last := self.adversary.last) is not None:
            values["discriminator_loss"] = last.discriminator_loss.item()
            values["adversarial_a"] = last.adaptive_weight.item()
        return values


@dataclass
class ConsistencyTraining(_GridPairs):
    """CT (paper Algorithm 3, reference.md §5): one z for both points, N(k) and μ(k) from the curriculum."""

    config: Config
    parameterization = "consistency"
    uses_target = True

    def num_points(self, step: int) -> int:
        ct = self.config.ct
        return ct_num_points(step, self.config.train.total_steps, ct.s0, ct.s1)

    def loss(
        self, model: Network, target: Network, x0: torch.Tensor, draws: Draws, step: int,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        ct = self.config.ct
        sigma, sigma_next, weight = self.pair(step, draws, ct.weighting)
        return consistency_training_loss(
            conditioned(model, labels), conditioned(target, labels), x0, draws["noise"], sigma, sigma_next,
            distance(ct.distance), weight,
        )  # fmt: skip

    def target_rate(self, step: int) -> float:
        ct = self.config.ct
        return ct_target_ema(step, self.config.train.total_steps, ct.s0, ct.s1, ct.mu0, ct.schedule)

    def log_values(self, step: int) -> dict[str, Any]:
        return {"N": self.num_points(step), "mu": self.target_rate(step)}


class Method(Protocol):
    """What the loop and the trainer need of a training method."""

    config: Config

    @property
    def parameterization(self) -> str: ...  # denoiser | consistency | trigflow: how the trained network is wrapped

    @property
    def uses_target(self) -> bool: ...  # whether θ⁻ is a separate EMA network; if not, the target is θ under no_grad

    def draw(self, step: int, batch: int, shape: tuple[int, ...], generator: torch.Generator) -> Draws: ...

    def loss(
        self, model: Network, target: Network, x0: torch.Tensor, draws: Draws, step: int,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor: ...  # fmt: skip

    def target_rate(self, step: int) -> float: ...

    def log_values(self, step: int) -> dict[str, Any]: ...
