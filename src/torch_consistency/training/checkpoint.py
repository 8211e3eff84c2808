"""Checkpoints: safetensors weights plus JSON holding the whole config, written atomically.

Layout of a run folder:
    config.json                     the run's config
    log.jsonl                       one line per training step
    checkpoints/step-00001000/      a complete checkpoint (folders appear only by an atomic rename)
        meta.json                   format, step, config, sample shape, classes, saved weight sets
        weights.safetensors         "online/*", "target/*", "ema-0.999/*", ...
        training_state.pt           optimizer state (tensors and numbers only)
"""

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import Config, validate
from ..errors import CheckpointError, ConfigError
from ..files import fsync_path, write_json_atomic
from ..nets import build_model
from ..parameterization import Preconditioned
from ..schedules import ct_num_points, ict_num_points
from ..trigflow import TrigFlowModel

FORMAT = "torch-consistency"
FORMAT_VERSION = 1
PREFIX = "step-"
PARAMETERIZATIONS = {"teacher": "denoiser", "scm": "trigflow"}  # train.method → model; others: consistency
CONTINUOUS_GRID_POINTS = 18


@dataclass
class Checkpoint:
    """A loaded checkpoint; `weights` maps a set name (online, target, ema-0.999) to a state dict."""

    path: Path
    step: int
    config: Config
    sample_shape: tuple[int, ...]
    num_classes: int
    weights: dict[str, dict[str, torch.Tensor]]
    extra: dict[str, Any]

    @property
    def parameterization(self) -> str:
        """denoiser (teachers), trigflow (sCM) or consistency (CD, CT, iCT, ECT)."""
        return PARAMETERIZATIONS.get(self.config.train.method, "consistency")

    def grid_points(self) -> int:
        """N of the grid the model was trained on: cd.num_points, CT's or iCT's final N(K); ECT and sCM train in
        continuous time and use CONTINUOUS_GRID_POINTS (for --ts, --timesteps and diffusers' scheduler)."""
        config, total = self.config, self.config.train.total_steps
        if config.train.method == "cd":
            return config.cd.num_points
        if config.train.method == "ict":
            return ict_num_points(total, total, config.ict.s0, config.ict.s1)
        if config.train.method in ("ect", "scm"):
            return CONTINUOUS_GRID_POINTS
        return ct_num_points(total, total, config.ct.s0, config.ct.s1)

    def default_weights(self) -> str:
        """The first evaluation EMA if one was kept, else the online weights."""
        emas = [name for name in self.weights if name.startswith("ema-")]
        return emas[0] if emas else "online"

    def build_model(self, weights: str | None = None) -> Preconditioned | TrigFlowModel:
        """The saved model with the weight set `weights` loaded (default: `default_weights()`)."""
        weights = weights or self.default_weights()
        if weights not in self.weights:
            raise CheckpointError(f"{self.path} has no weights {weights!r}; it has {', '.join(self.weights)}")
        model = build_model(self.config, self.parameterization, self.sample_shape, self.num_classes)
        load_weights(model, self.weights[weights], f"{self.path} ({weights})")
        return model.eval()


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a state dict, turning missing, unexpected or mis-shaped tensors into a CheckpointError."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not fit the configured network: "
            f"{len(missing)} missing tensors (e.g. {missing[:1]}), {len(unexpected)} unexpected (e.g. {unexpected[:1]})"
        )
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"{source}: tensor {name} has shape {tuple(tensor.shape)}, "
                f"the network needs {tuple(expected[name].shape)}"
            )
    model.load_state_dict(state)


def load_network_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a teacher's state dict (keys `net.*`) into the network of a Preconditioned or TrigFlow `model`."""
    load_weights(model.net, {key.removeprefix("net."): value for key, value in state.items()}, source)


