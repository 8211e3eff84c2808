"""The training loop shared by teacher training, CD, CT, iCT, ECT and sCM. Read it top to bottom.

Every random number of step k is a pure function of (seed, k): the data batch, the method's draws and
the device RNG (dropout). A resumed run therefore continues exactly, and a run on several ranks sees
the same global batch as one process.
"""

import json
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..checkpoint import (
    Checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_network_weights,
    load_weights,
    received_data,
    save_checkpoint,
)
from ..config import Config
from ..configs import validate
from ..data import build_dataset
from ..devices import available_device
from ..errors import CheckpointError, ConfigError
from ..files import check_output_folder, write_json_atomic
from ..generate import sample_model
from ..plots import save_samples_picture
from ..seeding import STREAM_DEVICE, STREAM_INIT, STREAM_NOISE, derive_seed, step_generator
from . import distributed
from .build import build_method, load_teacher, needs_teacher, student_config, student_initial_weights, teacher_key
from .logs import RunLog, summary_writer
from .trainer import Trainer, learning_rate


def train(
    config: Config | None, run_dir: str | Path, resume: bool = False, progress: bool = True,
    data_path: str | Path | None = None,
) -> Path:  # fmt: skip
    """Train `config` into `run_dir`; with `resume`, continue from its newest readable checkpoint and its config
    (reading the data from `data_path` instead of the saved data.path when given, see `received_data`).

    Everything is checked before the first file is written: the config, the folder, the device, the data, the
    teacher and that the network fits the data.
    """
    run_dir = check_output_folder(run_dir, "the run folder")
    checkpoint = None
    if resume:
        checkpoint, config = _resume_point(run_dir)
        config.data = received_data(config, run_dir, data_path)
        if needs_teacher(config, checkpoint is not None):
            key = teacher_key(config)
            print(f"loading the teacher {getattr(config, key.split('.')[0]).teacher} ({key} of {run_dir})")
    elif holds_run(run_dir):
        raise ConfigError(f"{run_dir} already holds a run; resume it or choose a new folder")
    if config is None:
        raise ConfigError("a new run needs a config (or resume=True for an existing run)")
    available_device(config.train.device, "train.device")
    if config.train.tensorboard:
        summary_writer()
    place = distributed.setup(config.train.device)
    try:
        return _train(config, checkpoint, run_dir, progress, place, restart=resume and checkpoint is None)
    finally:
        distributed.teardown(place)


def holds_run(run_dir: Path) -> bool:
    """Whether a folder holds (the start of) a run: its config, its log or its checkpoints."""
    return any((run_dir / name).exists() for name in ("config.json", "log.jsonl", "checkpoints"))


def _resume_point(run_dir: Path) -> tuple[Checkpoint | None, Config]:
    """The newest readable checkpoint and its config; or, for a run stopped before its first checkpoint was
    complete, None and the run's config.json (the run starts again from step 0, which gives the same result)."""
    if list_checkpoints(run_dir):
        checkpoint = load_checkpoint(run_dir, with_training_state=True)
        return checkpoint, checkpoint.config
    if not (run_dir / "config.json").is_file():
        raise CheckpointError(f"{run_dir} is not a run to resume: it holds neither checkpoints nor config.json")
    try:
        config = Config.from_dict(json.loads((run_dir / "config.json").read_text()))
        validate(config)
    except (ValueError, OSError, RecursionError) as error:  # ConfigError is a ValueError, as is JSON's error
        raise CheckpointError(f"{run_dir / 'config.json'} is not a readable config: {error}") from None
    print(f"{run_dir} has no complete checkpoint (the run stopped before or while writing its first one): "
          "starting it again from step 0 with its config.json")  # fmt: skip
    return None, config


def _check_network_fits(config: Config, sample_shape: tuple[int, ...]) -> None:
    """ConfigError when the U-Net preset cannot take images of this size (each level halves it)."""
    if config.network.kind != "unet":
        return
    from ..nets.unet import UNET_PRESETS

    factor = 2 ** (len(UNET_PRESETS[config.network.preset]["block_out_channels"]) - 1)
    if any(size % factor for size in sample_shape[1:]):
        raise ConfigError(
            f"the U-Net preset {config.network.preset!r} needs image sizes divisible by {factor}; the data has "
            f"{sample_shape[1]}×{sample_shape[2]} (set data.resolution, or choose another preset)"
        )


