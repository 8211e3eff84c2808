"""The training loop shared by teacher training, CD, CT, iCT, ECT and sCM. Read it top to bottom.

Every random number of step k is a pure function of (seed, k): the data batch, the method's draws and
the device RNG (dropout). A resumed run therefore continues exactly, and a run on several ranks sees
the same global batch as one process.
"""

import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..config import Config
from ..data import build_dataset
from ..errors import ConfigError
from ..files import write_json_atomic
from ..seeding import STREAM_DEVICE, STREAM_INIT, STREAM_NOISE, derive_seed, step_generator
from . import distributed
from .checkpoint import Checkpoint, load_checkpoint, load_network_weights, load_weights, save_checkpoint
from .logs import RunLog
from .methods import build_method, load_teacher, needs_teacher, student_config, student_initial_weights
from .trainer import Trainer, learning_rate


def train(config: Config | None, run_dir: str | Path, resume: bool = False, progress: bool = True) -> Path:
    """Train `config` into `run_dir`; with `resume`, continue from its newest readable checkpoint and its config."""
    run_dir = Path(run_dir)
    checkpoint = load_checkpoint(run_dir, with_training_state=True) if resume else None
    if checkpoint is not None:
        config = checkpoint.config
    elif (run_dir / "checkpoints").exists():
        raise ConfigError(f"{run_dir} already holds a run; resume it or choose a new folder")
    place = distributed.setup(config.train.device)
    try:
        return _train(config, checkpoint, run_dir, progress, place)
    finally:
        distributed.teardown(place)


def _train(
    config: Config, checkpoint: Checkpoint | None, run_dir: Path, progress: bool, place: distributed.Distributed
) -> Path:
    t, device, batch = config.train, place.device, config.optim.batch_size
    if batch % place.world_size:
        raise ConfigError(f"optim.batch_size {batch} is not divisible by {place.world_size} ranks")

    # Data, teacher and method.
    dataset = build_dataset(config.data)
    teacher = load_teacher(config, dataset, device) if needs_teacher(config, checkpoint is not None) else None
    if teacher is not None:
        config = student_config(config, teacher)
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
            load_weights(module, checkpoint.weights[name], f"{checkpoint.path} ({name})")
        trainer.optimizer.load_state_dict(checkpoint.extra["training_state"]["optimizer"])
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
    log = RunLog(run_dir, start if checkpoint else None, t.tensorboard) if place.is_main else None
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
                        {"optimizer": trainer.optimizer.state_dict()}, keep=t.keep_checkpoints,
                    )  # fmt: skip
                distributed.barrier(place)
    finally:
        bar.close()
        if log is not None:
            log.close()
    return run_dir


def _save_preview(config, model, sample_shape, num_classes: int, folder: Path, step: int, device) -> None:
    """folder/step-N.png: samples from an EMA (1 step for consistency models, the default ODE for teachers)."""
    from ..evaluation.evaluate import sample_model
    from ..evaluation.plots import save_samples_picture

    count = 64 if len(sample_shape) == 3 else 1000
    generated = sample_model(model, config, sample_shape, num_classes, count, steps=1, seed=0, device=device)
    save_samples_picture(generated.x, folder / f"step-{step:08d}.png", title=f"step {step}")
