"""One optimisation step of any method: loss, gradient, clipping, optimizer, target and EMA updates."""

import math
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import Config
from ..embedding import GuidanceEmbedding
from ..nets import build_model
from .ema import ema_copy, ema_label, ema_update
from .methods import Draws, Method


def build_optimizer(config: Config, model: nn.Module) -> torch.optim.Optimizer:
    """RAdam (the paper's) or Adam over `model`'s parameters; when optim.guidance_lr_scale ≠ 1 the guidance
    embedding's parameters form a second group whose learning rate is that multiple of the schedule's."""
    o = config.optim
    kind = torch.optim.RAdam if o.optimizer == "radam" else torch.optim.Adam
    guidance = {
        id(p) for module in model.modules() if isinstance(module, GuidanceEmbedding) for p in module.parameters()
    }
    groups: dict[float, list[nn.Parameter]] = {}
    for parameter in model.parameters():
        groups.setdefault(o.guidance_lr_scale if id(parameter) in guidance else 1.0, []).append(parameter)
    return kind(
        [{"params": params, "lr_scale": scale} for scale, params in groups.items()],
        lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay,
    )  # fmt: skip


def learning_rate(config: Config, step: int) -> float:
    """Linear warm-up over optim.warmup_steps, then constant (decay = none) or a cosine to 0 at train.total_steps."""
    o = config.optim
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    if o.decay == "none":
        return o.lr
    progress = (step - o.warmup_steps) / max(config.train.total_steps - o.warmup_steps, 1)
    return o.lr * (1 + math.cos(math.pi * progress)) / 2


def evaluation_ema_rate(rate: float, step: int, power: float) -> float:
    """min(rate, (1 + k)/(γ + 2 + k)), γ = `power`: the weights θ_j after step j count ∝ Γ(j + γ + 1)/Γ(j + 1) ≈ j^γ,
    a power-function EMA (Karras et al. 2024, EDM2 §3.1) until `rate` caps it. γ = 8 is the usual (1 + k)/(10 + k)
    ramp, an average over about the last tenth of the run; γ = 0 is the plain mean of all weights so far."""
    return min(rate, (1 + step) / (power + 2 + step))


def warn_if_bf16_is_slow(precision: str, device: torch.device) -> None:
    """One line on stderr when bf16 autocast runs on a CPU without native bf16 (no AVX512-BF16/AMX for oneDNN):
    its bf16 convolutions then take a slow fallback path, 8–10× slower each than fp32."""
    if precision != "bf16" or device.type != "cpu" or torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return
    capability = torch.backends.cpu.get_cpu_capability()
    print(
        f"warning: train.precision = 'bf16' on a CPU without native bf16 ({capability}, oneDNN has no bf16 kernels "
        "for it): bf16 convolutions fall back to a slow path, 8-10x slower each than fp32; use fp32 on this CPU "
        "(bf16 pays on GPUs and on CPUs with AVX512-BF16 or AMX)",
        file=sys.stderr,
    )


@dataclass
class StepResult:
    loss: torch.Tensor
    grad_norm: torch.Tensor


@dataclass
class Trainer:
    """The weights a method trains: θ (`model`), θ⁻ when it is not θ itself (`target`), evaluation EMAs."""

    config: Config
    method: Method
    model: nn.Module
    target: nn.Module | None
    emas: dict[float, nn.Module]
    optimizer: torch.optim.Optimizer
    online: nn.Module | None = None  # `model`, or its DistributedDataParallel wrapper
    autocast: Callable[[], AbstractContextManager] = field(default=nullcontext)

    @classmethod
    def create(
        cls, config: Config, method: Method, sample_shape: tuple[int, ...], num_classes: int, device: torch.device
    ) -> "Trainer":
        """Fresh weights (seed the global RNG first for reproducible initialisation)."""
        memory_format = torch.channels_last if len(sample_shape) == 3 else torch.contiguous_format
        model = build_model(config, method.parameterization, sample_shape, num_classes)
        model = model.to(device, memory_format=memory_format).train()  # type: ignore[call-overload]  # stubs omit it
        target = ema_copy(model) if method.uses_target else None
        emas = {rate: ema_copy(model).eval() for rate in config.train.ema_rates}
        warn_if_bf16_is_slow(config.train.precision, device)
        autocast = (
            (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
            if config.train.precision == "bf16"
            else nullcontext
        )
        return cls(config, method, model, target, emas, build_optimizer(config, model), autocast=autocast)

    @property
    def network(self) -> nn.Module:
        """The module a step runs: the DistributedDataParallel wrapper when there is one, else `model`."""
        return self.online if self.online is not None else self.model

    def modules(self) -> dict[str, nn.Module]:
        """Weight sets as saved in a checkpoint: online, target (if any), ema-RATE."""
        modules = {"online": self.model, **{ema_label(rate): average for rate, average in self.emas.items()}}
        if self.target is not None:
            modules["target"] = self.target
        return modules

    def training_state(self) -> dict:
        """What a checkpoint keeps besides the weights: the optimizer's state, and an adversarial CD's discriminator
        with its optimizer (`adversary`)."""
        state = {"optimizer": self.optimizer.state_dict()}
        adversary = getattr(self.method, "adversary", None)  # only CD has one, and only with cd.adversarial_weight > 0
        if adversary is not None:
            state["adversary"] = adversary.state_dict()
        return state

    def load_training_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        adversary = getattr(self.method, "adversary", None)
        if adversary is not None:
            adversary.load_state_dict(state["adversary"])

    def reset_averages(self) -> None:
        """Make target and EMAs equal to the current weights (after loading initial weights)."""
        for average in [*self.emas.values(), *([self.target] if self.target is not None else [])]:
            ema_update(average, self.model, 0.0)

    def step(self, step: int, x0: torch.Tensor, labels: torch.Tensor | None, draws: Draws) -> StepResult:
        """loss → backward → clip → optimizer step → θ⁻ ← μ(k)θ⁻ + (1−μ(k))θ → evaluation EMAs."""
        target = self.target if self.target is not None else self.model
        with self.autocast():  # the method binds the labels (and a guided student's w) to the networks
            loss = self.method.loss(self.network, target, x0, draws, step, labels=labels).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = self.config.optim.grad_clip if self.config.optim.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        lr = learning_rate(self.config, step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self.optimizer.step()
        if self.target is not None:
            ema_update(self.target, self.model, self.method.target_rate(step))
        for rate, average in self.emas.items():
            ema_update(average, self.model, evaluation_ema_rate(rate, step, self.config.train.ema_power))
        return StepResult(loss.detach(), grad_norm)
