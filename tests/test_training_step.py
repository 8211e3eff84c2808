"""One `Trainer.step` of every method against the same step written out by hand (reference.md §3–5, §8–10).

A tiny MLP in float64 on 2-D Gaussian data; the teacher of CD and sCD is that data's exact denoiser. The hand
computation uses only the model's forward pass and the formulas of `written_out`: the loss value, its gradient
(torch.autograd on a copy of the same weights), RAdam's first update θ ← θ − lr·g, θ⁻ ← μθ⁻ + (1−μ)θ and the
evaluation EMAs' ramp min(rate, (1+k)/(γ+2+k)) (γ = 8 by default; γ = 0 keeps the plain mean). θ⁻ and the EMAs
start away from θ so that a wrong direction or rate of their updates shows.
"""

import copy
import math

import pytest
import torch

from helpers import tiny_config
from torch_consistency.training.build import Teacher, build_method
from torch_consistency.training.trainer import Trainer, build_optimizer, learning_rate
from written_out import (
    SIGMA_DATA,
    SIGMA_MAX,
    SIGMA_MIN,
    GaussianData,
    ct_mu,
    ct_scale,
    ect_second_point,
    euler,
    heun,
    ict_num_points,
    karras,
)

BATCH, TOTAL_STEPS = 16, 40  # tiny_config trains for 40 steps
DATA = GaussianData(torch.tensor([0.3, -0.2]), 0.4)
EMA_RATES = (0.1, 0.999)  # at the steps used below, 0.1 is below the ramp (1+k)/(10+k) and 0.999 above it


