"""The training loop shared by teacher training, CD and CT. Read it top to bottom.

Every random number of step k is a pure function of (seed, k): the data batch, the method's draws and
the device RNG (dropout). A resumed run therefore continues exactly, and a run on several ranks sees
the same global batch as one process.
"""

import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..config import Config
from ..data import build_dataset
from ..errors import ConfigError
from ..files import write_json_atomic
from ..nets import build_model
from ..seeding import STREAM_DEVICE, STREAM_INIT, STREAM_NOISE, derive_seed, step_generator
from . import distributed
from .checkpoint import Checkpoint, load_checkpoint, load_weights, save_checkpoint
from .ema import ema_copy, ema_label, ema_update
from .logs import RunLog
from .methods import build_method, load_teacher, student_config


def build_optimizer(config: Config, params) -> torch.optim.Optimizer:
    """RAdam (the paper's) or Adam."""
    o = config.optim
    kind = torch.optim.RAdam if o.optimizer == "radam" else torch.optim.Adam
    return kind(params, lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)


def learning_rate(config: Config, step: int) -> float:
    """Linear warm-up over optim.warmup_steps, then constant."""
    o = config.optim
    return o.lr * min(1.0, (step + 1) / o.warmup_steps) if o.warmup_steps > 0 else o.lr


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
    teacher = load_teacher(config, dataset, device) if t.method == "cd" else None
    if teacher is not None:
        config = student_config(config, teacher)
    method = build_method(config, teacher)
    num_classes = dataset.num_classes if config.network.class_conditional else 0
    if config.network.class_conditional and num_classes == 0:
        raise ConfigError(f"network.class_conditional needs labelled data; {config.data.name} has no labels")

    # Networks: online weights θ, target θ⁻ (when it is not θ itself), evaluation EMAs, optimizer.
    memory_format = torch.channels_last if len(dataset.sample_shape) == 3 else torch.contiguous_format
    torch.manual_seed(derive_seed(t.seed, STREAM_INIT))
    model = build_model(config, method.parameterization, dataset.sample_shape, num_classes)
    model = model.to(device, memory_format=memory_format)
    if teacher is not None and teacher.initial_weights is not None:
        load_weights(model, teacher.initial_weights, f"teacher {config.cd.teacher}")
    target = ema_copy(model) if method.uses_target else None
    emas = {rate: ema_copy(model).eval() for rate in t.ema_rates}
    optimizer = build_optimizer(config, model.parameters())
    start = 0
    if checkpoint is not None:
        load_weights(model, checkpoint.weights["online"], str(checkpoint.path))
        if target is not None:
            load_weights(target, checkpoint.weights["target"], str(checkpoint.path))
        for rate, average in emas.items():
            load_weights(average, checkpoint.weights[ema_label(rate)], str(checkpoint.path))
        optimizer.load_state_dict(checkpoint.extra["training_state"]["optimizer"])
        start = checkpoint.step
    elif place.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / "config.json", config.to_dict())
    distributed.barrier(place)

    def save(step: int) -> None:
        modules = {"online": model, **{ema_label(rate): average for rate, average in emas.items()}}
        if target is not None:
            modules["target"] = target
        save_checkpoint(
            run_dir, step, config, dataset.sample_shape, num_classes, modules,
            {"optimizer": optimizer.state_dict()}, keep=t.keep_checkpoints,
        )  # fmt: skip

    online = DistributedDataParallel(model) if place.world_size > 1 else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if t.precision == "bf16" else nullcontext()
    shard = place.shard(batch)
    log = RunLog(run_dir, start if checkpoint else None, t.tensorboard) if place.is_main else None
    bar = tqdm(total=t.total_steps, initial=start, disable=not (progress and place.is_main), desc=t.method)
    model.train()
    try:
        for step in range(start, t.total_steps):
            tic = time.perf_counter()
            # The global batch and its randomness, then this rank's rows of it.
            torch.manual_seed(derive_seed(t.seed, step, STREAM_DEVICE, place.rank))
            x0, labels = dataset.training_batch(step, batch, t.seed)
            noise_generator = step_generator(t.seed, step, STREAM_NOISE, device)
            draws = method.draw(step, batch, dataset.sample_shape, noise_generator)
            x0 = x0[shard].to(device, memory_format=memory_format)
            labels = labels[shard].to(device) if labels is not None and num_classes > 0 else None
            draws = {name: value[shard] for name, value in draws.items()}

            # Loss, gradient step, target and EMA updates.
            student = partial(_with_labels, online, labels=labels)
            target_fn = partial(_with_labels, target if target is not None else model, labels=labels)
            with autocast:
                loss = method.loss(student, target_fn, x0, draws, step).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            max_norm = config.optim.grad_clip if config.optim.grad_clip > 0 else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step)
            optimizer.step()
            if target is not None:
                ema_update(target, model, method.target_rate(step))
            for rate, average in emas.items():
                ema_update(average, model, rate)

            # Logs, pictures and checkpoints (rank 0 writes every file).
            done = step + 1
            if log is not None:
                record = {
                    "step": done,
                    "loss": loss.item(),
                    "lr": learning_rate(config, step),
                    "grad_norm": grad_norm.item(),
                    **method.log_values(step),
                    "samples_per_s": batch / (time.perf_counter() - tic),
                }
                log.write(record)
                bar.set_postfix(loss=f"{record['loss']:.4g}", refresh=False)
            bar.update()
            if place.is_main and t.sample_every and done % t.sample_every == 0:
                _save_preview(config, next(iter(emas.values()), model), dataset, num_classes, run_dir, done, device)
                model.train()
            if done % t.checkpoint_every == 0 or done == t.total_steps:
                if log is not None:
                    log.flush()
                if place.is_main:
                    save(done)
                distributed.barrier(place)
    finally:
        bar.close()
        if log is not None:
            log.close()
    return run_dir


def _with_labels(module: torch.nn.Module, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor | None):
    """`module(x, sigma, labels)`: a network with its class labels bound, as the objectives call it."""
    return module(x, sigma, labels)


def _save_preview(config, model, dataset, num_classes, run_dir: Path, step: int, device) -> None:
    """RUN/samples/step-N.png: 64 samples (1 step for consistency models, the default ODE for teachers)."""
    from ..evaluation.evaluate import sample_model
    from ..evaluation.plots import save_samples_picture

    generated = sample_model(
        model, config, dataset.sample_shape, num_classes, 64 if len(dataset.sample_shape) == 3 else 1000,
        steps=1, seed=0, device=device,
    )  # fmt: skip
    save_samples_picture(generated.x, run_dir / "samples" / f"step-{step:08d}.png", title=f"step {step}")
