"""iCT, ECT and sCM (reference.md §8–10): their formulas against worked values and exact oracles, and short runs
through the real loop (training, exact resume, `cm sample`)."""

import json
import math
import shutil

import numpy as np
import pytest
import torch

from helpers import tiny_config
from torch_consistency.checkpoint import list_checkpoints, load_checkpoint
from torch_consistency.cli import main as cm
from torch_consistency.configs import load_config
from torch_consistency.data import build_dataset
from torch_consistency.errors import ConfigError
from torch_consistency.evaluation.evaluate import edm_consistency_function
from torch_consistency.evaluation.lowdim import consistency_error
from torch_consistency.generate import sample_model
from torch_consistency.nets import build_model
from torch_consistency.nets.mlp import MLP
from torch_consistency.parameterization import Preconditioned
from torch_consistency.schedules import ect_second_point, ict_num_points, tangent_warmup
from torch_consistency.sigmas import karras_sigmas
from torch_consistency.training.build import build_method
from torch_consistency.training.loop import train
from torch_consistency.trigflow import (
    HALF_PI,
    TrigFlowModel,
    edm_to_trigflow_velocity,
    normalise_tangent,
    scm_tangent,
    sct_velocity,
    trigflow_noisy,
    trigflow_sigma,
    trigflow_time,
    velocity_tangent,
)
from written_out import batch_generator, ict_pair_probabilities

SIGMA_DATA = 0.5


def losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines()]


def trigflow_mlp(dim=3, dropout=0.0, dtype=torch.float64, conditioning="openai"):
    torch.manual_seed(0)
    net = MLP(dim, width=32, depth=2, embedding_dim=16, dropout=dropout)
    return TrigFlowModel(net, SIGMA_DATA, 0.002, 80.0, conditioning).to(dtype)


# ---- iCT (§8) ------------------------------------------------------------------------------------------------


def test_ict_curriculum_at_the_papers_settings():
    # K = 400k, s0 = 10, s1 = 1280: K' = ⌊400000/(log2 128 + 1)⌋ = 50000
    assert [ict_num_points(k, 400_000) for k in (0, 49_999, 50_000, 100_000, 349_999, 350_000, 400_000)] == [
        11, 11, 21, 41, 641, 1281, 1281,
    ]  # fmt: skip


def test_ict_draws_pairs_from_the_discrete_lognormal():
    config = tiny_config("train.method=ict", "train.total_steps=8000")
    method = build_method(config, None)
    assert not method.uses_target and method.target_rate(0) == 0.0
    assert method.num_points(0) == 11 and method.num_points(8000) == 1281
    p = method.probabilities(4000)  # N = 161
    assert len(p) == 160 and p.sum().item() == pytest.approx(1.0, abs=1e-6)
    grid = karras_sigmas(161, 0.002, 80.0, 7.0)
    assert torch.allclose(
        p.double(), torch.tensor(ict_pair_probabilities(161, -1.1, 2.0), dtype=torch.float64), atol=1e-7
    )
    density = p.double() / (grid[:-1].log() - grid[1:].log())  # mass per unit of ln σ peaks at exp(P_mean)
    mode = int(density.argmax())
    assert grid[mode + 1].item() <= math.exp(-1.1) * 1.1 and grid[mode].item() >= math.exp(-1.1) / 1.1
    draws = method.draw(4000, 50_000, (2,), torch.Generator().manual_seed(0))
    frequencies = torch.bincount(draws["index"], minlength=160).double() / 50_000
    assert (frequencies - p.double()).abs().max() < 0.01
    sigma, sigma_next, weight = method.pair(4000, draws, "inverse-delta")
    assert torch.all(sigma > sigma_next)
    assert torch.allclose(weight, 1 / (sigma - sigma_next))


# ---- ECT (§9) ------------------------------------------------------------------------------------------------


