"""What a run trains with: the method named by train.method (teacher, CD, CT in `methods`; iCT, ECT, sCM in
`improved`) and, for the methods that take one, the teacher (a checkpoint, a diffusers folder or a Gaussian
mixture's exact denoiser) with the student config and first weights it implies."""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..checkpoint import load_checkpoint
from ..config import Config, guidance_section, has_null_class
from ..embedding import GuidanceEmbedding
from ..errors import CheckpointError, ConfigError
from ..interop import is_diffusers_folder
from .improved import ContinuousTimeConsistency, EasyConsistencyTuning, ImprovedConsistencyTraining
from .methods import ConsistencyDistillation, ConsistencyTraining, Method, Network, TeacherTraining


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
    """The config with the teacher's network, conditioning and training section (its label dropout, hence its null
    class): the student (CD, ECT, sCM) starts from its weights. The student keeps its own network.dropout, which
    changes no weight. A guided student needs a teacher with a null class."""
    if teacher.config is not None:
        config.network = replace(teacher.config.network, dropout=config.network.dropout)
        config.teacher = teacher.config.teacher
        config.diffusion.sigma_data = teacher.config.diffusion.sigma_data
        config.diffusion.noise_conditioning = teacher.config.diffusion.noise_conditioning
    section = guidance_section(config)
    if section is not None and section.guidance != "none" and not has_null_class(config):
        key = teacher_key(config)
        raise ConfigError(
            f"{key.partition('.')[0]}.guidance = {section.guidance!r} needs D(x, σ, ∅): a class-conditional teacher "
            f"trained with teacher.label_dropout > 0; {key} = {getattr(config, key.partition('.')[0]).teacher} has none"
        )
    return config


def check_network_overrides(config: Config, overrides: Sequence[str]) -> None:
    """Refuse --set network.KEY=VALUE where VALUE differs from the teacher checkpoint's for a student that takes the
    teacher's network (`student_config`), rather than silently drop it; network.dropout stays the student's own."""
    key = teacher_key(config)
    source = getattr(config, key.partition(".")[0]).teacher if key else ""
    names = {override.partition("=")[0].strip() for override in overrides}
    names = {name for name in names if name.startswith("network.") and name != "network.dropout"}
    if not names or not source or source == "exact" or is_diffusers_folder(source):
        return
    theirs = load_checkpoint(source).config.network
    for name in sorted(names):
        field = name.partition(".")[2]
        ours, teachers = getattr(config.network, field), getattr(theirs, field)
        if ours != teachers:
            raise ConfigError(
                f"{name} = {ours!r} cannot be set for a {config.train.method} student: it starts from its teacher's "
                f"weights and has the teacher's network ({name} = {teachers!r} in {key} = {source}); only "
                "network.dropout is its own"
            )


def student_initial_weights(
    model: torch.nn.Module, teacher_weights: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The teacher's weights plus the student's own fresh w-embedding (a guided student has one, its teacher none)."""
    own = {
        f"{name}.{key}": value
        for name, module in model.named_modules()
        if isinstance(module, GuidanceEmbedding)
        for key, value in module.state_dict().items()
    }
    return {**own, **teacher_weights}


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


def build_method(config: Config, teacher: Teacher | None, num_classes: int = 0) -> Method:
    """The method named by train.method, for data with `num_classes` classes (0: unconditional)."""
    method = config.train.method
    if method == "teacher":
        return TeacherTraining(config, num_classes)
    if method == "cd":
        assert teacher is not None, "CD needs a teacher"
        return ConsistencyDistillation(config, teacher.denoiser, num_classes)
    if method == "ict":
        return ImprovedConsistencyTraining(config)
    if method == "ect":
        return EasyConsistencyTuning(config)
    if method == "scm":
        distilling = config.scm.mode == "scd"
        assert teacher is not None or not distilling, "sCD needs a teacher"
        return ContinuousTimeConsistency(config, teacher.denoiser if teacher and distilling else None, num_classes)
    return ConsistencyTraining(config)