def make_trainer(*overrides: str) -> Trainer:
    config = tiny_config("optim.lr=0.01", f"train.ema_rates=[{EMA_RATES[0]}, {EMA_RATES[1]}]", *overrides)
    method = build_method(config, Teacher(DATA.denoiser, None, None, None))  # the teacher serves CD and sCD only
    torch.manual_seed(0)
    trainer = Trainer.create(config, method, (2,), 0, torch.device("cpu"))
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, module in trainer.modules().items():
            module.double()
            if name != "online":  # θ⁻ and the EMAs away from θ
                for p in module.parameters():
                    p.add_(0.05 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
        if hasattr(trainer.model, "weighting"):  # sCM's w(t) starts at 0; move it so that e^{−w} matters
            trainer.model.weighting.linear.bias.fill_(0.3)
            trainer.model.weighting.linear.weight.normal_(0.0, 0.1, generator=generator)
    return trainer


def batch_and_draws(trainer: Trainer, step: int, batch: int = BATCH):
    generator = torch.Generator().manual_seed(1)
    x0 = DATA.sample(batch, generator)
    draws = trainer.method.draw(step, batch, (2,), generator)
    return x0, {name: value.double() if value.is_floating_point() else value for name, value in draws.items()}


def grid_pair(index: torch.Tensor, num_points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(σ_i, σ_{i+1}) of the N-point Karras grid in float32, the precision in which the methods keep their grids
    (the network's c_noise = 250·ln σ is then computed in float32 too)."""
    return karras(index, num_points).float(), karras(index + 1, num_points).float()


def close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-6) -> bool:
    """max |actual − expected| ≤ rel·max |expected|: equal up to rounding on the tensor's own scale."""
    return bool((actual - expected).abs().max() <= rel * expected.abs().max())


def squared_norm(v: torch.Tensor) -> torch.Tensor:
    return (v**2).sum(1)


def pseudo_huber(v: torch.Tensor, c: float) -> torch.Tensor:
    """√(‖v‖² + c²) − c per sample (§4)."""
    return torch.sqrt(squared_norm(v) + c**2) - c


# ---- the methods' losses written out (model, target: callables; step k) --------------------------------------


def teacher_loss(model, target, x0, draws, step):
    """λ(σ)·mean((D(x0 + σz, σ) − x0)²), ln σ = P_mean + P_std·n with P_mean = −0.7, P_std = 1.3 (set below) (§3)."""
    sigma = torch.exp(-0.7 + 1.3 * draws["normal"])
    weight = (sigma**2 + SIGMA_DATA**2) / (sigma * SIGMA_DATA) ** 2
    denoised = model(x0 + sigma[:, None] * draws["noise"], sigma)
    return (weight * ((denoised - x0) ** 2).mean(1)).mean()


def cd_loss(solver, num_points, weighting, distance):
    """λ·d(f_θ(x0 + σ_i z, σ_i), f_θ⁻(x̂, σ_{i+1})), x̂ one Euler or Heun step of the exact denoiser (§4)."""

    def loss(model, target, x0, draws, step):
        sigma, sigma_next = grid_pair(draws["index"], num_points)
        x = x0 + sigma[:, None] * draws["noise"]
        x_next = (heun if solver == "heun" else euler)(DATA.denoiser, x, sigma, sigma_next)
        online = model(x, sigma)
        with torch.no_grad():
            target_out = target(x_next, sigma_next)
        return (weighting(sigma) * distance(online - target_out)).mean()

    return loss


def ct_loss(s0, s1, weighting):
    """λ·mean((f_θ(x0 + σ_i z, σ_i) − f_θ⁻(x0 + σ_{i+1} z, σ_{i+1}))²) on the N(k)-point grid (§5)."""

    def loss(model, target, x0, draws, step):
        n = ct_scale(step, TOTAL_STEPS, s0, s1) + 1
        sigma, sigma_next = grid_pair(draws["index"], n)
        online = model(x0 + sigma[:, None] * draws["noise"], sigma)
        with torch.no_grad():
            target_out = target(x0 + sigma_next[:, None] * draws["noise"], sigma_next)
        return (weighting(sigma) * ((online - target_out) ** 2).mean(1)).mean()

    return loss


def ict_loss(model, target, x0, draws, step):
    """(√(‖Δ‖² + c²) − c)/(σ_i − σ_{i+1}), c = 0.00054·√2, on iCT's N(k)-point grid (§8)."""
    n = ict_num_points(step, TOTAL_STEPS, 10, 1280)
    sigma, sigma_next = grid_pair(draws["index"], n)
    online = model(x0 + sigma[:, None] * draws["noise"], sigma)
    with torch.no_grad():
        target_out = target(x0 + sigma_next[:, None] * draws["noise"], sigma_next)
    return (pseudo_huber(online - target_out, 0.00054 * math.sqrt(2)) / (sigma - sigma_next)).mean()


def ect_loss(model, target, x0, draws, step):
    """t = exp(−0.5 + 1.5n) in [σ_min, σ_max], r at stage ⌊k/10⌋ with q = 2; target x0 where r < σ_min (so r
    counts as 0); (√(‖Δ‖² + 0.06²) − 0.06)/(t − r) (§9, settings below)."""
    t = torch.clamp(torch.exp(-0.5 + 1.5 * draws["normal"]), SIGMA_MIN, SIGMA_MAX)
    r = ect_second_point(t, step // 10, 2.0)
    to_network = r >= SIGMA_MIN
    assert to_network.any() and not to_network.all(), "the batch should hold both kinds of rows"
    r = torch.where(to_network, r, torch.zeros_like(r))
    online = model(x0 + t[:, None] * draws["noise"], t)
    target_out = x0.clone()
    with torch.no_grad():
        rows = to_network.nonzero()[:, 0]
        target_out[rows] = target(x0[rows] + r[rows, None] * draws["noise"][rows], r[rows])
    return (pseudo_huber(online - target_out, 0.06) / (t - r)).mean()


def scm_loss(mode):
    """sCT/sCD (§10): t = arctan(e^τ/σ_d), τ = −0.8 + 1.1n; r = min(1, k/10); c = 0.2 (settings below)."""

    def loss(model, target, x0, draws, step):
        t = torch.atan(torch.exp(-0.8 + 1.1 * draws["normal"]) / SIGMA_DATA)
        cos, sin = torch.cos(t)[:, None], torch.sin(t)[:, None]
        z = SIGMA_DATA * draws["noise"]
        x_t = cos * x0 + sin * z
        if mode == "sct":
            dxdt = cos * z - sin * x0
        else:  # σ_d·F_teacher with F_teacher = (cos t·x_t − D(x_t/cos t, σ_d tan t))/(σ_d sin t)
            dxdt = (cos * x_t - DATA.denoiser(x_t / cos, SIGMA_DATA * torch.tan(t))) / sin
        velocity, log_weight = model(x_t / SIGMA_DATA, t, with_log_weight=True)
        with torch.no_grad():
            velocity_target = target(x_t / SIGMA_DATA, t)
        # cos t sin t·dF⁻/dt by reverse-mode autograd (double backward), not the library's forward-mode JVP
        _, derivative = torch.autograd.functional.jvp(
            lambda x, time: target(x, time), (x_t / SIGMA_DATA, t), ((cos * sin) * dxdt / SIGMA_DATA, (cos * sin)[:, 0])
        )
        r = min(1.0, step / 10)
        g = -(cos**2) * (SIGMA_DATA * velocity_target - dxdt) - r * (cos * sin * x_t + SIGMA_DATA * derivative)
        g = g / (torch.sqrt(squared_norm(g))[:, None] + 0.2)
        return (torch.exp(-log_weight) * ((velocity - velocity_target - g) ** 2).mean(1) + log_weight).mean()

    return loss


def uniform(sigma):
    return torch.ones_like(sigma)


METHODS = {
    # name: (config overrides, step k, hand-written loss, θ⁻ rate μ(k) or None when θ⁻ = stopgrad θ, lr factor)
    "teacher": (
        ["train.method=teacher", "teacher.p_mean=-0.7", "teacher.p_std=1.3", "optim.warmup_steps=4"],
        1, teacher_loss, None, 2 / 4,  # warm-up: lr·(k+1)/4
    ),
    "cd-euler": (
        ["train.method=cd", "cd.teacher=exact", "cd.solver=euler", "cd.num_points=12", "cd.weighting=snr+1",
         "cd.distance=l1"],
        3, cd_loss("euler", 12, lambda s: s**-2 + 1, lambda v: v.abs().mean(1)), None, 1.0,
    ),
    "cd-heun": (
        ["train.method=cd", "cd.teacher=exact", "cd.solver=heun", "cd.num_points=7", "cd.weighting=karras",
         "cd.distance=pseudo-huber", "cd.target_ema=0.9"],
        3, cd_loss("heun", 7, lambda s: (s**2 + SIGMA_DATA**2) / (s * SIGMA_DATA) ** 2,
                   lambda v: pseudo_huber(v, 0.00054 * math.sqrt(2))),
        0.9, 1.0,
    ),
    "cd-growing-n": (  # N(k) = CT's m(k) + 1 from 3 to 12 points: 4 at step 1 (fixed N would be 12)
        ["train.method=cd", "cd.teacher=exact", "cd.solver=euler", "cd.num_points=12", "cd.grow_from=3"],
        1, cd_loss("euler", ct_scale(1, TOTAL_STEPS, 3, 11) + 1, uniform, lambda v: (v**2).mean(1)), None, 1.0,
    ),
    "ct": (
        ["train.method=ct", "ct.s0=2", "ct.s1=20", "ct.mu0=0.8", "ct.weighting=truncated-snr", "ct.distance=l2"],
        25, ct_loss(2, 20, lambda s: torch.clamp(s**-2, min=1.0)), ct_mu(25, TOTAL_STEPS, 2, 20, 0.8), 1.0,
    ),
    "ict": (["train.method=ict"], 12, ict_loss, None, 1.0),
    "ect": (
        ["train.method=ect", "ect.stage_steps=10", "ect.q=2", "ect.huber_c=0.06", "ect.p_mean=-0.5", "ect.p_std=1.5"],
        15, ect_loss, None, 1.0,
    ),
    "sct": (
        ["train.method=scm", "scm.tangent_warmup_steps=10", "scm.tangent_norm_c=0.2", "scm.p_mean=-0.8",
         "scm.p_std=1.1"],
        5, scm_loss("sct"), None, 1.0,
    ),
    "scd": (
        ["train.method=scm", "scm.mode=scd", "scm.teacher=exact", "scm.tangent_warmup_steps=10",
         "scm.tangent_norm_c=0.2", "scm.p_mean=-0.8", "scm.p_std=1.1"],
        15, scm_loss("scd"), None, 1.0,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(METHODS))
def test_one_training_step_equals_the_step_written_out(name):
    overrides, step, hand_loss, mu, lr_factor = METHODS[name]
    trainer = make_trainer(*overrides)
    assert (trainer.target is not None) == (mu is not None)
    x0, draws = batch_and_draws(trainer, step)
    theta = copy.deepcopy(trainer.model)
    theta_minus = copy.deepcopy(trainer.target) if mu is not None else theta
    emas = {rate: copy.deepcopy(average) for rate, average in trainer.emas.items()}

    expected = hand_loss(theta, theta_minus, x0, draws, step)
    gradients = torch.autograd.grad(expected, list(theta.parameters()))
    result = trainer.step(step, x0, None, draws)

    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert result.grad_norm.item() == pytest.approx(torch.cat([g.flatten() for g in gradients]).norm().item(), rel=1e-5)
    lr = 0.01 * lr_factor
    for (key, new), old, gradient in zip(trainer.model.named_parameters(), theta.parameters(), gradients, strict=True):
        assert close(new.grad, gradient), key
        assert close(new - old, -lr * gradient), key  # RAdam's first step is SGD's
    assert gradients[-1].abs().max() > 0  # the step is not trivially zero
    if mu is not None:
        for new_target, old_target, new in zip(
            trainer.target.parameters(), theta_minus.parameters(), trainer.model.parameters(), strict=True
        ):
            assert torch.allclose(new_target, mu * old_target + (1 - mu) * new, rtol=1e-12, atol=1e-12)
    for rate, average in trainer.emas.items():
        decay = min(rate, (1 + step) / (10 + step))  # the default ema_power γ = 8
        for new_average, old_average, new in zip(
            average.parameters(), emas[rate].parameters(), trainer.model.parameters(), strict=True
        ):
            assert torch.allclose(new_average, decay * old_average + (1 - decay) * new, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["cd-heun", "ct"])
def test_the_target_pass_sees_theta_minus(name):
    """With μ > 0 and θ⁻ ≠ θ the loss is the one computed with θ⁻ in the second pass, not with θ (§4, §5)."""
    overrides, step, hand_loss, _, _ = METHODS[name]
    trainer = make_trainer(*overrides)
    x0, draws = batch_and_draws(trainer, step)
    theta, theta_minus = copy.deepcopy(trainer.model), copy.deepcopy(trainer.target)
    with_theta_minus = hand_loss(theta, theta_minus, x0, draws, step).item()
    with_theta = hand_loss(theta, theta, x0, draws, step).item()
    loss = trainer.step(step, x0, None, draws).loss.item()
    assert loss == pytest.approx(with_theta_minus, rel=1e-6)
    assert abs(with_theta - with_theta_minus) > 1e-2 * with_theta_minus


@pytest.mark.parametrize("paper", [False, True], ids=["code", "paper"])
def test_ct_target_moves_towards_theta_at_the_rate_of_its_step(paper):
    """θ⁻ ← μ(k)θ⁻ + (1−μ(k))θ with μ(k) = exp(s0 ln μ0/m) (code) or /N(k) (paper) at the step k itself (§5)."""
    schedule = "paper" if paper else "code"
    trainer = make_trainer("train.method=ct", "ct.s0=2", "ct.s1=20", "ct.mu0=0.8", f"ct.schedule={schedule}")
    step = 5
    mu = ct_mu(step, TOTAL_STEPS, 2, 20, 0.8, paper)
    assert abs(mu - ct_mu(step + 1, TOTAL_STEPS, 2, 20, 0.8, paper)) > 1e-3  # the step's own μ is distinguishable
    old = [p.clone() for p in trainer.target.parameters()]
    x0, draws = batch_and_draws(trainer, step)
    trainer.step(step, x0, None, draws)
    for new_target, old_target, new in zip(trainer.target.parameters(), old, trainer.model.parameters(), strict=True):
        assert torch.allclose(new_target, mu * old_target + (1 - mu) * new, rtol=1e-12, atol=1e-12)


def test_ema_power_zero_keeps_the_plain_mean_of_all_weights_so_far():
    """With train.ema_power = γ = 0 the evaluation EMA is the mean of its start and the weights after every step so
    far, each counted once (EDM2's power-function EMA with γ = 0); the rate 0.999 does not cap it this early."""
    trainer = make_trainer("train.ema_power=0")
    history = [[p.clone() for p in trainer.emas[0.999].parameters()]]
    for step in range(4):
        x0, draws = batch_and_draws(trainer, step)
        trainer.step(step, x0, None, draws)
        history.append([p.detach().clone() for p in trainer.model.parameters()])
    for index, average in enumerate(trainer.emas[0.999].parameters()):
        mean = sum(weights[index] for weights in history) / len(history)
        assert torch.allclose(average, mean, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(history[-1][0], history[-2][0])  # the weights moved, so the mean differs from each


def test_reset_averages_sets_target_and_emas_to_the_online_weights():
    trainer = make_trainer("train.method=cd", "cd.teacher=exact", "cd.target_ema=0.9")
    trainer.reset_averages()
    for name, module in trainer.modules().items():
        for p, q in zip(module.parameters(), trainer.model.parameters(), strict=True):
            assert torch.equal(p, q), name


def test_gradients_are_clipped_to_the_total_norm_before_the_update():
    """g ← g·min(1, c/‖g‖) on the norm of all parameters together; the step result reports the unclipped norm."""
    overrides, step, hand_loss, _, _ = METHODS["ict"]
    trainer = make_trainer(*overrides, "optim.grad_clip=0.01")
    x0, draws = batch_and_draws(trainer, step)
    theta = copy.deepcopy(trainer.model)
    gradients = torch.autograd.grad(hand_loss(theta, theta, x0, draws, step), list(theta.parameters()))
    norm = torch.cat([g.flatten() for g in gradients]).norm().item()
    assert norm > 0.1  # far above the clip
    result = trainer.step(step, x0, None, draws)
    assert result.grad_norm.item() == pytest.approx(norm, rel=1e-6)
    for new, old, gradient in zip(trainer.model.parameters(), theta.parameters(), gradients, strict=True):
        assert close(new - old, -0.01 * gradient * 0.01 / norm)


def test_averages_are_frozen_copies_saved_under_their_names():
    trainer = make_trainer("train.method=cd", "cd.teacher=exact", "cd.target_ema=0.9")
    assert set(trainer.modules()) == {"online", "target", "ema-0.1", "ema-0.999"}
    for name, module in trainer.modules().items():
        assert all(p.requires_grad == (name == "online") for p in module.parameters()), name
    trainer = make_trainer("train.method=ict")  # θ⁻ = stopgrad θ: no target weights to keep or reset
    assert set(trainer.modules()) == {"online", "ema-0.1", "ema-0.999"}
    trainer.reset_averages()
    for p, q in zip(trainer.emas[0.1].parameters(), trainer.model.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("kind", ["radam", "adam"])
def test_the_optimizer_is_the_configured_one_with_its_settings(kind):
    config = tiny_config(f"optim.optimizer={kind}", "optim.lr=0.003", "optim.beta1=0.8", "optim.beta2=0.95",
                         "optim.weight_decay=0.01")  # fmt: skip
    optimizer = build_optimizer(config, torch.nn.Linear(2, 1))
    assert type(optimizer) is {"radam": torch.optim.RAdam, "adam": torch.optim.Adam}[kind]
    assert optimizer.defaults["lr"] == 0.003 and optimizer.defaults["betas"] == (0.8, 0.95)
    assert optimizer.defaults["weight_decay"] == 0.01


def test_learning_rate_warms_up_linearly_then_stays():
    config = tiny_config("optim.lr=0.01", "optim.warmup_steps=4")
    assert [learning_rate(config, k) for k in range(7)] == pytest.approx(
        [0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01, 0.01]
    )
    assert learning_rate(tiny_config("optim.lr=0.01"), 0) == 0.01


def test_cosine_decay_follows_the_warm_up_and_reaches_zero_at_the_end():
    config = tiny_config("optim.lr=0.01", "optim.warmup_steps=2", "optim.decay=cosine", "train.total_steps=10")
    # after 2 warm-up steps, lr·(1 + cos(π·(k − 2)/8))/2
    expected = [0.005, 0.01] + [0.01 * (1 + math.cos(math.pi * (k - 2) / 8)) / 2 for k in range(2, 11)]
    assert [learning_rate(config, k) for k in range(11)] == pytest.approx(expected)
    assert learning_rate(config, 6) == pytest.approx(0.005) and learning_rate(config, 10) == pytest.approx(0, abs=1e-12)
    no_warm_up = tiny_config("optim.lr=0.01", "optim.decay=cosine", "train.total_steps=4")
    assert [learning_rate(no_warm_up, k) for k in range(5)] == pytest.approx(
        [0.01, 0.0085355, 0.005, 0.0014645, 0], rel=1e-4, abs=1e-12
    )


def test_bf16_precision_runs_the_loss_under_cpu_autocast():
    with make_trainer("train.method=teacher").autocast():
        assert not torch.is_autocast_enabled("cpu")
    with make_trainer("train.method=teacher", "train.precision=bf16").autocast():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_a_class_conditional_step_passes_the_labels_to_both_passes():
    """CT with θ⁻ ≠ θ on a class-conditional network: the loss written out with the labels in both passes."""
    config = tiny_config("optim.lr=0.01", "train.method=ct", "ct.s0=2", "ct.s1=20", "ct.distance=l2",
                         "ct.weighting=uniform", "network.class_conditional=true")  # fmt: skip
    torch.manual_seed(0)
    trainer = Trainer.create(config, build_method(config, None), (2,), 3, torch.device("cpu"))
    with torch.no_grad():
        for module in trainer.modules().values():
            module.double()
        for p in trainer.target.parameters():
            p.add_(0.05 * torch.randn_like(p))
    step = 25
    x0, draws = batch_and_draws(trainer, step)
    labels = torch.arange(BATCH) % 3

    def hand(labels):
        n = ct_scale(step, TOTAL_STEPS, 2, 20) + 1
        sigma, sigma_next = grid_pair(draws["index"], n)
        online = trainer.model(x0 + sigma[:, None] * draws["noise"], sigma, labels)
        with torch.no_grad():
            target_out = trainer.target(x0 + sigma_next[:, None] * draws["noise"], sigma_next, labels)
        return ((online - target_out) ** 2).mean(1).mean().item()

    expected, other = hand(labels), hand((labels + 1) % 3)
    assert abs(expected - other) > 1e-3 * expected
    assert trainer.step(step, x0, labels, draws).loss.item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("name", ["ict", "ect"])
def test_both_passes_of_ict_and_ect_see_the_batchs_labels(name):
    """The online and the target pass of a class-conditional iCT or ECT loss are called with the batch's labels."""
    config = tiny_config(f"train.method={name}", "network.class_conditional=true")
    method = build_method(config, None, 3)
    labels = torch.arange(BATCH) % 3
    draws = method.draw(10, BATCH, (2,), torch.Generator().manual_seed(0))
    seen: dict[str, list] = {"online": [], "target": []}

    def recorder(role):
        def network(x, sigma, labels=None, **options):
            seen[role].append(labels)
            return 0.5 * x

        return network

    method.loss(recorder("online"), recorder("target"), torch.randn(BATCH, 2), draws, 10, labels=labels)
    for role, calls in seen.items():
        assert calls and all(call is not None and torch.equal(call, labels) for call in calls), role


@pytest.mark.parametrize(("method", "bounds"), [("cd", None), ("cd", (0.5, 3.0)), ("cd", (2.0, 2.0)),
                                                ("scd", None), ("scd", (0.5, 3.0)), ("scd", (2.0, 2.0))])  # fmt: skip
def test_guided_distillation_passes_labels_and_w_to_student_target_and_teacher(method, bounds):
    """CD and sCD, class-conditional: the online and target passes get the batch's labels and, for guidance =
    input, the drawn w ~ U[w_min, w_max]; the teacher is D(x, σ, c) without guidance and D_w (calls with c and
    with the null class) with it."""
    guidance = "none" if bounds is None else "input" if bounds[0] < bounds[1] else "fixed"
    low, high = bounds or (1.0, 1.0)
    key = "cd" if method == "cd" else "scm"
    config = tiny_config(
        *(("train.method=cd", "cd.teacher=runs/t") if method == "cd" else
          ("train.method=scm", "scm.mode=scd", "scm.teacher=runs/t", "diffusion.noise_conditioning=edm")),
        "network.class_conditional=true", "teacher.label_dropout=0.2", f"{key}.guidance={guidance}",
        f"{key}.guidance_min={low}", f"{key}.guidance_max={high}", f"sampling.guidance={low}",
    )  # fmt: skip
    calls: dict[str, list] = {"online": [], "target": [], "teacher": []}

    def recorder(role):
        def network(x, sigma, labels=None, guidance=None, **options):
            calls[role].append((labels, guidance))
            if options.get("with_log_weight"):  # sCM's online pass also returns its adaptive weight
                return 0.5 * x, torch.zeros(x.shape[0])
            return 0.5 * x

        return network

    built = build_method(config, Teacher(recorder("teacher"), None, None, None), 3)
    draws = built.draw(0, BATCH, (2,), torch.Generator().manual_seed(0))
    labels = torch.arange(BATCH) % 3
    built.loss(recorder("online"), recorder("target"), torch.randn(BATCH, 2), draws, 0, labels=labels)
    w = draws.get("guidance")
    if guidance == "input":
        assert w is not None and low <= float(w.min()) and float(w.max()) <= high and float(w.std()) > 0.2
    else:
        assert w is None
    for role in ("online", "target"):
        assert calls[role], role
        for seen_labels, seen_w in calls[role]:
            assert torch.equal(seen_labels, labels), role
            assert (seen_w is None) if w is None else torch.equal(seen_w, w), role
    if guidance == "none":
        assert all(torch.equal(seen_labels, labels) for seen_labels, _ in calls["teacher"])
    else:
        seen = torch.cat([seen_labels.flatten() for seen_labels, _ in calls["teacher"]])
        assert set(seen.tolist()) == {0, 1, 2, 3}  # the classes and the null class 3 of D_w