def test_ect_second_point_worked_values():
    t = torch.tensor([0.5, 1.0, math.log(7) - 1e-3, math.log(7) + 1e-2, 10.0], dtype=torch.float64)
    r0 = ect_second_point(t, stage=0, q=2.0)
    assert torch.all(r0[:3] == 0) and torch.all(r0[3:] > 0)  # stage 0: r = 0 below t = ln 7
    assert r0[4].item() == pytest.approx(10 * (1 - 0.5 * (1 + 8 / (1 + math.exp(10)))), rel=1e-12)
    assert ect_second_point(t, 1, 2.0)[4].item() == pytest.approx(10 * (1 - 0.25 * (1 + 8 / (1 + math.exp(10)))))
    previous = r0
    for stage in range(1, 12):
        r = ect_second_point(t, stage, q=2.0)
        assert torch.all(r < t) and torch.all(r >= previous)
        previous = r
    assert torch.allclose(previous / t, torch.ones_like(t), atol=3e-3)  # r → t as the stages advance


def ect_model(config):
    torch.manual_seed(0)
    return build_model(config, "consistency", (2,)).double()


def test_ect_loss_at_stage_zero_is_a_denoising_loss():
    """Below t = ln 7 at stage 0 every r is 0: loss = ‖f_θ(x0 + t·z, t) − x0‖/t, with c = 0."""
    config = tiny_config("train.method=ect")
    method, model = build_method(config, None), ect_model(config)
    x0 = torch.randn(16, 2, dtype=torch.float64)
    draws = {"normal": torch.linspace(-4.0, 0.4, 16, dtype=torch.float64), "noise": torch.randn_like(x0)}
    t, r = method.points(0, draws)
    assert torch.all(r == 0) and t.max() < math.log(7)
    expected = (model(x0 + t[:, None] * draws["noise"], t) - x0).norm(dim=1) / t
    assert torch.allclose(method.loss(model, model, x0, draws, 0), expected, rtol=1e-12)


def test_ect_loss_with_a_second_point_and_huber_constant():
    config = tiny_config("train.method=ect", "ect.huber_c=0.06", "ect.stage_steps=10")
    method, model = build_method(config, None), ect_model(config)
    x0 = torch.randn(8, 2, dtype=torch.float64)
    draws = {"normal": torch.linspace(1.5, 2.5, 8, dtype=torch.float64), "noise": torch.randn_like(x0)}
    t, r = method.points(35, draws)  # stage 3
    assert torch.all(r >= 0.002) and torch.all(r < t)
    difference = model(x0 + t[:, None] * draws["noise"], t) - model(x0 + r[:, None] * draws["noise"], r)
    expected = ((difference.square().sum(1) + 0.06**2).sqrt() - 0.06) / (t - r)
    assert torch.allclose(method.loss(model, model, x0, draws, 35), expected, rtol=1e-9)


# ---- sCM and TrigFlow (§10) -----------------------------------------------------------------------------------


def test_time_and_noise_level_convert_both_ways():
    sigma = torch.tensor([0.002, 0.5, 80.0], dtype=torch.float64)
    t = trigflow_time(sigma, SIGMA_DATA)
    assert t[1].item() == pytest.approx(math.pi / 4)
    assert torch.allclose(trigflow_sigma(t, SIGMA_DATA), sigma, rtol=1e-12)
    x0, z = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    x_edm = x0 + sigma[:, None] * z  # x_t = cos t·x_σ with z_TrigFlow = σ_d·z
    assert torch.allclose(trigflow_noisy(x0, SIGMA_DATA * z, t), torch.cos(t)[:, None] * x_edm, atol=1e-12)


def test_edm_denoiser_converts_to_the_exact_trigflow_velocity(gaussian):
    """Data ~ N(μ, s²I): E[dx_t/dt | x_t] = −sin t·μ + cos t sin t(σ_d² − s²)/(cos²t s² + sin²t σ_d²)·(x_t − μ cos t)
    in closed form (Gaussian conditioning), against the velocity converted from the exact EDM denoiser."""
    mean, s = gaussian.mean, gaussian.std
    t = torch.tensor([0.01, 0.3, 0.8, 1.2, 1.5], dtype=torch.float64)
    x_t = torch.randn(5, 3, dtype=torch.float64)
    cos, sin = torch.cos(t)[:, None], torch.sin(t)[:, None]
    closed = -sin * mean + cos * sin * (SIGMA_DATA**2 - s**2) / (cos**2 * s**2 + sin**2 * SIGMA_DATA**2) * (
        x_t - cos * mean
    )
    velocity = edm_to_trigflow_velocity(gaussian.denoiser, x_t, t, SIGMA_DATA)
    assert torch.allclose(SIGMA_DATA * velocity, closed, rtol=1e-10, atol=1e-12)
    # f = cos t·x_t − sin t·σ_d·F of the exact velocity is E[x0 | x_t], the EDM denoiser at x_t/cos t
    posterior = mean + cos * s**2 / (cos**2 * s**2 + sin**2 * SIGMA_DATA**2) * (x_t - cos * mean)
    assert torch.allclose(cos * x_t - sin * SIGMA_DATA * velocity, posterior, atol=1e-12)


