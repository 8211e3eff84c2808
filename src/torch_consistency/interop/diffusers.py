"""diffusers in and out: export a consistency model as a `ConsistencyModelPipeline` folder, and load diffusers
teachers (DDPM/DDIM pipelines, bare `UNet2DModel` folders) as EDM denoisers D(x, σ) for CD.

VP ↔ VE (reference.md §1): a DDPM sample x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε equals x_σ/√(1+σ²) for the VE sample
x_σ = x0 + σ·ε with σ_t = √((1−ᾱ_t)/ᾱ_t), so an ε-network trained on discrete steps t is a denoiser at any σ.
"""

import copy
import inspect
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import CMStochasticIterativeScheduler, ConsistencyModelPipeline, UNet2DModel
from torch import nn

from ..checkpoint import Checkpoint, load_checkpoint
from ..config import Config, has_guidance_input
from ..errors import CheckpointError, ConfigError
from ..files import fsync_path
from ..nets.unet import UNET_PRESETS, UNet
from ..parameterization import Preconditioned, append_dims

TEACHER_PIPELINES = ("DDPMPipeline", "DDIMPipeline")
TEACHER_SCHEDULERS = ("DDPMScheduler", "DDIMScheduler")


# ---- export --------------------------------------------------------------------------------------------------


def export_diffusers(checkpoint: Checkpoint | str | Path, out_dir: str | Path, weights: str | None = None) -> Path:
    """Write `out_dir` so that `ConsistencyModelPipeline.from_pretrained(out_dir)` samples this consistency model.

    The folder holds `unet/` (the UNet2DModel with the weight set `weights`, default the first EMA, safetensors)
    and `scheduler/` = CMStochasticIterativeScheduler(num_train_timesteps = the final training N, σ_min, σ_max,
    σ_data, ρ, clip_denoised), whose scalings and c_noise = 250·ln σ equal ours (reference.md §2), plus
    `export.json` recording the source. It appears by an atomic rename of a fsynced temporary sibling.
    """
    checkpoint = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    config, out_dir = checkpoint.config, Path(out_dir)
    _check_exportable(checkpoint)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConfigError(f"{out_dir} already exists and is not empty; choose a new folder")
    weights = weights or checkpoint.default_weights()
    unet: UNet2DModel = checkpoint.build_model(weights).net.unet
    kwargs = {key: value for key, value in unet.config.items() if not key.startswith("_")}
    kwargs["sample_size"] = checkpoint.sample_shape[1]  # the pipeline wants one int for square images
    exported = UNet2DModel(**kwargs)
    exported.load_state_dict(unet.state_dict())
    d, grid_points = config.diffusion, checkpoint.grid_points()
    scheduler = CMStochasticIterativeScheduler(
        num_train_timesteps=grid_points, sigma_min=d.sigma_min, sigma_max=d.sigma_max, sigma_data=d.sigma_data,
        rho=d.rho, clip_denoised=config.sampling.clip_denoised,
    )  # fmt: skip
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    temporary = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        ConsistencyModelPipeline(unet=exported, scheduler=scheduler).save_pretrained(temporary, safe_serialization=True)
        source = {"source": str(checkpoint.path), "step": checkpoint.step, "weights": weights}
        (temporary / "export.json").write_text(json.dumps({**source, "num_train_timesteps": grid_points}, indent=2))
        for folder, _, files in os.walk(temporary, topdown=False):
            for name in files:
                fsync_path(Path(folder) / name)
            fsync_path(Path(folder))
        os.rename(temporary, out_dir)  # replaces an empty folder; fails if one appeared non-empty meanwhile
    except OSError as error:
        raise ConfigError(f"cannot write {out_dir}: {error}") from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    fsync_path(out_dir.parent)
    return out_dir


def _check_exportable(checkpoint: Checkpoint) -> None:
    """Raise a one-line CheckpointError when ConsistencyModelPipeline cannot run this checkpoint."""
    config, where = checkpoint.config, checkpoint.path
    if checkpoint.parameterization != "consistency":
        raise CheckpointError(
            f"{where} is a {config.train.method} model ({checkpoint.parameterization}); ConsistencyModelPipeline "
            "needs a consistency model f(x, σ) (cd, ct, ict or ect)"
        )
    if config.network.kind != "unet":
        raise CheckpointError(f"{where} uses network.kind = {config.network.kind!r}; diffusers export needs a unet")
    if has_guidance_input(config):
        raise CheckpointError(
            f"{where} takes the guidance scale w as an input (a guided student); UNet2DModel and "
            "ConsistencyModelPipeline have no such input, so it does not export"
        )
    if config.diffusion.noise_conditioning != "openai":
        raise CheckpointError(
            f"{where} uses noise_conditioning = {config.diffusion.noise_conditioning!r} (ln σ/4); diffusers' "
            "CMStochasticIterativeScheduler feeds 250·ln σ, so only 'openai'-conditioned models export"
        )
    _, height, width = checkpoint.sample_shape
    if height != width:
        raise CheckpointError(f"{where} makes {height}×{width} images; ConsistencyModelPipeline needs square ones")


