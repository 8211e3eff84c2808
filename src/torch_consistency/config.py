"""Typed configuration: dataclasses built from nested dicts (TOML, JSON), saved in checkpoints, and the range of
every numeric key. Reading a TOML file with `--set` overrides and checking the names a config uses against the
registries of what they name (datasets, networks, solvers ...) is `configs.load_config` and `configs.validate`.

Every section exists in every config (unused ones keep their defaults), so a checkpoint's config.json is
complete and nothing has to be repeated on the command line.
"""

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

METHODS = ("teacher", "cd", "ct", "ict", "ect", "scm")  # train.method: each but ct has its section of the same name
SCM_MODES = ("sct", "scd")  # scm.mode


@dataclass
class DiffusionConfig:
    """Noise levels and scalings (reference.md §1–2)."""

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    rho: float = 7.0
    noise_conditioning: str = "openai"  # openai: 250·ln σ; edm: ln(σ)/4


@dataclass
class NetworkConfig:
    """The network F_θ: `mlp` for vectors of any dimension, `unet` (diffusers' UNet2DModel) for images. A student
    that starts from a teacher checkpoint's weights (CD, ECT, sCM) has the teacher's network but its own dropout."""

    kind: str = "mlp"
    width: int = 256
    depth: int = 4
    embedding_dim: int = 64
    embedding: str = "positional"  # positional | fourier
    fourier_scale: float = 16.0
    dropout: float = 0.0
    preset: str = "small"  # U-Net preset: tiny, small (small-half, small-twice), cifar10, imagenet64
    class_conditional: bool = False  # condition on the data's labels


@dataclass
class DataConfig:
    """Which data to train on: a low-dimensional distribution or images (reference.md §14)."""

    name: str = "eight_gaussians"  # toys, gmm (exact denoiser), digits, mnist, cifar10, folder, npz
    dim: int = 2  # gmm only
    components: int = 8  # gmm only
    component_std: float = 0.05  # gmm and eight_gaussians
    path: str = ""  # mnist, cifar10, folder, npz
    resolution: int = 0  # folder: resize and centre-crop to this size (0 = keep; sizes must then agree)
    channels: int = 3  # folder: 1 = grey, 3 = RGB
    hflip: bool = False  # random horizontal flips
    colored: bool = False  # grey images drawn in a random colour each (a coloured-MNIST variant), as RGB
    holdout_fraction: float = 0.0  # keep this fraction of the images aside (a fixed random split)
    split: str = "train"  # train | holdout: which part of the split to use


@dataclass
class TeacherConfig:
    """EDM denoising objective (reference.md §3)."""

    p_mean: float = -1.2
    p_std: float = 1.2
    # classifier-free guidance (guidance.py): this fraction of the labels becomes the null class ∅ (index
    # num_classes, an embedding of its own) during training, so the teacher is also D(x, σ, ∅); needs
    # network.class_conditional. A student (CD, ECT, sCM) copies this section from its teacher.
    label_dropout: float = 0.0