@pytest.mark.parametrize("conditioning", ["openai", "edm"])
def test_a_trigflow_model_on_an_edm_network_is_that_denoisers_velocity(conditioning):
    """F_θ = −net(x_t/σ_d, c_noise(σ_d tan t)) equals the velocity converted from Preconditioned(net) (§10)."""
    model = trigflow_mlp(conditioning=conditioning)
    denoiser = Preconditioned(model.net, "denoiser", SIGMA_DATA, 0.002, conditioning).double()
    t = torch.tensor([0.01, 0.4, 1.0, 1.5], dtype=torch.float64)
    x_t = torch.randn(4, 3, dtype=torch.float64)
    expected = edm_to_trigflow_velocity(denoiser, x_t, t, SIGMA_DATA)
    assert torch.allclose(model(x_t / SIGMA_DATA, t), expected, rtol=1e-9, atol=1e-10)
    # σ → t → σ_d tan t moves σ by an ulp, and the MLP embeds c_noise in fp32
    assert torch.allclose(model.edm_consistency(x_t, 0.7), denoiser(x_t, 0.7), rtol=1e-5, atol=1e-6)


def test_a_trigflow_model_conditions_on_openai_noise_by_default():
    """Built without a conditioning name, c_noise = 250·ln(σ_d tan t), as `Preconditioned`'s default (§2, §10)."""
    model = TrigFlowModel(MLP(3, width=8, depth=1, embedding_dim=8), SIGMA_DATA, 0.002, 80.0)
    t = torch.tensor([0.01, 0.4, 1.0, 1.5], dtype=torch.float64)
    assert torch.allclose(model.noise_input(t), 250 * torch.log(SIGMA_DATA * torch.tan(t)), rtol=1e-12)


def test_a_guided_trigflow_student_passes_w_through_every_entry_point():
    """F_θ, f_θ and f at an EDM sample all hand w to the network: with a trained (non-zero) w-embedding each changes
    with w, and edm_consistency equals f_θ(cos t·x_σ, t) at the same w (§10, LCM's w input)."""
    torch.manual_seed(0)
    net = MLP(3, width=16, depth=1, embedding_dim=8, guidance_input=True)
    torch.nn.init.normal_(net.guidance_embedding.linear.weight)  # as if trained; it starts at zero
    model = TrigFlowModel(net, SIGMA_DATA, 0.002, 80.0).double()
    x, sigma = torch.randn(4, 3, dtype=torch.float64), torch.full((4,), 0.7, dtype=torch.float64)
    t = torch.atan(sigma / SIGMA_DATA)
    w0, w3 = torch.zeros(4, dtype=torch.float64), torch.full((4,), 3.0, dtype=torch.float64)
    for w in (w0, w3):
        x_t = torch.cos(t)[:, None] * x
        assert torch.equal(model.edm_consistency(x, sigma, guidance=w), model.consistency(x_t, t, guidance=w))
    assert not torch.allclose(model(x, t, guidance=w0), model(x, t, guidance=w3))
    assert not torch.allclose(model.consistency(x, t, guidance=w0), model.consistency(x, t, guidance=w3))
    unguided, guided = (model.edm_consistency(x, sigma, guidance=w) for w in (w0, w3))
    assert not torch.allclose(unguided, guided)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_trigflow_boundary_is_exact(dtype):
    model = trigflow_mlp(dtype=dtype).eval()
    x = torch.randn(6, 3, dtype=dtype)
    assert torch.equal(model.consistency(x, torch.zeros(6, dtype=dtype)), x)
    assert torch.isfinite(model.consistency(x, torch.full((6,), HALF_PI, dtype=dtype))).all()