def save_checkpoint(
    run_dir: Path,
    step: int,
    config: Config,
    sample_shape: tuple[int, ...],
    num_classes: int,
    modules: dict[str, nn.Module],
    training_state: dict[str, Any],
    keep: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write checkpoint `step` into run_dir/checkpoints atomically and keep only the newest `keep`."""
    folder = Path(run_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    final = folder / f"{PREFIX}{step:08d}"
    temporary = folder / f".tmp-{PREFIX}{step:08d}-{os.getpid()}"
    temporary.mkdir()
    tensors = {
        f"{name}/{key}": value.detach().contiguous().cpu()
        for name, module in modules.items()
        for key, value in module.state_dict().items()
    }
    save_file(tensors, temporary / "weights.safetensors", metadata={"format": FORMAT})
    torch.save(training_state, temporary / "training_state.pt")
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "step": step,
        "config": config.to_dict(),
        "sample_shape": list(sample_shape),
        "num_classes": num_classes,
        "weights": list(modules),
        "extra": extra or {},
    }
    (temporary / "meta.json").write_text(json.dumps(meta, indent=2))
    for file in temporary.iterdir():
        fsync_path(file)
    fsync_path(temporary)
    if final.exists():  # a rerun of the same step after a resume: replace it
        shutil.rmtree(final)
    os.rename(temporary, final)
    fsync_path(folder)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def store_sampling_sigmas(checkpoint: Checkpoint, found: dict[int, list[float]]) -> None:
    """Record searched time points (steps → σ's) in the checkpoint's config, rewriting meta.json atomically."""
    for steps, sigmas in found.items():
        setattr(checkpoint.config.sampling, f"sigmas_{steps}", [float(s) for s in sigmas])
    validate(checkpoint.config)
    meta_path = checkpoint.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["config"] = checkpoint.config.to_dict()
    write_json_atomic(meta_path, meta)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def load_checkpoint(path: str | Path, with_training_state: bool = False) -> Checkpoint:
    """Load a checkpoint folder, or the newest readable checkpoint of a run folder.

    A checkpoint that cannot be read (truncated, corrupt) is skipped in favour of the one before it.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if (path / "meta.json").exists() or (path / "weights.safetensors").exists():
        return _load_one(path, with_training_state)
    candidates = list_checkpoints(path)
    if not candidates:
        raise CheckpointError(f"{path} is neither a torch-consistency checkpoint nor a run folder with checkpoints")
    errors = []
    for candidate in reversed(candidates):
        try:
            return _load_one(candidate, with_training_state)
        except CheckpointError as error:
            errors.append(str(error))
    raise CheckpointError(f"no readable checkpoint in {path}: {errors[0]}")


def _load_one(path: Path, with_training_state: bool) -> Checkpoint:
    meta_path, weights_path = path / "meta.json", path / "weights.safetensors"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is not a torch-consistency checkpoint (no meta.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{meta_path} is corrupt (not JSON)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a torch-consistency checkpoint (meta.json has no format {FORMAT!r})")
    try:
        config = Config.from_dict(meta["config"])
        validate(config)
    except (ConfigError, KeyError) as error:
        raise CheckpointError(f"{meta_path} holds an invalid config: {error}") from None
    try:
        flat = load_file(weights_path)
    except FileNotFoundError:
        raise CheckpointError(f"{path} has no weights.safetensors") from None
    except (safetensors.SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights_path} is corrupt or truncated: {error}") from None
    weights: dict[str, dict[str, torch.Tensor]] = {name: {} for name in meta["weights"]}
    for key, tensor in flat.items():
        name, _, rest = key.partition("/")
        if name not in weights:
            raise CheckpointError(f"{weights_path} holds an unexpected weight set {name!r}")
        weights[name][rest] = tensor
    extra = dict(meta.get("extra", {}))
    if with_training_state:
        try:
            extra["training_state"] = torch.load(path / "training_state.pt", weights_only=True)
        except (FileNotFoundError, RuntimeError, EOFError, OSError) as error:
            raise CheckpointError(f"{path}/training_state.pt is missing or corrupt: {error}") from None
    return Checkpoint(
        path=path,
        step=int(meta["step"]),
        config=config,
        sample_shape=tuple(meta["sample_shape"]),
        num_classes=int(meta["num_classes"]),
        weights=weights,
        extra=extra,
    )
