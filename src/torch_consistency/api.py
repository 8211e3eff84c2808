"""The workflows of the `cm` command as Python functions: `train` and `export_diffusers` (`evaluate` lives in
evaluation/run.py). The CLI parses its options and calls these; everything is checked before any work or write,
and bad input raises a `UserInputError` subclass."""

from collections.abc import Sequence
from pathlib import Path

from .config import Config
from .configs import config_path, load_config
from .errors import ConfigError


def train(
    config_or_name: Config | str | Path | None,
    out: str | Path,
    overrides: Sequence[str] = (),
    resume: bool = False,
    progress: bool = True,
    *,
    method: str | None = None,
    data_path: str | Path | None = None,
) -> Path:
    """Train a teacher, CD, CT, iCT, ECT or sCM model into the run folder `out` and return it.

    `config_or_name`: a `Config`, a TOML file, the name of a bundled config (`toy_teacher`, `mnist_cd`, ...) or None
    for the defaults; `overrides` are `SECTION.KEY=VALUE` strings as `cm train --set` takes them, `method` sets
    train.method. With `resume=True`, `out` is an existing run continued exactly from its saved config (then give
    no config, overrides or method); `data_path` reads a resumed run's data from there instead of its data.path.
    """
    from .training.build import check_network_overrides
    from .training.loop import train as train_run

    if resume:
        if config_or_name is not None or overrides or method is not None:
            raise ConfigError("resume takes the run folder alone (and data_path): its saved config is used")
        return train_run(None, out, resume=True, progress=progress, data_path=data_path)
    if data_path is not None:
        raise ConfigError("data_path goes with resume; a new run reads the override data.path=PATH")
    if isinstance(config_or_name, Config):
        if overrides or method is not None:
            raise ConfigError("overrides and method apply to a config file or name, not to a Config object")
        config = config_or_name
    else:
        path = None if config_or_name is None else config_path(config_or_name)
        method_override = [] if method is None else [f'train.method="{method}"']
        config = load_config(path, [*method_override, *overrides])
        check_network_overrides(config, overrides)
    return train_run(config, out, progress=progress)


def export_diffusers(run_or_checkpoint: str | Path, out: str | Path, weights: str | None = None) -> Path:
    """Write the consistency model (cd, ct, ict, ect; a UNet on square images) of a checkpoint or of a run's newest
    checkpoint as a folder that diffusers' `ConsistencyModelPipeline.from_pretrained(out)` loads; return `out`.
    `weights` is the weight set (online, target, ema-RATE; default the first EMA). `out` must not exist or be empty;
    it appears complete or not at all."""
    from .checkpoint import load_checkpoint
    from .files import check_output_folder
    from .interop.diffusers import export_diffusers as write_pipeline

    check_output_folder(out, "out")
    checkpoint = load_checkpoint(run_or_checkpoint)
    return write_pipeline(checkpoint, out, checkpoint.weight_set(weights))