def central_difference(fn, x, t, tx, tt, h):
    return (fn(x + h * tx, t + h * tt) - fn(x - h * tx, t - h * tt)) / (2 * h)


def test_jvp_tangent_matches_a_central_difference():
    model = trigflow_mlp().eval()
    x0, z = torch.randn(5, 3, dtype=torch.float64), SIGMA_DATA * torch.randn(5, 3, dtype=torch.float64)
    t = torch.tensor([0.05, 0.3, 0.7, 1.1, 1.5], dtype=torch.float64)
    x_t, dxdt = trigflow_noisy(x0, z, t), sct_velocity(x0, z, t)
    velocity, derivative = velocity_tangent(model, x_t, t, dxdt, SIGMA_DATA)
    scale = torch.cos(t) * torch.sin(t)
    reference = central_difference(model, x_t / SIGMA_DATA, t, scale[:, None] * dxdt / SIGMA_DATA, scale, 1e-5)
    assert torch.equal(velocity, model(x_t / SIGMA_DATA, t))
    assert ((derivative - reference).norm() / reference.norm()).item() < 1e-3


def test_jvp_works_through_the_unet_with_channels_last_tangents_and_dropout():
    config = load_config(None, ["network.kind=unet", "network.preset=tiny", "network.dropout=0.2", "data.name=digits"])
    torch.manual_seed(0)
    model = build_model(config, "trigflow", (1, 8, 8)).to(memory_format=torch.channels_last)
    x = torch.randn(2, 1, 8, 8).contiguous(memory_format=torch.channels_last)
    t, tx = torch.tensor([0.3, 1.2]), torch.randn_like(x)
    state = torch.get_rng_state()
    online = model.train()(x, t)
    torch.set_rng_state(state)
    with torch.no_grad():
        velocity, derivative = torch.func.jvp(model, (x, t), (tx, torch.ones(2)))
    assert torch.equal(velocity, online)  # the same dropout mask in the JVP pass
    model = model.double().eval()
    x, t, tx = x.double(), t.double(), tx.double()
    scale = torch.cos(t) * torch.sin(t)
    with torch.no_grad():
        _, along_x = torch.func.jvp(lambda y: model(y, t), (x,), (tx,))
        reference = (model(x + 1e-3 * tx, t) - model(x - 1e-3 * tx, t)) / 2e-3
        _, derivative = torch.func.jvp(model, (x, t), (tx, scale))
    assert ((along_x - reference).norm() / reference.norm()).item() < 1e-3
    # along t the U-Net's fp32 timestep embedding limits difference quotients: compare with reverse mode instead
    _, reverse_mode = torch.autograd.functional.jvp(model, (x, t), (tx, scale))
    assert ((derivative - reverse_mode).norm() / reverse_mode.norm()).item() < 1e-6


def test_the_tangent_vanishes_at_the_exact_consistency_function(gaussian):
    """For data ~ N(μ, s²I) the exact TrigFlow f(x_t, t) = μ + √(s²/(s²+σ²))·(x_t/cos t − μ), σ = σ_d tan t, is
    constant along the exact ODE: with r = 1 and sCD's exact dx_t/dt, g (JVP included) is 0 (§10, §12)."""
    mean, s = gaussian.mean, gaussian.std

    def exact_velocity(x_scaled, t):  # F = (cos t·x_t − f)/(σ_d sin t)
        x_t, cos, sin = SIGMA_DATA * x_scaled, torch.cos(t)[:, None], torch.sin(t)[:, None]
        shrink = torch.sqrt(s**2 / (s**2 + trigflow_sigma(t, SIGMA_DATA)[:, None] ** 2))
        return (cos * x_t - mean - shrink * (x_t / cos - mean)) / (SIGMA_DATA * sin)

    t = torch.tensor([0.1, 0.5, 1.0, 1.4], dtype=torch.float64)
    x_t = torch.randn(4, 3, dtype=torch.float64)
    dxdt = SIGMA_DATA * edm_to_trigflow_velocity(gaussian.denoiser, x_t, t, SIGMA_DATA)
    velocity, derivative = velocity_tangent(exact_velocity, x_t, t, dxdt, SIGMA_DATA)
    assert scm_tangent(velocity, derivative, x_t, dxdt, t, 1.0, SIGMA_DATA).abs().max() < 1e-12
    assert scm_tangent(velocity, derivative, x_t, dxdt, t, 0.0, SIGMA_DATA).abs().max() > 1e-3