@dataclass
class DistillationConfig:
    """Consistency distillation (reference.md §4)."""

    teacher: str = ""  # a teacher checkpoint, or "exact" for the data's closed-form denoiser
    num_points: int = 18  # N
    grow_from: int = 0  # > 0: N(k) grows from this to num_points over the run, as CT's N(k) (§5); 0: N fixed
    solver: str = "heun"  # euler | heun | dpmpp-2m (multistep through the substeps: one call each; needs k ≥ 2)
    # k: the teacher's step from σ_{n+1} to σ_n is k solver steps at equal strides of σ^{1/ρ}, the levels of the
    # ((N−1)k + 1)-point Karras grid: a coarse consistency grid with a fine teacher (1: one step, the paper)
    teacher_substeps: int = 1
    target_ema: float = 0.0  # μ; 0 = stop-gradient of the current weights
    distance: str = "l2"  # l2 | l1 | pseudo-huber | lpips | teacher-features
    weighting: str = "uniform"
    lpips_weights: str = ""  # lpips: "VGG16.pth,LPIPS_HEADS.pth" (torchvision's VGG16, the lpips package's vgg.pth)
    # teacher-features: LPIPS's form on the U-Net teacher's encoder, which sees the images at this σ
    # (nets/denoiser_features.py)
    feature_sigma: float = 0.5
    # > 0: an adversarial term λ·a·(−E[D(f_θ)]) joins the CD loss, D heads on the teacher U-Net's encoder trained
    # each step at this learning rate, a the adaptive weight (CTM, LADD; training/adversarial.py); 0: CD alone
    adversarial_weight: float = 0.0
    discriminator_lr: float = 2e-4
    # what the discriminator sees as fakes: pairs, the student's outputs on CD's pairs (no extra pass); one-step, its
    # one-step samples f_θ(σ_max·z, σ_max) (one more forward and backward pass of the student per step)
    adversarial_fakes: str = "pairs"
    # guided distillation (LCM; guidance.py): the teacher step uses D_w = D_∅ + w·(D_c − D_∅) of a teacher trained
    # with teacher.label_dropout > 0. none: D_c; input: w ~ U[guidance_min, guidance_max] per sample and the
    # student takes w as an input; fixed: w = guidance_min = guidance_max, no w input.
    guidance: str = "none"
    guidance_min: float = 1.0
    guidance_max: float = 1.0
    # guidance = input with guidance_min = 0: this fraction of the samples is distilled at w = 0 exactly, and the
    # student sees the null class ∅ wherever w = 0 (in training and sampling), so w = 0 is the teacher's unconditional
    # D_∅ whatever label is asked for, as it is for the teacher. 0: the labels are never replaced.
    unconditional_fraction: float = 0.0
    # guidance = input with guidance_min ≤ 1 ≤ guidance_max: this fraction of the samples is distilled at w = 1
    # exactly, the teacher's conditional D_c (after the unconditional fraction: together they stay below 1)
    conditional_fraction: float = 0.0


@dataclass
class ConsistencyTrainingConfig:
    """Consistency training and its N(k), μ(k) curriculum (reference.md §5).

    The defaults are the recipe that learned at short budgets (toy_ct, mnist_ct; docs/results/curves): the former
    bundled one (s1 = 40, μ0 = 0.95, squared L2) gave a ring on the 2-D data and nothing at 1 step on MNIST in 800
    steps. The paper's CIFAR-10 curriculum is s0 = 2, s1 = 150, μ0 = 0.9 (reference.md §5)."""

    s0: int = 10
    s1: int = 150
    mu0: float = 1e-4
    schedule: str = "code"  # code | paper
    distance: str = "pseudo-huber"
    weighting: str = "inverse-delta"


@dataclass
class ICTConfig:
    """Improved consistency training (reference.md §8): μ = 0 (the target is the current weights, gradient
    stopped), pairs of an N(k)-point Karras grid drawn from a discrete lognormal, weight 1/(σ_i − σ_{i+1}),
    pseudo-Huber distance with c = 0.00054·√dim, and the exponential curriculum N(k) = min(s0·2^⌊k/K'⌋, s1) + 1.

    iCT's small Fourier noise embedding is a network option: network.embedding = "fourier" with
    network.fourier_scale = 0.02 (MLP; the U-Net keeps its positional embedding). Dropout: network.dropout
    (0.3 on CIFAR-10), with the same mask in both passes. Evaluation EMAs are train.ema_rates (CIFAR 0.99993).
    """

    s0: int = 10
    s1: int = 1280
    p_mean: float = -1.1
    p_std: float = 2.0
    distance: str = "pseudo-huber"
    weighting: str = "inverse-delta"


