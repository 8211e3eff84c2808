"""The training loop shared by teacher training, CD and CT. Read it top to bottom.

Every random number of step k is a pure function of (seed, k): the data batch, the method's draws and
the device RNG (dropout). A resumed run therefore continues exactly, and a run on several ranks sees
the same global batch as one process.
"""

import json
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
from ..seeding import STREAM_DEVICE, STREAM_NOISE, derive_seed, step_generator
from . import distributed
from .checkpoint import Checkpoint, load_checkpoint, load_weights, save_checkpoint
from .ema import ema_copy, ema_label, ema_update
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
    config: Config,
    checkpoint: Checkpoint | None,
    run_dir: Path,
    progress: bool,
    place: distributed.Distributed,
) -> Path:
    t, device = config.train, place.device
    if config.optim.batch_size % place.world_size:
        raise ConfigError(f"optim.batch_size {config.optim.batch_size} is not divisible by {place.world_size} ranks")

    dataset = build_dataset(config.data)
    teacher = load_teacher(config, dataset, device) if t.method == "cd" else None
    if teacher is not None:
        config = student_config(config, teacher)
    method = build_method(config, teacher)

    model = build_model(config, method.parameterization, dataset.sample_shape, dataset.num_classes).to(device)
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
        if place.is_main:
            _truncate_log(run_dir / "log.jsonl", start)
    elif place.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / "config.json", config.to_dict())
    distributed.barrier(place)

    online = DistributedDataParallel(model) if place.world_size > 1 else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if t.precision == "bf16" else nullcontext()
    shard = place.shard(config.optim.batch_size)
    log = open(run_dir / "log.jsonl", "a") if place.is_main else None
    bar = tqdm(total=t.total_steps, initial=start, disable=not (progress and place.is_main), desc=t.method)
    model.train()
    try:
        for step in range(start, t.total_steps):
            tic = time.perf_counter()
            torch.manual_seed(derive_seed(t.seed, step, STREAM_DEVICE, place.rank))
            x0, labels = dataset.training_batch(step, config.optim.batch_size, t.seed)
            draws = method.draw(
                step, config.optim.batch_size, dataset.sample_shape,
                step_generator(t.seed, step, STREAM_NOISE, device),
            )  # fmt: skip
            x0 = x0[shard].to(device)
            labels = labels[shard].to(device) if labels is not None else None
            draws = {name: value[shard] for name, value in draws.items()}

            student = partial(_with_labels, online, labels=labels)
            target_fn = partial(_with_labels, target if target is not None else model, labels=labels)
            with autocast:
                loss = method.loss(student, target_fn, x0, draws, step).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(
                model.parameters(), config.optim.grad_clip if config.optim.grad_clip > 0 else float("inf")
            )
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step)
            optimizer.step()
            if target is not None:
                ema_update(target, model, method.target_rate(step))
            for rate, average in emas.items():
                ema_update(average, model, rate)

            done = step + 1
            if log is not None:
                record = {
                    "step": done,
                    "loss": loss.item(),
                    "lr": learning_rate(config, step),
                    "grad_norm": grad_norm.item(),
                    **method.log_values(step),
                    "samples_per_s": config.optim.batch_size / (time.perf_counter() - tic),
                }
                log.write(json.dumps(record) + "\n")
                bar.set_postfix(loss=f"{record['loss']:.4g}", refresh=False)
            bar.update()
            if done % t.checkpoint_every == 0 or done == t.total_steps:
                if log is not None:
                    log.flush()
                if place.is_main:
                    modules = {"online": model, **{ema_label(r): m for r, m in emas.items()}}
                    if target is not None:
                        modules["target"] = target
                    save_checkpoint(
                        run_dir, done, config, dataset.sample_shape, dataset.num_classes, modules,
                        {"optimizer": optimizer.state_dict()}, keep=t.keep_checkpoints,
                    )  # fmt: skip
                distributed.barrier(place)
    finally:
        bar.close()
        if log is not None:
            log.close()
    return run_dir


def _with_labels(module: torch.nn.Module, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor | None):
    """`module(x, sigma, labels)`: a network with its class labels bound, as the objectives call it."""
    return module(x, sigma, labels)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines of steps after `step`: a resumed run writes them again."""
    if not path.exists():
        return
    kept = [
        line for line in path.read_text().splitlines() if _logged_step(line) is not None and _logged_step(line) <= step
    ]
    path.write_text("".join(line + "\n" for line in kept))


def _logged_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None  # a line cut short by a crash