# ---- teachers: the VP ↔ VE mapping ----------------------------------------------------------------------------


def vp_sigmas(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """σ_t = √((1 − ᾱ_t)/ᾱ_t): the VE noise level of discrete DDPM step t (VP ↔ VE), in float64."""
    alphas = alphas_cumprod.double()
    return ((1 - alphas) / alphas).sqrt()


def vp_input_scale(sigma: torch.Tensor) -> torch.Tensor:
    """√ᾱ = 1/√(1+σ²): x_t = x_σ/√(1+σ²) is the DDPM network's input for the VE sample x_σ."""
    return (1 + sigma**2).rsqrt()


def continuous_timestep(sigma: torch.Tensor, log_sigmas: torch.Tensor) -> torch.Tensor:
    """t = i + (ln σ − ln σ_i)/(ln σ_{i+1} − ln σ_i) for σ_i ≤ σ ≤ σ_{i+1}, clamped to [0, T−1] (k-diffusion's
    DiscreteSchedule.sigma_to_t); `log_sigmas` is the ascending table ln σ_0 .. ln σ_{T−1}."""
    log_sigma = sigma.to(log_sigmas).log().clamp(log_sigmas[0], log_sigmas[-1])
    high = torch.searchsorted(log_sigmas, log_sigma.contiguous()).clamp(1, len(log_sigmas) - 1)
    low = high - 1
    return low + (log_sigma - log_sigmas[low]) / (log_sigmas[high] - log_sigmas[low])


def denoised_from_epsilon(x: torch.Tensor, sigma: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """D = x − σ·ε̂ (x_σ = x0 + σε)."""
    return x - sigma * output


def denoised_from_v(x: torch.Tensor, sigma: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """D = √ᾱ·x_t − √(1−ᾱ)·v̂ = x/(1+σ²) − σ/√(1+σ²)·v̂ (v-prediction, x_t = x/√(1+σ²))."""
    return x / (1 + sigma**2) - sigma * vp_input_scale(sigma) * output


def denoised_from_sample(x: torch.Tensor, sigma: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """D = x̂0 (the network predicts the clean sample)."""
    return output


PREDICTIONS = {"epsilon": denoised_from_epsilon, "v_prediction": denoised_from_v, "sample": denoised_from_sample}


class DiscreteVPDenoiser(nn.Module):
    """D(x, σ) from a DDPM/DDIM U-Net: out = unet(x/√(1+σ²), t(σ)), then D = x − σ·out for ε-prediction.

    t(σ) is `continuous_timestep` over the scheduler's table σ_t = √((1−ᾱ_t)/ᾱ_t); σ outside the table's range
    is clamped to its ends (σ_0 ≈ 0.01 and σ_999 ≈ 157 for the default linear betas). A U-Net with learned
    variances (2C output channels) contributes its first C channels.
    """

    def __init__(self, unet: UNet2DModel, alphas_cumprod: torch.Tensor, prediction_type: str = "epsilon") -> None:
        super().__init__()
        if prediction_type not in PREDICTIONS:
            raise ValueError(f"unknown prediction_type {prediction_type!r}; choose one of {', '.join(PREDICTIONS)}")
        self.unet = unet
        self.prediction_type = prediction_type
        self.sigmas: torch.Tensor
        self.log_sigmas: torch.Tensor
        self.register_buffer("sigmas", vp_sigmas(alphas_cumprod), persistent=False)
        self.register_buffer("log_sigmas", self.sigmas.log(), persistent=False)

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """The continuous DDPM timestep of noise level σ (`continuous_timestep`)."""
        return continuous_timestep(torch.as_tensor(sigma, device=self.log_sigmas.device), self.log_sigmas)

    def forward(
        self, x: torch.Tensor, sigma: torch.Tensor | float, class_labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float64)
        sigma = sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma
        scale = append_dims(vp_input_scale(sigma), x.ndim).to(x.dtype)
        output = self.unet(x * scale, self.sigma_to_t(sigma).to(x.dtype), class_labels=class_labels).sample
        output = output[:, : x.shape[1]]
        return PREDICTIONS[self.prediction_type](x, append_dims(sigma, x.ndim).to(x.dtype), output.to(x.dtype))


# ---- teachers: loading -----------------------------------------------------------------------------------------


@dataclass
class DiffusersTeacherInfo:
    """What a diffusers teacher is: `kind` "ddpm" (a DDPM/DDIM pipeline) or "unet" (a bare UNet2DModel as F_θ)."""

    kind: str
    path: Path
    sample_shape: tuple[int, int, int]  # (C, H, W) from the U-Net's config
    num_class_embeds: int | None
    unet_config: dict[str, Any]
    prediction_type: str | None = None  # ddpm: epsilon, v_prediction or sample
    sigma_range: tuple[float, float] | None = None  # ddpm: the table's σ_0 and σ_{T−1}
    initial_weights: dict[str, torch.Tensor] | None = None  # unet: the state dict of Preconditioned(UNet(unet))


def load_diffusers_teacher(
    path: str | Path, device: torch.device | str = "cpu", sigma_data: float = 0.5, sigma_min: float = 0.002
) -> tuple[nn.Module, DiffusersTeacherInfo]:
    """A diffusers folder as an EDM denoiser D(x, σ), and what it is.

    A DDPM/DDIM pipeline folder becomes a `DiscreteVPDenoiser` (VP ↔ VE mapping). A bare UNet2DModel folder
    becomes F_θ of an EDM denoiser, `Preconditioned(UNet(unet), "denoiser", sigma_data, sigma_min, "openai")`:
    D = c_skip·x + c_out·F(c_in·x, 250·ln σ) (reference.md §2), and its state dict is returned as
    `info.initial_weights` for a student of the same architecture.
    """
    path = Path(path)
    if (path / "model_index.json").is_file():
        unet, scheduler, prediction_type = _load_pipeline(path)
        vp = DiscreteVPDenoiser(unet, scheduler.alphas_cumprod, prediction_type)
        denoiser: nn.Module = vp
        sigmas = vp.sigmas
        info = _info("ddpm", path, unet, prediction_type=prediction_type, sigma_range=(sigmas[0], sigmas[-1]))
    elif (path / "config.json").is_file():
        unet = _load_unet(path)
        denoiser = Preconditioned(UNet(unet), "denoiser", sigma_data, sigma_min, "openai")
        info = _info("unet", path, unet, initial_weights=dict(denoiser.state_dict()))
    else:
        raise CheckpointError(
            f"{path} is not a diffusers teacher: expected model_index.json (a DDPMPipeline or DDIMPipeline folder) "
            "or config.json of a UNet2DModel"
        )
    return denoiser.to(device).eval(), info


def _info(kind: str, path: Path, unet: UNet2DModel, **extra: Any) -> DiffusersTeacherInfo:
    config = dict(unet.config)
    size, channels = config.get("sample_size"), config["in_channels"]
    if isinstance(size, int):
        size = (size, size)
    if not isinstance(size, (list, tuple)) or len(size) != 2:
        raise CheckpointError(f"{path}: the UNet2DModel config has no sample_size, so its image size is unknown")
    outputs = config["out_channels"]
    if outputs not in ((channels,) if kind == "unet" else (channels, 2 * channels)):
        raise CheckpointError(f"{path}: a UNet2DModel with {channels} input channels cannot output {outputs}")
    if kind == "ddpm" and config.get("time_embedding_type") == "learned":
        raise CheckpointError(f"{path}: a learned (table) time embedding cannot take the continuous timesteps t(σ)")
    if "sigma_range" in extra:
        extra["sigma_range"] = tuple(float(s) for s in extra["sigma_range"])
    return DiffusersTeacherInfo(kind, path, (channels, *size), config.get("num_class_embeds"), config, **extra)


def _read_json(file: Path) -> dict[str, Any]:
    try:
        values = json.loads(file.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{file} is missing") from None
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{file} is not readable JSON: {error}") from None
    if not isinstance(values, dict):
        raise CheckpointError(f"{file} is not a JSON object")
    return values


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())[:300]


def _load_unet(folder: Path) -> UNet2DModel:
    name = _read_json(folder / "config.json").get("_class_name")
    if name != "UNet2DModel":
        raise CheckpointError(f"{folder}/config.json describes {name!r}; expected a UNet2DModel")
    if not any(folder.glob("*.safetensors")):  # a .bin is a pickle: never read (docs/security.md)
        raise CheckpointError(
            f"{folder}: cannot load the UNet2DModel: no .safetensors weights; diffusers teachers are read from "
            "safetensors only (a .bin is a pickle). If you trust it: UNet2DModel.from_pretrained(F).save_pretrained(F)"
        )
    try:
        return UNet2DModel.from_pretrained(folder, use_safetensors=True)
    except (OSError, ValueError, RuntimeError, TypeError, KeyError) as error:
        raise CheckpointError(f"{folder}: cannot load the UNet2DModel: {_one_line(error)}") from None


def _load_pipeline(path: Path) -> tuple[UNet2DModel, Any, str]:
    index = _read_json(path / "model_index.json")
    if index.get("_class_name") not in TEACHER_PIPELINES:
        raise CheckpointError(
            f"{path}/model_index.json names {index.get('_class_name')!r}; a teacher must be a "
            f"{' or '.join(TEACHER_PIPELINES)} (or a bare UNet2DModel folder)"
        )
    entry = index.get("scheduler")
    name = entry[1] if isinstance(entry, list) and len(entry) == 2 else None
    if name not in TEACHER_SCHEDULERS:
        raise CheckpointError(f"{path}: the scheduler is {name!r}; expected one of {', '.join(TEACHER_SCHEDULERS)}")
    unet = _load_unet(path / "unet")
    try:
        scheduler = getattr(diffusers, name).from_config(_read_json(path / "scheduler" / "scheduler_config.json"))
    except (ValueError, TypeError, NotImplementedError) as error:
        raise CheckpointError(f"{path}/scheduler: cannot build the {name}: {_one_line(error)}") from None
    prediction_type = scheduler.config.prediction_type
    if prediction_type not in PREDICTIONS:
        raise CheckpointError(f"{path}: prediction_type {prediction_type!r} is not one of {', '.join(PREDICTIONS)}")
    if not bool((scheduler.alphas_cumprod > 0).all()):
        raise CheckpointError(f"{path}: the schedule reaches ᾱ = 0 (zero terminal SNR), where σ = √((1−ᾱ)/ᾱ) is ∞")
    return unet, scheduler, prediction_type


# ---- teachers: the CD student ----------------------------------------------------------------------------------


def matching_unet_preset(
    unet_config: dict[str, Any], sample_shape: tuple[int, ...], preferred: str | None = None
) -> str | None:
    """The U-Net preset (nets.unet) that builds this UNet2DModel architecture for unconditional images, or None."""
    signature = inspect.signature(UNet2DModel.__init__).parameters.values()
    defaults = {p.name: p.default for p in signature if p.default is not inspect.Parameter.empty}

    def plain(value: Any) -> Any:
        return list(value) if isinstance(value, (list, tuple)) else value

    channels = sample_shape[0]
    for name in sorted(UNET_PRESETS, key=lambda preset: preset != preferred):
        expected = {**defaults, **UNET_PRESETS[name], "in_channels": channels, "out_channels": channels}
        for free in ("sample_size", "dropout"):  # these do not change the weights
            expected.pop(free)
        if all(plain(unet_config.get(key, value)) == plain(value) for key, value in expected.items()):
            return name
    return None


def diffusers_student_config(config: Config, info: DiffusersTeacherInfo, data_shape: tuple[int, ...]) -> Config | None:
    """Check the teacher against the data; return the student's config when it starts from the teacher's weights.

    A DDPM/DDIM teacher gives None: its ε-network has another parameterization (input √ᾱ·x, t ∈ [0, T−1],
    output ε) than a consistency student (c_in·x, 250·ln σ, c_out-scaled output), so the student is the
    configured network with random weights. A bare U-Net gives a copy of `config` with its preset and the
    openai conditioning, so the student starts from its weights; if no preset builds its architecture,
    None (random start, with a warning).
    """
    if tuple(data_shape) != info.sample_shape:
        raise CheckpointError(f"teacher {info.path} makes {info.sample_shape} images; the data has {tuple(data_shape)}")
    if info.num_class_embeds is not None:
        raise CheckpointError(
            f"teacher {info.path} is class-conditional; diffusers teachers must be unconditional (train a "
            "class-conditional teacher with `cm train teacher --set network.class_conditional=true`)"
        )
    if info.kind != "unet":
        return None
    preferred = config.network.preset if config.network.kind == "unet" else None
    preset = matching_unet_preset(info.unet_config, info.sample_shape, preferred)
    if preset is None:
        warnings.warn(f"no U-Net preset matches {info.path}; the student starts from random weights", stacklevel=2)
        return None
    student = copy.deepcopy(config)
    student.network.kind, student.network.preset = "unet", preset
    student.diffusion.noise_conditioning = "openai"
    return student
