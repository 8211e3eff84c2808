"""Training methods: what each step draws and which loss it takes (teacher, CD, CT; iCT, ECT, sCM in `improved`).

A method turns the global batch's randomness into a per-sample loss through the pure objectives of
`torch_consistency.objectives`; it also names the target network's EMA rate μ(k) and the values to log.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

import torch

from ..config import Config
from ..distances import distance
from ..errors import CheckpointError, ConfigError
from ..objectives import (
    consistency_distillation_loss,
    consistency_training_loss,
    consistency_weight,
    edm_loss,
)
from ..schedules import ct_num_points, ct_target_ema
from ..sigmas import edm_training_sigma, karras_sigmas
from ..solvers import euler_step, heun_step

Network = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Draws = dict[str, torch.Tensor]


def _normal(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=generator.device)


@cache
def _grid(num_points: int, sigma_min: float, sigma_max: float, rho: float) -> torch.Tensor:
    return karras_sigmas(num_points, sigma_min, sigma_max, rho).float()


@dataclass
class TeacherTraining:
    """EDM denoiser training: ln σ ~ N(P_mean, P_std²), loss λ(σ)‖D(x0+σz, σ) − x0‖² (reference.md §3)."""

    config: Config
    parameterization = "denoiser"
    uses_target = False

    def draw(self, step: int, batch: int, shape: tuple[int, ...], generator: torch.Generator) -> Draws:
        return {"normal": _normal((batch,), generator), "noise": _normal((batch, *shape), generator)}

    def loss(self, model: Network, target: Network, x0: torch.Tensor, draws: Draws, step: int) -> torch.Tensor:
        t = self.config.teacher
        sigma = edm_training_sigma(draws["normal"], t.p_mean, t.p_std)
        return edm_loss(model, x0, sigma, draws["noise"], self.config.diffusion.sigma_data)

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
    """CD (paper Algorithm 2, reference.md §4): one Euler or Heun teacher step between adjacent grid points."""

    config: Config
    teacher: Network
    parameterization = "consistency"

    def __post_init__(self) -> None:
        cd = self.config.cd
        if cd.distance == "lpips":
            from ..nets.lpips import load_lpips

            self.distance = load_lpips(*cd.lpips_weights.split(","))
        else:
            self.distance = distance(cd.distance)

    @property
    def uses_target(self) -> bool:
        return self.config.cd.target_ema > 0

    def num_points(self, step: int) -> int:
        return self.config.cd.num_points

    def loss(self, model: Network, target: Network, x0: torch.Tensor, draws: Draws, step: int) -> torch.Tensor:
        cd = self.config.cd
        sigma, sigma_next, weight = self.pair(step, draws, cd.weighting)
        teacher_step = heun_step if cd.solver == "heun" else euler_step
        if isinstance(self.distance, torch.nn.Module):
            self.distance.to(x0.device)
        return consistency_distillation_loss(
            model, target, self.teacher, teacher_step, x0, draws["noise"], sigma, sigma_next, self.distance, weight
        )

    def target_rate(self, step: int) -> float:
        return self.config.cd.target_ema

    def log_values(self, step: int) -> dict[str, Any]:
        return {"N": self.config.cd.num_points, "mu": self.config.cd.target_ema}


@dataclass
class ConsistencyTraining(_GridPairs):
    """CT (paper Algorithm 3, reference.md §5): one z for both points, N(k) and μ(k) from the curriculum."""

    config: Config
    parameterization = "consistency"
    uses_target = True

    def num_points(self, step: int) -> int:
        ct = self.config.ct
        return ct_num_points(step, self.config.train.total_steps, ct.s0, ct.s1)

    def loss(self, model: Network, target: Network, x0: torch.Tensor, draws: Draws, step: int) -> torch.Tensor:
        ct = self.config.ct
        sigma, sigma_next, weight = self.pair(step, draws, ct.weighting)
        return consistency_training_loss(
            model, target, x0, draws["noise"], sigma, sigma_next, distance(ct.distance), weight
        )

    def target_rate(self, step: int) -> float:
        ct = self.config.ct
        return ct_target_ema(step, self.config.train.total_steps, ct.s0, ct.s1, ct.mu0, ct.schedule)

    def log_values(self, step: int) -> dict[str, Any]:
        return {"N": self.num_points(step), "mu": self.target_rate(step)}


@dataclass
class Teacher:
    """A teacher denoiser for CD and, when it is a trained network, the weights the student starts from."""

    denoiser: Network
    initial_weights: dict[str, torch.Tensor] | None
    config: Config | None
    sample_shape: tuple[int, ...] | None


def load_teacher(config: Config, dataset: Any, device: torch.device) -> Teacher:
    """The teacher named by `teacher_key(config)` (cd.teacher, ect.teacher or scm.teacher): a teacher checkpoint,
    `exact` for a Gaussian mixture's denoiser, or a diffusers folder (`interop.diffusers`).

    A DDPM/DDIM pipeline teacher is mapped VP → VE; the student is the configured network with random weights
    (the ε-network's parameterization differs). A bare UNet2DModel teacher is F_θ of an EDM denoiser (openai
    c_noise, diffusion.sigma_data); the student takes its architecture (the matching U-Net preset) and weights.
    """
    from ..interop import is_diffusers_folder
    from .checkpoint import load_checkpoint

    key = teacher_key(config)
    source = getattr(config, key.partition(".")[0]).teacher
    if source == "exact":
        mixture = getattr(dataset, "mixture", None)
        if mixture is None:
            raise ConfigError(f"{key} = 'exact' needs Gaussian-mixture data; {config.data.name} has none")
        return Teacher(mixture.to(device).denoiser, None, None, None)
    if is_diffusers_folder(source):
        from ..interop.diffusers import diffusers_student_config, load_diffusers_teacher

        d = config.diffusion
        denoiser, info = load_diffusers_teacher(source, device, d.sigma_data, d.sigma_min)
        student = diffusers_student_config(config, info, dataset.sample_shape)
        weights = info.initial_weights if student is not None else None
        return Teacher(denoiser.requires_grad_(False), weights, student, info.sample_shape)
    checkpoint = load_checkpoint(source)
    if checkpoint.config.train.method != "teacher":
        raise CheckpointError(f"{key} {source} is a {checkpoint.config.train.method} checkpoint, not a teacher")
    if tuple(checkpoint.sample_shape) != tuple(dataset.sample_shape):
        raise CheckpointError(
            f"{key} {source} was trained on samples of shape {tuple(checkpoint.sample_shape)}, "
            f"the data ({config.data.name}) has {tuple(dataset.sample_shape)}"
        )
    denoiser = checkpoint.build_model().to(device).requires_grad_(False)
    weights = checkpoint.weights[checkpoint.default_weights()]
    return Teacher(denoiser, weights, checkpoint.config, checkpoint.sample_shape)


def student_config(config: Config, teacher: Teacher) -> Config:
    """The config with the teacher's network and conditioning: the student (CD, ECT, sCM) starts from its weights."""
    if teacher.config is None:
        return config
    config.network = teacher.config.network
    config.diffusion.sigma_data = teacher.config.diffusion.sigma_data
    config.diffusion.noise_conditioning = teacher.config.diffusion.noise_conditioning
    return config


