"""Checkpoints: safetensors weights plus JSON holding the whole config, written atomically.

Layout of a run folder:
    config.json                     the run's config
    log.jsonl                       one line per training step
    checkpoints/step-00001000/      a complete checkpoint (folders appear only by an atomic rename)
        meta.json                   format, step, config, sample shape, classes, saved weight sets
        weights.safetensors         "online/*", "target/*", "ema-0.999/*", ...
        training_state.pt           optimizer state, and adversarial CD's discriminator (tensors and numbers only)
"""

import dataclasses
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .config import Config, DataConfig
from .configs import validate
from .data import PATH_DATASETS
from .errors import CheckpointError, ConfigError, DataError, first_line
from .files import fsync_path, write_json_atomic
from .nets import build_model
from .parameterization import Preconditioned
from .schedules import ct_num_points, ict_num_points
from .trigflow import TrigFlowModel

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

    def weight_set(self, weights: str | None = None) -> str:
        """The name of the weight set `weights` (default: `default_weights()`); CheckpointError if it is not saved."""
        weights = weights or self.default_weights()
        if weights not in self.weights:
            raise CheckpointError(f"{self.path} has no weights {weights!r}; it has {', '.join(self.weights)}")
        return weights

    def build_model(self, weights: str | None = None) -> Preconditioned | TrigFlowModel:
        """The saved model with the weight set `weights` loaded (default: `default_weights()`)."""
        weights = self.weight_set(weights)
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
    load_weights(model.get_submodule("net"), {key.removeprefix("net."): value for key, value in state.items()}, source)


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
    """Record searched time points (steps → σ's) in the checkpoint's config, rewriting meta.json atomically
    (only its sampling.sigmas_N entries change)."""
    for steps, sigmas in found.items():
        setattr(checkpoint.config.sampling, f"sigmas_{steps}", [float(s) for s in sigmas])
    validate(checkpoint.config)
    meta_path = checkpoint.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    for steps in found:
        meta["config"]["sampling"][f"sigmas_{steps}"] = getattr(checkpoint.config.sampling, f"sigmas_{steps}")
    write_json_atomic(meta_path, meta)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def run_folder(checkpoint_path: str | Path) -> Path:
    """The run a checkpoint folder belongs to (RUN for RUN/checkpoints/step-N), else the folder itself."""
    path = Path(checkpoint_path)
    return path.parent.parent if path.parent.name == "checkpoints" else path


def received_data(config: Config, source: str | Path, data_path: str | Path | None = None) -> DataConfig:
    """The data a run or checkpoint received from `source` is read from: `data_path` when the user names it, else
    the data.path of its config, announced on stdout and refused (DataError) when it points inside the run folder
    itself: files that came with a run are read only when the user names them (docs/security.md)."""
    data = config.data
    if data.name not in PATH_DATASETS:
        if data_path is not None:
            raise ConfigError(f"--data-path applies to {', '.join(PATH_DATASETS)} data; {source} is on {data.name}")
        return data
    if data_path is not None:
        return dataclasses.replace(data, path=str(data_path))
    where, run = Path(data.path).resolve(), run_folder(source).resolve()
    if where == run or run in where.parents:
        raise DataError(
            f"data.path of {source} points inside the run folder itself ({where}); data that comes with a run is "
            f"read only when you name it: pass --data-path {where}"
        )
    print(f"reading {data.name} data from {where} (data.path in the config of {source}; --data-path to change)")
    return data


def load_checkpoint(path: str | Path, with_training_state: bool = False) -> Checkpoint:
    """Load a checkpoint folder, or the newest readable checkpoint of a run folder.

    A checkpoint that cannot be read (truncated, corrupt, a training state that does not load) is skipped in favour
    of the one before it, saying so on stderr.
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
            checkpoint = _load_one(candidate, with_training_state)
        except CheckpointError as error:
            errors.append(str(error))
            continue
        for skipped in errors:
            print(f"skipped an unreadable checkpoint: {skipped}; using {candidate.name}", file=sys.stderr)
        return checkpoint
    raise CheckpointError(f"no readable checkpoint in {path}: {errors[0]}")


def _read_meta(path: Path) -> dict[str, Any]:
    """meta.json, checked key by key: CheckpointError for a foreign, newer, incomplete or mistyped one."""
    meta_path = path / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is not a torch-consistency checkpoint (no meta.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise CheckpointError(f"{meta_path} is corrupt (not JSON)") from None
    except OSError as error:
        raise CheckpointError(f"cannot read {meta_path}: {error.strerror}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a torch-consistency checkpoint (meta.json has no format {FORMAT!r})")
    version = meta.get("version")
    if not isinstance(version, int) or not _is_count(version) or version < 1:  # isinstance: for the type checker
        raise CheckpointError(f"{meta_path} has no valid format version: {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written in checkpoint format {version} by a newer torch-consistency; this one reads "
            f"format {FORMAT_VERSION}: upgrade torch-consistency"
        )
    shape, weights = meta.get("sample_shape"), meta.get("weights")
    checks = {
        "step": _is_count(meta.get("step")),
        "config": isinstance(meta.get("config"), dict),
        "sample_shape": isinstance(shape, list) and len(shape) in (1, 3) and all(_is_count(n) and n > 0 for n in shape),
        "num_classes": _is_count(meta.get("num_classes")),
        "weights": isinstance(weights, list) and len(weights) > 0 and all(isinstance(w, str) for w in weights)
        and len(set(weights)) == len(weights),
        "extra": isinstance(meta.get("extra", {}), dict),
    }  # fmt: skip
    wrong = [key for key, ok in checks.items() if not ok]
    if wrong:
        raise CheckpointError(f"{meta_path} lacks or mistypes {', '.join(wrong)}: it is incomplete or damaged")
    return meta


def _is_count(value: object) -> bool:
    """An integer ≥ 0 (JSON's true and false are not counts)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _read_training_state(path: Path) -> dict[str, Any]:
    """training_state.pt through torch.load(weights_only=True): tensors, numbers and containers, never objects."""
    file = path / "training_state.pt"
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{file} is missing") from None
    except Exception as error:  # torch raises many kinds on corrupt or foreign files (UnpicklingError, RuntimeError…)
        raise CheckpointError(f"{file} is corrupt or not a training state: {first_line(error)[:200]}") from None
    optimizer = state.get("optimizer") if isinstance(state, dict) else None
    groups = optimizer.get("param_groups") if isinstance(optimizer, dict) else None
    if not (isinstance(optimizer, dict) and isinstance(groups, list) and isinstance(optimizer.get("state"), dict)
            and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups)):  # fmt: skip
        raise CheckpointError(f"{file} holds no optimizer state (state and param_groups)")
    return state


def _load_one(path: Path, with_training_state: bool) -> Checkpoint:
    meta = _read_meta(path)
    meta_path, weights_path = path / "meta.json", path / "weights.safetensors"
    try:
        config = Config.from_dict(meta["config"])
        validate(config)
    except ConfigError as error:
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
        extra["training_state"] = _read_training_state(path)
    return Checkpoint(
        path=path,
        step=meta["step"],
        config=config,
        sample_shape=tuple(meta["sample_shape"]),
        num_classes=meta["num_classes"],
        weights=weights,
        extra=extra,
    )