def test_tangent_formula_and_normalisation():
    x_t, dxdt = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    velocity, derivative = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([0.2, 0.6, 1.0, 1.4], dtype=torch.float64)
    cos, sin = torch.cos(t)[:, None], torch.sin(t)[:, None]
    g = scm_tangent(velocity, derivative, x_t, dxdt, t, 0.5, SIGMA_DATA)
    expected = -(cos**2) * (SIGMA_DATA * velocity - dxdt) - 0.5 * (cos * sin * x_t + SIGMA_DATA * derivative)
    assert torch.allclose(g, expected)
    normalised = normalise_tangent(g, 0.1)
    assert torch.allclose(normalised.norm(dim=1), g.norm(dim=1) / (g.norm(dim=1) + 0.1))
    assert [tangent_warmup(k, 100) for k in (0, 50, 100, 500)] == [0.0, 0.5, 1.0, 1.0]


def test_scm_loss_starts_as_the_squared_tangent_and_trains_the_weighting():
    config = tiny_config("train.method=scm", "network.dropout=0.3")
    method = build_method(config, None)
    model = build_model(config, "trigflow", (2,)).train()
    x0 = torch.randn(32, 2)
    draws = method.draw(0, 32, (2,), torch.Generator().manual_seed(0))

    def online(x, t, **options):
        return model(x, t, **options)

    loss = method.loss(online, online, x0, draws, 10_000)  # r = 1, w(t) = 0 at initialisation
    assert torch.isfinite(loss).all() and torch.all(loss > 0) and torch.all(loss < 1)
    loss.mean().backward()
    assert model.weighting.linear.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.net.parameters())


def test_trigflow_sampling_ignores_the_weighting_and_one_step_is_minus_sigma_d_velocity():
    config = tiny_config("train.method=scm")
    model = build_model(config, "trigflow", (2,)).eval()
    one = sample_model(model, config, (2,), 0, 16, steps=1, seed=3)
    noise = torch.randn((16, 2), generator=batch_generator(3, 0))
    with torch.no_grad():
        expected = -SIGMA_DATA * model(noise, HALF_PI)
    assert one.nfe == 1 and torch.allclose(one.x, expected, atol=1e-6)
    two = sample_model(model, config, (2,), 0, 16, steps=2, seed=3)
    with torch.no_grad():
        model.weighting.linear.weight.add_(1.0)
    again = sample_model(model, config, (2,), 0, 16, steps=2, seed=3)
    assert two.nfe == 2 and torch.equal(two.x, again.x)


# ---- runs through the loop -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("teacher") / "run"
    train(tiny_config("train.method=teacher", "network.width=24", "train.total_steps=20"), folder, progress=False)
    return folder