class Method(Protocol):
    """What the loop and the trainer need of a training method."""

    config: Config
    parameterization: str  # denoiser | consistency | trigflow: how the trained network is wrapped
    uses_target: bool  # whether θ⁻ is a separate EMA network; if not, the target is θ under no_grad

    def draw(self, step: int, batch: int, shape: tuple[int, ...], generator: torch.Generator) -> Draws: ...

    def loss(self, model: Network, target: Network, x0: torch.Tensor, draws: Draws, step: int) -> torch.Tensor: ...

    def target_rate(self, step: int) -> float: ...

    def log_values(self, step: int) -> dict[str, Any]: ...


TEACHER_KEYS = {"cd": "cd.teacher", "ect": "ect.teacher", "scm": "scm.teacher"}


def teacher_key(config: Config) -> str:
    """The config key that names the run's teacher (each method that takes one has its own); "" for none."""
    return TEACHER_KEYS.get(config.train.method, "")


def needs_teacher(config: Config, resuming: bool) -> bool:
    """Whether to load the teacher: its denoiser for CD and sCD; its weights for ECT and sCT only at the start."""
    key = teacher_key(config)
    if not key or not getattr(config, key.partition(".")[0]).teacher:
        return False
    return config.train.method == "cd" or (config.train.method == "scm" and config.scm.mode == "scd") or not resuming


def build_method(config: Config, teacher: Teacher | None) -> Method:
    """The method named by train.method."""
    from .improved import ContinuousTimeConsistency, EasyConsistencyTuning, ImprovedConsistencyTraining

    method = config.train.method
    if method == "teacher":
        return TeacherTraining(config)
    if method == "cd":
        assert teacher is not None, "CD needs a teacher"
        return ConsistencyDistillation(config, teacher.denoiser)
    if method == "ict":
        return ImprovedConsistencyTraining(config)
    if method == "ect":
        return EasyConsistencyTuning(config)
    if method == "scm":
        distilling = config.scm.mode == "scd"
        assert teacher is not None or not distilling, "sCD needs a teacher"
        return ContinuousTimeConsistency(config, teacher.denoiser if distilling else None)
    return ConsistencyTraining(config)
