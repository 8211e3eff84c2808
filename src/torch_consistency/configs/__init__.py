"""Configs: the ones shipped with the package (`cm train teacher toy_teacher ...` finds toy_teacher.toml here),
reading any config from TOML with `--set` overrides, and checking it: every value in its range (config.RANGES)
and every name against the registry of what it names, which lives with it (data.DATASETS, nets.NETWORK_KINDS,
solvers.SOLVERS ...)."""

import itertools
import math
import tomllib
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import METHODS, RANGES, SCM_MODES, Config, guidance_section, has_guidance_input, in_interval
from ..data import DATASETS, IMAGE_DATASETS, SPLITS
from ..devices import parse_device
from ..distances import DISTANCES
from ..embedding import EMBEDDINGS
from ..errors import ConfigError
from ..guidance import GUIDANCE_MODES
from ..nets import NETWORK_DISTANCES, NETWORK_KINDS
from ..objectives import WEIGHTINGS
from ..parameterization import NOISE_CONDITIONINGS
from ..schedules import CT_SCHEDULE_VARIANTS
from ..solvers import SOLVERS

FOLDER = Path(__file__).parent


def bundled_configs() -> list[str]:
    """Names of the shipped configs."""
    return sorted(p.stem for p in FOLDER.glob("*.toml"))