def method_overrides(name, teacher_run):
    return {
        "ict": ["train.method=ict", "network.dropout=0.2", "network.embedding=fourier", "network.fourier_scale=0.02"],
        "ect": ["train.method=ect", f"ect.teacher={teacher_run}", "ect.stage_steps=15", "network.dropout=0.2"],
        "sct": ["train.method=scm", "scm.tangent_warmup_steps=25", "network.dropout=0.2", "optim.grad_clip=1.0"],
        "scd": ["train.method=scm", "scm.mode=scd", "scm.teacher=exact", "scm.tangent_warmup_steps=10"],
        "scd-teacher": ["train.method=scm", "scm.mode=scd", f"scm.teacher={teacher_run}"],
    }[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ict", "ect", "sct", "scd", "scd-teacher"])
def test_trains_resumes_exactly_and_samples(tmp_path, teacher_run, name):
    config = tiny_config(*method_overrides(name, teacher_run))
    train(config, tmp_path / "straight", progress=False)
    assert all(math.isfinite(value) for value in losses(tmp_path / "straight"))
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    shutil.rmtree(list_checkpoints(tmp_path / "resumed")[-1])
    train(None, tmp_path / "resumed", resume=True, progress=False)
    straight, resumed = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "resumed")
    assert resumed.step == straight.step == 40 and set(straight.weights) == {"online", "ema-0.999"}
    for weight_set, tensors in straight.weights.items():
        for key, tensor in tensors.items():
            assert torch.equal(tensor, resumed.weights[weight_set][key]), (weight_set, key)
    assert losses(tmp_path / "straight") == losses(tmp_path / "resumed")
    if name.startswith("sc"):
        assert straight.parameterization == "trigflow" and "weighting.linear.weight" in straight.weights["online"]
    mixture = build_dataset(config.data).mixture  # the consistency error against the exact ODE, kept cheap here
    model = edm_consistency_function(straight.build_model().double())
    x0 = mixture.sample(32, torch.Generator().manual_seed(0))
    assert math.isfinite(consistency_error(model, mixture.denoiser, x0, [0.5, 5.0], 0.002, num_steps=16).mean)
    for steps in ("1", "2"):  # `cm sample`, in this process
        out = tmp_path / f"samples-{steps}"
        assert (
            cm(
                [
                    "sample",
                    "--checkpoint",
                    str(tmp_path / "straight"),
                    "--steps",
                    steps,
                    "--num",
                    "32",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        samples = np.load(out / "samples.npz")
        assert samples["samples"].shape == (32, 2) and int(samples["nfe"]) == int(steps)
        assert np.isfinite(samples["samples"]).all()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ect", "scm"])
def test_the_student_starts_from_the_teachers_weights(tmp_path, teacher_run, method):
    overrides = ["scm.mode=scd", f"scm.teacher={teacher_run}"] if method == "scm" else [f"ect.teacher={teacher_run}"]
    config = tiny_config(f"train.method={method}", *overrides, "train.total_steps=1")
    config.optim.lr = 1e-12
    train(config, tmp_path / "run", progress=False)
    teacher, student = load_checkpoint(teacher_run), load_checkpoint(tmp_path / "run")
    assert student.config.network.width == 24
    for key, tensor in teacher.weights["ema-0.999"].items():
        assert torch.allclose(student.weights["online"][key], tensor, atol=1e-8), key


@pytest.mark.slow
def test_bf16_scm_steps_are_finite(tmp_path):
    for jvp_fp32 in ("true", "false"):
        config = tiny_config(
            "train.method=scm", "train.precision=bf16", f"scm.jvp_fp32={jvp_fp32}", "network.dropout=0.2",
            "scm.tangent_warmup_steps=2", "train.total_steps=6", "train.checkpoint_every=6",
        )  # fmt: skip
        train(config, tmp_path / jvp_fp32, progress=False)
        assert all(math.isfinite(value) for value in losses(tmp_path / jvp_fp32))


@pytest.mark.slow
def test_bf16_scm_steps_on_a_unet_are_finite(tmp_path):
    config = tiny_config(
        "train.method=scm", "train.precision=bf16", "data.name=digits", "network.kind=unet", "network.preset=tiny",
        "network.dropout=0.1", "optim.batch_size=4", "train.total_steps=2", "train.checkpoint_every=2",
        "scm.tangent_warmup_steps=1",
    )  # fmt: skip
    train(config, tmp_path / "run", progress=False)
    assert all(math.isfinite(value) for value in losses(tmp_path / "run"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["scm.mode=ode"], "scm.mode"),
        (["train.method=scm", "scm.mode=scd"], "scm.teacher"),
        (["train.method=ect", "ect.teacher=exact"], "no weights"),
        (["ect.q=1"], "ect.q"),
        (["ect.stage_steps=0"], "ect.stage_steps"),
        (["ict.s0=20", "ict.s1=10"], "ict.s0"),
        (["ict.distance=lpips2"], "ict.distance"),
        (["scm.tangent_norm_c=0"], "tangent_norm_c"),
    ],
)
def test_bad_improved_settings_raise_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(None, overrides)
    assert "\n" not in str(info.value)