@dataclass
class ECTConfig:
    """Easy consistency tuning (reference.md §9): start from a diffusion model's weights and shrink the gap t − r.

    t ~ lognormal(p_mean, p_std) clamped to [σ_min, σ_max]; r = max(0, t·(1 − q^{−(s+1)}·(1 + 8·sigmoid(−t))))
    at stage s = ⌊step/stage_steps⌋ (CIFAR-10: q = 2 and a stage every 25k steps; ImageNet-64: q = 4; for a short
    budget the bundled configs start from a large q in one stage, like the ECT repository's 1-hour recipe, q = 256);
    r < σ_min counts as r = 0 and its target is x0 itself. Loss (√(‖Δ‖² + c²) − c)/(t − r) with c = huber_c
    (0 on CIFAR-10, 0.06 on ImageNet-64); the target is the online network under no_grad (μ = 0).
    """

    teacher: str = ""  # a teacher checkpoint or diffusers folder whose weights ECT starts from; "" = random weights
    p_mean: float = -1.1
    p_std: float = 2.0
    q: float = 2.0
    stage_steps: int = 25_000  # d: iterations per stage
    huber_c: float = 0.0


@dataclass
class SCMConfig:
    """Continuous-time consistency models in TrigFlow form (reference.md §10): sCT (mode "sct", no teacher) or
    sCD (mode "scd", distilling the EDM teacher scm.teacher converted to a TrigFlow velocity).

    t from tan t = e^τ/σ_d with τ ~ N(p_mean, p_std²); r ramps 0 → 1 over tangent_warmup_steps; the tangent g
    is normalised as g/(‖g‖ + tangent_norm_c); a learned weighting w(t) is trained jointly (part of the model,
    unused by sampling). θ⁻ = stopgrad θ. Dropout (network.dropout) uses the same mask in the tangent pass.
    Train sCT with diffusion.noise_conditioning = "edm" (ln σ/4): the JVP differentiates through c_noise, and
    openai's 250·ln σ scales that derivative by 250, which drowns the tangent (the sCM paper's c_noise(t) = t
    rather than 1000t); the bundled *_scm configs do. sCD inherits its teacher's conditioning.
    """

    mode: str = "sct"  # sct | scd
    teacher: str = ""  # scd: a teacher checkpoint, diffusers folder or "exact"; sct: optional weights to start from
    p_mean: float = -1.0
    p_std: float = 1.4
    tangent_warmup_steps: int = 10_000
    tangent_norm_c: float = 0.1
    jvp_fp32: bool = True  # run the JVP pass in fp32 even when train.precision = "bf16"
    guidance: str = "none"  # sCD only: guided distillation as cd.guidance (none | input | fixed)
    guidance_min: float = 1.0
    guidance_max: float = 1.0
    unconditional_fraction: float = 0.0  # as cd.unconditional_fraction
    conditional_fraction: float = 0.0  # as cd.conditional_fraction


@dataclass
class OptimConfig:
    """Optimizer and batch."""

    optimizer: str = "radam"  # radam | adam
    lr: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0
    warmup_steps: int = 0
    decay: str = "none"  # none | cosine: after the warm-up, lr·(1 + cos(π·progress))/2, reaching 0 at the run's end
    grad_clip: float = 0.0  # 0 = no clipping
    batch_size: int = 256
    # a guided student's w embedding learns at this multiple of the learning rate (it starts at zero). At 10× the
    # w = 1 label rate comes closer to the teacher's but the 2-step FD at w = 2, 4 rises
    # (docs/results/guidance/w-embedding-lr-10)
    guidance_lr_scale: float = 1.0


@dataclass
class TrainConfig:
    """The run: method, length, seed, precision, checkpoints and logs."""

    method: str = "teacher"
    total_steps: int = 10_000
    seed: int = 0
    ema_rates: list[float] = field(default_factory=lambda: [0.999])
    # γ of the evaluation EMAs' power-function ramp min(rate, (1+k)/(γ+2+k)) (trainer.evaluation_ema_rate):
    # 8 averages about the last tenth of the run, 0 all of it (for CD as good and steadier: docs/results/curves)
    ema_power: float = 8.0
    precision: str = "fp32"  # fp32 | bf16
    device: str = "auto"
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    sample_every: int = 0  # write a picture of samples every this many steps (0 = never)
    tensorboard: bool = False  # also log to RUN/tensorboard (needs the tensorboard package)