def config_path(name_or_path: str | Path) -> Path:
    """An existing file, else the shipped config of that name (with or without .toml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = FOLDER / f"{path.stem}.toml"
    if path.parent == Path(".") and bundled.is_file():
        return bundled
    raise ConfigError(f"config file {path} does not exist; the bundled configs are {', '.join(bundled_configs())}")


def _parse_override_value(text: str) -> Any:
    """A `--set` value: TOML syntax (numbers, booleans, lists, quoted strings), else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` strings to nested dicts (unknown keys are caught when the config is built)."""
    for override in overrides:
        key, sep, text = override.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise ConfigError(f"--set expects section.key=value, got {override!r}")
        section = values.setdefault(parts[0], {})
        if not isinstance(section, dict):
            raise ConfigError(f"unknown config section {parts[0]!r}")
        section[parts[1]] = _parse_override_value(text.strip())
    return values


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> "Config":
    """Read a TOML file (or start from defaults when `path` is None), apply overrides, validate."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            values = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
        except OSError as error:
            raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    config = Config.from_dict(apply_overrides(values, list(overrides)))
    validate(config)
    return config


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _one_of(value: str, choices: typing.Iterable[str], key: str) -> None:
    choices = tuple(choices)
    _require(value in choices, f"{key} = {value!r} is unknown; choose one of {', '.join(choices)}")


def validate(config: Config) -> None:
    """Raise ConfigError (one line) for the first value that is out of range or unknown, or values that conflict."""
    for key, interval in RANGES.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        for item in value if isinstance(value, list) else [value]:
            _require(in_interval(item, interval), f"{key} must lie in {interval}, got {value!r}")
    d, t, o, net, data = config.diffusion, config.train, config.optim, config.network, config.data
    _require(d.sigma_min < d.sigma_max, f"need 0 < sigma_min < sigma_max, got {d.sigma_min} and {d.sigma_max}")
    ends = [math.log(s) / d.rho for s in (d.sigma_min, d.sigma_max)]  # the Karras ramp runs in σ^(1/ρ) (§1)
    _require(
        all(abs(end) < 700 for end in ends) and math.exp(ends[0]) < math.exp(ends[1]),
        f"diffusion.rho = {d.rho} gives no Karras grid on [{d.sigma_min}, {d.sigma_max}]: σ^(1/ρ) over- or underflows",
    )
    _one_of(d.noise_conditioning, NOISE_CONDITIONINGS, "diffusion.noise_conditioning")
    _one_of(t.method, METHODS, "train.method")
    _require(len(set(t.ema_rates)) == len(t.ema_rates), f"train.ema_rates lists a rate twice: {t.ema_rates}")
    _one_of(t.precision, ("fp32", "bf16"), "train.precision")
    parse_device(t.device, "train.device")
    _one_of(net.kind, NETWORK_KINDS, "network.kind")
    _one_of(net.embedding, EMBEDDINGS, "network.embedding")
    _require(net.embedding_dim % 2 == 0, f"network.embedding_dim must be even (cos and sin), got {net.embedding_dim}")
    if net.kind == "unet":
        from ..nets.unet import UNET_PRESETS  # imports diffusers: only for U-Net configs

        _one_of(net.preset, UNET_PRESETS, "network.preset")
        _require(data.name in IMAGE_DATASETS, f"network.kind = 'unet' needs image data; {data.name} gives vectors "
                 "(use network.kind = 'mlp')")  # fmt: skip
    _one_of(data.name, DATASETS, "data.name")
    _require(data.channels in (1, 3), f"data.channels must be 1 (grey) or 3 (RGB), got {data.channels}")
    _one_of(data.split, SPLITS, "data.split")
    _require(data.split == "train" or data.holdout_fraction > 0, "data.split = 'holdout' needs holdout_fraction > 0")
    if data.name not in IMAGE_DATASETS:
        for key in ("hflip", "colored"):
            _require(not getattr(data, key), f"data.{key} applies to image data, not {data.name}")
    _one_of(o.optimizer, ("radam", "adam"), "optim.optimizer")
    _one_of(o.decay, ("none", "cosine"), "optim.decay")
    _validate_guidance(config)
    cd, ct = config.cd, config.ct
    _one_of(cd.solver, SOLVERS, "cd.solver")
    _require(
        cd.solver != "dpmpp-2m" or cd.teacher_substeps >= 2,
        f"cd.solver = 'dpmpp-2m' needs cd.teacher_substeps ≥ 2 (its first step is Euler), got {cd.teacher_substeps}",
    )
    _require(
        cd.grow_from == 0 or 2 <= cd.grow_from <= cd.num_points,
        f"cd.grow_from must be 0 (N fixed) or 2 ≤ cd.grow_from ≤ cd.num_points, got {cd.grow_from}",
    )
    _require(ct.s0 <= ct.s1, f"need 1 ≤ ct.s0 ≤ ct.s1, got {ct.s0} and {ct.s1}")
    _one_of(ct.schedule, CT_SCHEDULE_VARIANTS, "ct.schedule")
    for section in ("cd", "ct", "ict"):
        _one_of(getattr(config, section).distance, (*DISTANCES, *NETWORK_DISTANCES) if section == "cd" else DISTANCES,
                f"{section}.distance")  # fmt: skip
        _one_of(getattr(config, section).weighting, WEIGHTINGS, f"{section}.weighting")
    _validate_improved(config)
    _one_of(config.sampling.teacher_solver, SOLVERS, "sampling.teacher_solver")
    for steps in (2, 3):
        sigmas = getattr(config.sampling, f"sigmas_{steps}")
        decreasing = all(a > b for a, b in itertools.pairwise(sigmas))
        _require(
            not sigmas or (len(sigmas) == steps and decreasing and sigmas[-1] >= d.sigma_min),
            f"sampling.sigmas_{steps} must be empty or {steps} decreasing σ's ≥ sigma_min, got {sigmas}",
        )
    _require(
        cd.distance != "lpips" or bool(cd.lpips_weights),
        "cd.distance = 'lpips' needs cd.lpips_weights = 'VGG16.pth,LPIPS_HEADS.pth' (see nets/lpips.py)",
    )
    _require(
        cd.distance not in NETWORK_DISTANCES or data.name in IMAGE_DATASETS,
        f"cd.distance = {cd.distance!r} needs images: {data.name}",
    )
    _one_of(cd.adversarial_fakes, ("pairs", "one-step"), "cd.adversarial_fakes")
    _require(
        cd.adversarial_weight == 0 or data.name in IMAGE_DATASETS,
        f"cd.adversarial_weight > 0 needs images (its discriminator is the teacher U-Net's encoder): {data.name}",
    )
    if t.method == "cd":
        _require(
            bool(cd.teacher),
            "cd.teacher must name a teacher checkpoint (or 'exact' for Gaussian-mixture data)",
        )


def _validate_guidance(config: Config) -> None:
    """Label dropout and guided distillation (guidance.py)."""
    dropout = config.teacher.label_dropout
    _require(
        dropout == 0 or config.network.class_conditional,
        "teacher.label_dropout drops class labels: it needs network.class_conditional = true",
    )
    for name in ("cd", "scm"):
        section = getattr(config, name)
        _one_of(section.guidance, GUIDANCE_MODES, f"{name}.guidance")
        low, high = section.guidance_min, section.guidance_max
        _require(low <= high, f"need 0 ≤ {name}.guidance_min ≤ {name}.guidance_max, got {low} and {high}")
        if section.guidance == "input":
            _require(low < high, f"{name}.guidance = 'input' draws w from [{name}.guidance_min, {name}.guidance_max]: "
                                 f"give a range, got {low} and {high}")  # fmt: skip
        if section.guidance == "fixed":
            _require(low == high, f"{name}.guidance = 'fixed' uses one w: set {name}.guidance_min = "
                                  f"{name}.guidance_max = w, got {low} and {high}")  # fmt: skip
        if section.unconditional_fraction > 0:
            _require(section.guidance == "input" and low == 0,
                     f"{name}.unconditional_fraction distils w = 0 as the unconditional model: it needs "
                     f"{name}.guidance = 'input' and {name}.guidance_min = 0")  # fmt: skip
        if section.conditional_fraction > 0:
            _require(section.guidance == "input" and low <= 1 <= high,
                     f"{name}.conditional_fraction distils w = 1 as the conditional model: it needs "
                     f"{name}.guidance = 'input' and {name}.guidance_min ≤ 1 ≤ {name}.guidance_max")  # fmt: skip
            _require(section.unconditional_fraction + section.conditional_fraction < 1,
                     f"{name}.unconditional_fraction + {name}.conditional_fraction must stay below 1, got "
                     f"{section.unconditional_fraction + section.conditional_fraction:g}")  # fmt: skip
    _require(
        config.train.method != "scm" or config.scm.guidance == "none" or config.scm.mode == "scd",
        "scm.guidance distils a guided teacher: it needs scm.mode = 'scd'",
    )
    _require(
        config.optim.guidance_lr_scale == 1 or has_guidance_input(config),
        "optim.guidance_lr_scale scales the learning rate of a guided student's w embedding: it needs "
        "cd.guidance = 'input' (train.method = cd) or scm.guidance = 'input' (sCD)",
    )
    if has_guidance_input(config):
        section = guidance_section(config)
        assert section is not None  # has_guidance_input: a cd or scd section
        name = config.train.method
        _require(
            section.guidance_min <= config.sampling.guidance <= section.guidance_max,
            f"sampling.guidance = {config.sampling.guidance} (the default w when sampling) lies outside the trained "
            f"range [{section.guidance_min}, {section.guidance_max}] of {name}.guidance_min/max: set it inside",
        )


def _validate_improved(config: Config) -> None:
    """The iCT, ECT and sCM sections (reference.md §8–10)."""
    ict, ect, scm, method, d = config.ict, config.ect, config.scm, config.train.method, config.diffusion
    _require(ict.s0 <= ict.s1, f"need 1 ≤ ict.s0 ≤ ict.s1, got {ict.s0} and {ict.s1}")
    if method == "ict":  # iCT draws grid pairs by the lognormal's mass between them (reference.md §8)
        cdf = [math.erf((math.log(s) - ict.p_mean) / (math.sqrt(2) * ict.p_std)) for s in (d.sigma_min, d.sigma_max)]
        _require(cdf[1] > cdf[0], f"ict.p_mean = {ict.p_mean} and ict.p_std = {ict.p_std} put no probability on the "
                 f"noise levels [{d.sigma_min}, {d.sigma_max}]")  # fmt: skip
    _one_of(scm.mode, SCM_MODES, "scm.mode")
    if method == "ect":
        _require(ect.teacher != "exact", "ect.teacher = 'exact' has no weights to start from; name a teacher run")
    if method == "scm" and scm.mode == "scd":
        _require(bool(scm.teacher), "scm.mode = 'scd' needs scm.teacher (a teacher checkpoint, or 'exact')")
    if method == "scm" and scm.mode == "sct":
        _require(scm.teacher != "exact", "scm.teacher = 'exact' has no weights for sCT to start from")