def _train(
    config: Config, checkpoint: Checkpoint | None, run_dir: Path, progress: bool, place: distributed.Distributed,
    restart: bool,
) -> Path:  # fmt: skip
    t, device, batch = config.train, place.device, config.optim.batch_size
    if batch % place.world_size:
        raise ConfigError(f"optim.batch_size {batch} is not divisible by {place.world_size} ranks")
    if config.cd.adversarial_weight > 0 and t.method == "cd" and place.world_size > 1:
        raise ConfigError("cd.adversarial_weight > 0 trains on one process: its discriminator is not synchronised")

    # Data, teacher and method.
    dataset = build_dataset(config.data)
    teacher = load_teacher(config, dataset, device) if needs_teacher(config, checkpoint is not None) else None
    if teacher is not None:
        config = student_config(config, teacher)
    _check_network_fits(config, dataset.sample_shape)
    num_classes = dataset.num_classes if config.network.class_conditional else 0
    if config.network.class_conditional and num_classes == 0:
        raise ConfigError(f"network.class_conditional needs labelled data; {config.data.name} has no labels")
    method = build_method(config, teacher, num_classes)

    # Weights: fresh (CD's, ECT's and sCM's student starts from its teacher's weights), or restored.
    torch.manual_seed(derive_seed(t.seed, STREAM_INIT))
    trainer = Trainer.create(config, method, dataset.sample_shape, num_classes, device)
    start = 0
    if checkpoint is not None:
        for name, module in trainer.modules().items():
            load_weights(module, checkpoint.weights.get(name, {}), f"{checkpoint.path} ({name})")
        try:
            trainer.load_training_state(checkpoint.extra["training_state"])
        except (ValueError, KeyError, TypeError, RuntimeError) as error:
            raise CheckpointError(
                f"{checkpoint.path}/training_state.pt does not fit this run's optimizer: {error}"
            ) from None
        start = checkpoint.step
    else:
        if teacher is not None and teacher.initial_weights is not None:
            weights = student_initial_weights(trainer.model, teacher.initial_weights)
            load_network_weights(trainer.model, weights, f"teacher of {t.method}")
            trainer.reset_averages()
        teacher = None  # the method holds the denoiser if it uses one (CD, sCD); ECT and sCT need only the weights
        if place.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(run_dir / "config.json", config.to_dict())
    distributed.barrier(place)
    if place.world_size > 1:
        trainer.online = DistributedDataParallel(trainer.model)

    shard = place.shard(batch)
    memory_format = torch.channels_last if len(dataset.sample_shape) == 3 else torch.contiguous_format
    log = RunLog(run_dir, start if checkpoint or restart else None, t.tensorboard) if place.is_main else None
    bar = tqdm(total=t.total_steps, initial=start, disable=not (progress and place.is_main), desc=t.method)
    try:
        for step in range(start, t.total_steps):
            tic, cpu_tic = time.perf_counter(), time.process_time()
            # The global batch and its randomness, then this rank's rows of it.
            torch.manual_seed(derive_seed(t.seed, step, STREAM_DEVICE, place.rank))
            x0, labels = dataset.training_batch(step, batch, t.seed)
            draws = method.draw(step, batch, dataset.sample_shape, step_generator(t.seed, step, STREAM_NOISE, device))
            x0 = x0[shard].to(device, memory_format=memory_format)
            labels = labels[shard].to(device) if labels is not None and num_classes > 0 else None
            draws = {name: value[shard] for name, value in draws.items()}

            result = trainer.step(step, x0, labels, draws)

            # Logs, pictures and checkpoints (rank 0 writes every file).
            done = step + 1
            loss = distributed.global_mean(place, result.loss)
            if log is not None:
                log.write(
                    {
                        "step": done,
                        "loss": loss.item(),
                        "lr": learning_rate(config, step),
                        "grad_norm": result.grad_norm.item(),
                        **method.log_values(step),
                        "samples_per_s": batch / (time.perf_counter() - tic),
                        "cpu_seconds": time.process_time() - cpu_tic,  # all threads of this process
                    }
                )
                bar.set_postfix(loss=f"{loss.item():.4g}", refresh=False)
            bar.update()
            if place.is_main and t.sample_every and done % t.sample_every == 0:
                preview = next(iter(trainer.emas.values()), trainer.model)
                _save_preview(config, preview, dataset.sample_shape, num_classes, run_dir / "samples", done, device)
                trainer.model.train()  # the preview may have sampled from the online weights in eval mode
            if done % t.checkpoint_every == 0 or done == t.total_steps:
                distributed.assert_in_sync(place, trainer.model)
                if log is not None:
                    log.flush()
                if place.is_main:
                    save_checkpoint(
                        run_dir, done, config, dataset.sample_shape, num_classes, trainer.modules(),
                        trainer.training_state(), keep=t.keep_checkpoints,
                    )  # fmt: skip
                distributed.barrier(place)
    finally:
        bar.close()
        if log is not None:
            log.close()
    return run_dir


def _save_preview(config, model, sample_shape, num_classes: int, folder: Path, step: int, device) -> None:
    """folder/step-N.png: samples from an EMA (1 step for consistency models, the default ODE for teachers)."""
    count = 64 if len(sample_shape) == 3 else 1000
    generated = sample_model(model, config, sample_shape, num_classes, count, steps=1, seed=0, device=device)
    save_samples_picture(generated.x, folder / f"step-{step:08d}.png", title=f"step {step}")