@dataclass
class SamplingConfig:
    """Defaults for sampling from this model."""

    clip_denoised: bool = False  # clamp f to [-1, 1] (images)
    teacher_solver: str = "heun"
    teacher_steps: int = 18  # Karras levels before the final 0; Heun spends 2K−1 evaluations
    sigmas_2: list[float] = field(default_factory=list)  # 2-step σ's: searched (bundled or `cm eval --search-sigmas`)
    sigmas_3: list[float] = field(default_factory=list)  # 3-step σ's (empty: a Karras grid of steps + 1)
    guidance: float = 1.0  # default w for a model that takes guidance (a teacher with a null class, a w-input student)
    # torch.compile the network for sampling: 1.23–1.30× faster 1-step MNIST sampling on one CPU thread, equal to
    # 2e-6, after a compilation of 7–48 s (benchmarks/compile_speed.py); training steps gained ≤ 1.11×, so stay eager
    compile: bool = False


@dataclass
class Config:
    """Everything that defines a run."""

    train: TrainConfig = field(default_factory=TrainConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    cd: DistillationConfig = field(default_factory=DistillationConfig)
    ct: ConsistencyTrainingConfig = field(default_factory=ConsistencyTrainingConfig)
    ict: ICTConfig = field(default_factory=ICTConfig)
    ect: ECTConfig = field(default_factory=ECTConfig)
    scm: SCMConfig = field(default_factory=SCMConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Config":
        """Build from nested dicts (TOML or JSON); unknown sections or keys are errors."""
        return _build(cls, values, "")


def has_null_class(config: Config) -> bool:
    """Whether the network has the null class ∅ of classifier-free guidance (an extra embedding, index num_classes):
    a class-conditional teacher trained with label dropout, or a student that copied such a teacher's sections."""
    return config.network.class_conditional and config.teacher.label_dropout > 0


def guidance_section(config: Config) -> "DistillationConfig | SCMConfig | None":
    """The section with the run's guided-distillation settings: cd for CD, scm for sCD, None for other methods."""
    if config.train.method == "cd":
        return config.cd
    if config.train.method == "scm" and config.scm.mode == "scd":
        return config.scm
    return None


def has_guidance_input(config: Config) -> bool:
    """Whether the network takes the guidance scale w as an input (a CD or sCD student with guidance = input)."""
    section = guidance_section(config)
    return section is not None and section.guidance == "input"


def unconditional_at_zero(config: Config) -> bool:
    """Whether a guided student sees the null class ∅ wherever w = 0 (guidance = input, unconditional_fraction > 0)."""
    section = guidance_section(config)
    return has_guidance_input(config) and section is not None and section.unconditional_fraction > 0


MAGNITUDES = (1e-30, 1e30)  # non-zero numbers beyond these under- or overflow (squared, or in float32): refused


def _coerce(kind: Any, value: Any, key: str) -> Any:
    """`value` as type `kind`, or a ConfigError naming `key`."""
    origin = typing.get_origin(kind)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (item,) = typing.get_args(kind)
        return [_coerce(item, v, key) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        raise ConfigError(f"{key} = {value} lies outside TOML's 64-bit integers")
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer() and -(2**63) <= value < 2**63:
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            if value != 0 and not MAGNITUDES[0] <= abs(value) <= MAGNITUDES[1]:
                raise ConfigError(
                    f"{key} = {value}: non-zero numbers must be {MAGNITUDES[0]:g} … {MAGNITUDES[1]:g} in size"
                )
            return float(value)
    elif kind is str and isinstance(value, str):
        if "\0" in value:
            raise ConfigError(f"{key} contains a NUL character: {value!r}")
        return value
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    raise ConfigError(f"{key} must be {names.get(kind, kind)}, got {value!r}")


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a table, got {values!r}")
    hints = typing.get_type_hints(cls)
    unknown = set(values) - set(hints)
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{sorted(unknown)[0]}; known: {', '.join(hints)}")
    kwargs = {}
    for name, value in values.items():
        kind = hints[name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            kwargs[name] = _build(kind, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(kind, value, f"{prefix}{name}")
    return cls(**kwargs)


# The values each numeric key may take, in interval notation (relations between keys are checked in `validate`).
RANGES: dict[str, str] = {
    "train.total_steps": "[1, inf)", "train.seed": "[0, inf)", "train.checkpoint_every": "[1, inf)",
    "train.keep_checkpoints": "[1, inf)", "train.sample_every": "[0, inf)", "train.ema_rates": "[0, 1)",
    "train.ema_power": "[0, inf)",
    "diffusion.sigma_min": "(0, inf)", "diffusion.sigma_max": "(0, inf)", "diffusion.sigma_data": "(0, inf)",
    "diffusion.rho": "(0, inf)",
    "network.width": "[1, inf)", "network.depth": "[0, inf)", "network.embedding_dim": "[2, inf)",
    "network.fourier_scale": "(0, inf)", "network.dropout": "[0, 1)",
    "data.dim": "[1, inf)", "data.components": "[1, inf)", "data.component_std": "(0, inf)",
    "data.resolution": "[0, inf)", "data.channels": "[1, 3]", "data.holdout_fraction": "[0, 1)",
    "optim.lr": "(0, inf)", "optim.beta1": "[0, 1)", "optim.beta2": "[0, 1)", "optim.weight_decay": "[0, inf)",
    "optim.warmup_steps": "[0, inf)", "optim.grad_clip": "[0, inf)", "optim.batch_size": "[1, inf)",
    "optim.guidance_lr_scale": "(0, inf)",
    "teacher.p_mean": "(-inf, inf)", "teacher.p_std": "(0, inf)",
    "cd.num_points": "[2, inf)", "cd.grow_from": "[0, inf)", "cd.target_ema": "[0, 1)",
    "cd.teacher_substeps": "[1, inf)", "cd.feature_sigma": "(0, inf)",
    "cd.adversarial_weight": "[0, inf)", "cd.discriminator_lr": "(0, inf)",
    "ct.s0": "[1, inf)", "ct.s1": "[1, inf)", "ct.mu0": "[0, 1)",
    "ict.s0": "[1, inf)", "ict.s1": "[1, inf)", "ict.p_mean": "(-inf, inf)", "ict.p_std": "(0, inf)",
    "ect.p_mean": "(-inf, inf)", "ect.p_std": "(0, inf)", "ect.q": "(1, inf)", "ect.stage_steps": "[1, inf)",
    "ect.huber_c": "[0, inf)",
    "scm.p_mean": "(-inf, inf)", "scm.p_std": "(0, inf)", "scm.tangent_warmup_steps": "[0, inf)",
    "scm.tangent_norm_c": "(0, inf)",
    "teacher.label_dropout": "[0, 1)", "cd.guidance_min": "[0, inf)", "cd.guidance_max": "[0, inf)",
    "scm.guidance_min": "[0, inf)", "scm.guidance_max": "[0, inf)", "sampling.guidance": "[0, inf)",
    "cd.unconditional_fraction": "[0, 1)", "scm.unconditional_fraction": "[0, 1)",
    "cd.conditional_fraction": "[0, 1)", "scm.conditional_fraction": "[0, 1)",
    "sampling.teacher_steps": "[2, inf)", "sampling.sigmas_2": "(0, inf)", "sampling.sigmas_3": "(0, inf)",
}  # fmt: skip


def in_interval(value: float, interval: str) -> bool:
    """Whether `value` lies in an interval written "[a, b)", "(a, b]" …; a and b are numbers or ±inf."""
    low, high = (float(bound) for bound in interval[1:-1].split(", "))
    above = low <= value if interval[0] == "[" else low < value
    below = value <= high if interval[-1] == "]" else value < high
    return above and below
