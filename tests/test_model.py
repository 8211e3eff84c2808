"""The public model object: `tc.load` for each kind of checkpoint, `Model.sample` against Algorithm 1 written out
and against `cm sample`, each editing task against Algorithm 4 written out, and bad arguments refused by name."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import torch_consistency as tc
from torch_consistency.checkpoint import PARAMETERIZATIONS, save_checkpoint
from torch_consistency.configs import load_config
from torch_consistency.editing import LUMINANCE
from torch_consistency.generate import placed
from torch_consistency.nets import build_model
from torch_consistency.sigmas import karras_sigmas
from torch_consistency.solvers import solve_ode
from written_out import batch_generator

TINY = ["data.name=digits", "network.width=32", "network.depth=1", "network.embedding_dim=16"]
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
GUIDED_STUDENT = ["cd.teacher=t", "cd.guidance=input", "cd.guidance_min=0", "cd.guidance_max=3"]


def save(run_dir, method, shape=(1, 8, 8), num_classes=0, *overrides):
    """An untrained checkpoint of a tiny MLP (online and EMA weights differ, so the chosen set matters)."""
    config = load_config(None, [*TINY, f"train.method={method}", *overrides])
    model = build_model(config, PARAMETERIZATIONS.get(method, "consistency"), shape, num_classes)
    ema = build_model(config, PARAMETERIZATIONS.get(method, "consistency"), shape, num_classes)
    save_checkpoint(run_dir, 3, config, shape, num_classes, {"online": model, "ema-0.999": ema}, {}, keep=1)
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    conditional = ["network.class_conditional=true"]
    cfg = [*conditional, "teacher.label_dropout=0.2"]
    return {
        "ct": save(root / "ct", "ct"),
        "rgb": save(root / "rgb", "ct", (3, 8, 8)),
        "scm": save(root / "scm", "scm"),
        "teacher": save(root / "teacher", "teacher"),
        "conditional": save(root / "conditional", "ct", (1, 8, 8), 3, *conditional),
        "cfg-teacher": save(root / "cfg-teacher", "teacher", (1, 8, 8), 3, *cfg),
        "guided": save(root / "guided", "cd", (1, 8, 8), 3, *cfg, *GUIDED_STUDENT),
        "vectors": save(root / "vectors", "ct", (2,), 0, "data.name=eight_gaussians"),
        "unet": save(root / "unet", "ct", (1, 8, 8), 0, "network.kind=unet", "network.preset=tiny"),
    }


def noise(seed, shape):
    """The noise of a sampling or editing call's first batch with `seed`."""
    return torch.randn(shape, generator=batch_generator(seed, 0))


# ---------------------------------------------------------------- loading


def test_the_package_exports_the_api():
    assert {"load", "Model", "Samples", "EditResult", "UserInputError", "ConfigError", "CheckpointError"} <= set(
        tc.__all__
    )
    assert all(hasattr(tc, name) for name in tc.__all__)
    assert tc.__version__.count(".") == 2


def test_load_each_kind_of_checkpoint(runs):
    kinds = {"ct": "consistency", "scm": "trigflow", "teacher": "denoiser"}
    for name, parameterization in kinds.items():
        model = tc.load(runs[name])
        assert isinstance(model, tc.Model)
        assert (model.parameterization, model.method, model.sample_shape) == (parameterization, name, (1, 8, 8))
        assert model.num_classes == 0 and model.weights == "ema-0.999" and model.checkpoint.name == "step-00000003"
        assert model.config.train.method == name and model.guidance is None
    ema, online = tc.load(runs["ct"] / "checkpoints" / "step-00000003"), tc.load(runs["ct"], weights="online")
    assert online.weights == "online"
    assert not torch.equal(ema.network.net.input.weight, online.network.net.input.weight)
    assert tc.load(runs["conditional"]).num_classes == 3
    assert tc.load(runs["cfg-teacher"]).guidance == tc.GuidanceRange(1.0, 0.0, math.inf)
    assert tc.load(runs["guided"]).guidance == tc.GuidanceRange(1.0, 0.0, 3.0)


def test_load_refuses_missing_and_foreign_folders(tmp_path, runs):
    with pytest.raises(tc.CheckpointError, match="does not exist"):
        tc.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(tc.CheckpointError, match="neither"):
        tc.load(tmp_path / "empty")
    with pytest.raises(tc.CheckpointError, match="has no weights"):
        tc.load(runs["ct"], weights="ema-0.5")


# ---------------------------------------------------------------- sampling


def test_consistency_sampling_is_algorithm_1(runs):
    model = tc.load(runs["ct"])
    f = model.network
    sigmas = [SIGMA_MAX, 0.8]
    out = model.sample(5, sigmas=sigmas, seed=7)
    generator = batch_generator(7, 0)
    z = torch.randn((5, 1, 8, 8), generator=generator)
    x = f(z * SIGMA_MAX, torch.full((5,), SIGMA_MAX))
    x = x + math.sqrt(0.8**2 - SIGMA_MIN**2) * torch.randn((5, 1, 8, 8), generator=generator)
    x = f(x, torch.full((5,), 0.8))
    torch.testing.assert_close(out.x, x, rtol=0, atol=1e-6)
    assert out.nfe == 2 and out.sigmas == sigmas and out.labels is None and out.guidance is None
    one = model.sample(5, seed=7)  # default: one step from σ_max
    torch.testing.assert_close(one.x, f(z * SIGMA_MAX, torch.full((5,), SIGMA_MAX)), rtol=0, atol=1e-6)
    assert one.sigmas == [SIGMA_MAX]


def test_sampling_is_deterministic_and_seeded_per_batch(runs):
    model = tc.load(runs["conditional"])
    first, again = model.sample(6, steps=2, seed=3), model.sample(6, steps=2, seed=3)
    assert torch.equal(first.x, again.x) and torch.equal(first.labels, again.labels)
    assert not torch.equal(model.sample(6, steps=2, seed=4).x, first.x)
    generator = batch_generator(3, 0)  # random labels are drawn after the batch's noise
    torch.randn((6, 1, 8, 8), generator=generator)
    assert torch.equal(first.labels, torch.randint(0, 3, (6,), generator=generator))
    batched = model.sample(6, steps=2, seed=3, batch_size=4)  # batch b draws from its own generator
    assert torch.equal(batched.x[:4], model.sample(4, steps=2, seed=3).x)
    second = batch_generator(3, 1)  # batch 1's generator: its noise, then its labels
    torch.randn((2, 1, 8, 8), generator=second)
    assert torch.equal(batched.labels[4:], torch.randint(0, 3, (2,), generator=second))
    # nearby seeds share no batch (with seed + b, seed 4's first batch was seed 3's second)
    assert not torch.equal(batched.x[4:], model.sample(2, steps=2, seed=4).x)
    chosen = model.sample(6, labels=[0, 2], seed=3)
    assert chosen.labels.tolist() == [0, 0, 0, 2, 2, 2]


def test_trigflow_and_teacher_sampling(runs):
    scm = tc.load(runs["scm"])
    out = scm.sample(3, seed=1)  # one step at t = π/2: x = f(σ_d·z, π/2)
    z = noise(1, (3, 1, 8, 8))
    expected = scm.network.consistency(0.5 * z, torch.full((3,), math.pi / 2))
    torch.testing.assert_close(out.x, expected, rtol=0, atol=1e-6)
    assert out.sigmas == [math.pi / 2]
    teacher = tc.load(runs["teacher"])
    out = teacher.sample(3, seed=1, teacher_steps=4, solver="heun")
    levels = torch.cat([karras_sigmas(4, SIGMA_MIN, SIGMA_MAX, 7.0), torch.zeros(1, dtype=torch.float64)])
    expected = solve_ode(teacher.network, z * SIGMA_MAX, levels, "heun")
    torch.testing.assert_close(out.x, expected.x, rtol=0, atol=1e-6)
    assert out.nfe == 7 and out.sigmas == levels.tolist()


def test_sampling_places_the_network_once_and_in_eval_mode(runs):
    model = tc.load(runs["unet"])
    net = model.network
    convolution = next(p for p in net.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] > 1)
    assert not placed(net, "cpu", torch.channels_last) and not convolution.is_contiguous(
        memory_format=torch.channels_last
    )
    net.train()
    first = model.sample(2, seed=1).x
    assert placed(net, "cpu", torch.channels_last) and not any(module.training for module in net.modules())
    assert convolution.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(model.sample(2, seed=1).x, first)


def test_sampling_compile_runs_the_network_compiled_with_equal_samples(runs):
    """sampling.compile (cm sample --compile): torch.compile'd consistency and TrigFlow networks, same samples."""
    from torch._dynamo.utils import counters

    for name in ("ct", "scm"):
        model = tc.load(runs[name])
        eager = model.sample(4, steps=2, seed=5)
        model.config.sampling.compile = True
        captured = counters["stats"]["calls_captured"]
        compiled = model.sample(4, steps=2, seed=5)
        assert counters["stats"]["calls_captured"] > captured, name  # dynamo traced the network
        torch.testing.assert_close(compiled.x, eager.x, rtol=1e-5, atol=1e-5)


def cm(*args):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "torch_consistency", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_sample_equals_cm_sample_bit_for_bit(tmp_path, runs):
    result = cm("sample", "--checkpoint", runs["vectors"], "--num", 9, "--steps", 2, "--seed", 11, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    written = np.load(tmp_path / "samples.npz")
    drawn = tc.load(runs["vectors"]).sample(9, steps=2, seed=11)
    assert np.array_equal(written["samples"], drawn.x.numpy()) and int(written["nfe"]) == drawn.nfe == 2


# ---------------------------------------------------------------- editing


def test_inpaint_is_algorithm_4(runs):
    model = tc.load(runs["ct"])
    images = torch.rand(2, 1, 8, 8) * 2 - 1
    mask = torch.zeros(8, 8)
    mask[2:6, 3:7] = 1
    out = model.inpaint(images, mask, sigmas=[3.0], seed=5)
    z = noise(5, images.shape)
    generated = model.network(images * (1 - mask) + 3.0 * z, torch.full((2,), 3.0))
    torch.testing.assert_close(out.x, torch.where(mask.bool(), generated, images), rtol=0, atol=1e-6)
    assert out.nfe == 1 and torch.equal(out.x[..., mask == 0], images[..., mask == 0])
    assert model.inpaint(images, mask, seed=5).nfe == 40  # the default schedule


def test_strokes_denoise_and_interpolation_are_written_out(runs):
    model = tc.load(runs["ct"])
    f = model.network
    strokes = torch.rand(2, 1, 8, 8) * 2 - 1
    out = model.edit_strokes(strokes, seed=2)  # the paper's t = 5.38, 2.24
    generator = batch_generator(2, 0)
    x = f(strokes + 5.38 * torch.randn(strokes.shape, generator=generator), torch.full((2,), 5.38))
    x = f(
        x + math.sqrt(2.24**2 - SIGMA_MIN**2) * torch.randn(strokes.shape, generator=generator), torch.full((2,), 2.24)
    )
    torch.testing.assert_close(out.x, x, rtol=0, atol=1e-6)
    assert out.nfe == 2
    torch.testing.assert_close(model.denoise(strokes, 0.5).x, f(strokes, torch.full((2,), 0.5)), rtol=0, atol=0)
    a, b = noise(0, (1, 1, 8, 8)), noise(1, (1, 1, 8, 8))
    path = model.interpolate(a, b, [0, 0.5, 1], noises=True)  # one step from σ_max along the slerp of a and b
    assert path.x.shape == (1, 3, 1, 8, 8) and path.nfe == 1
    torch.testing.assert_close(path.x[:, 0], f(SIGMA_MAX * a, torch.full((1,), SIGMA_MAX)), rtol=0, atol=1e-5)
    torch.testing.assert_close(path.x[:, 2], f(SIGMA_MAX * b, torch.full((1,), SIGMA_MAX)), rtol=0, atol=1e-5)
    images = model.interpolate(strokes[:1], strokes[1:], [0.25], seed=3)
    assert images.x.shape == (1, 1, 1, 8, 8) and images.nfe == 2


def test_colorize_and_super_resolve_keep_the_known_part(runs):
    rgb = tc.load(runs["rgb"])
    grey = torch.rand(2, 1, 8, 8) * 1.4 - 0.7
    colour = rgb.colorize(grey, steps=2, seed=1).x
    luminance = sum(weight * colour[:, c] for c, weight in enumerate(LUMINANCE))
    torch.testing.assert_close(luminance, grey[:, 0], atol=1e-5, rtol=0)
    model = tc.load(runs["ct"])
    low = torch.rand(2, 1, 4, 4) * 2 - 1
    high = model.super_resolve(low, 2, steps=3).x
    assert high.shape == (2, 1, 8, 8)
    torch.testing.assert_close(high.reshape(2, 1, 4, 2, 4, 2).mean((3, 5)), low, atol=1e-5, rtol=0)


def test_trigflow_and_teacher_edits_keep_the_known_part(runs):
    images = torch.rand(2, 1, 8, 8) * 2 - 1
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :] = 1
    for name, nfe in (("scm", 2), ("teacher", 5)):
        model = tc.load(runs[name])
        options = {"teacher_steps": 3} if name == "teacher" else {"steps": 2}
        out = model.inpaint(images, mask, seed=0, **options)
        assert out.nfe == nfe and torch.equal(out.x[..., 4:, :], images[..., 4:, :])
        assert not torch.equal(out.x[..., :4, :], images[..., :4, :])
    teacher = tc.load(runs["teacher"])
    assert teacher.edit_strokes(images, teacher_steps=3, solver="euler").nfe == 3  # Euler over 3 levels + σ = 0


def test_guided_and_conditional_edits_take_their_labels_and_w(runs):
    guided = tc.load(runs["guided"])
    images = torch.rand(2, 1, 8, 8) * 2 - 1
    default = guided.denoise(images, 1.0, labels=2).x
    f = guided.network
    labels = torch.tensor([2, 2])
    torch.testing.assert_close(default, f(images, torch.ones(2), labels, guidance=torch.ones(2)), rtol=0, atol=0)
    at_two = guided.denoise(images, 1.0, labels=2, guidance=2.0).x
    torch.testing.assert_close(at_two, f(images, torch.ones(2), labels, guidance=torch.full((2,), 2.0)), rtol=0, atol=0)


# ---------------------------------------------------------------- bad arguments


BAD = [
    ("conditional", lambda m: m.sample(2, labels=3), "label 3"),
    ("conditional", lambda m: m.sample(2, labels="some"), "labels"),
    ("ct", lambda m: m.sample(2, labels=0), "labels"),
    ("ct", lambda m: m.sample(2, guidance=2.0), "guidance"),
    ("guided", lambda m: m.sample(2, guidance=5.0), "guidance"),
    ("cfg-teacher", lambda m: m.sample(2, guidance=-1.0), "guidance"),
    ("ct", lambda m: m.sample(2, steps=0), "steps"),
    ("ct", lambda m: m.sample(0), "n must"),
    ("ct", lambda m: m.sample(2, batch_size=0), "batch_size"),
    ("ct", lambda m: m.sample(2, steps=2, sigmas=[80, 1]), "steps or sigmas"),
    ("ct", lambda m: m.sample(2, sigmas=[1, 80]), "sigmas"),
    ("ct", lambda m: m.sample(2, sigmas=[80, 0.001]), "sigmas"),
    ("ct", lambda m: m.sample(2, solver="heun"), "solver"),
    ("teacher", lambda m: m.sample(2, steps=2), "teacher_steps"),
    ("teacher", lambda m: m.sample(2, teacher_steps=0), "teacher_steps"),
    ("ct", lambda m: m.inpaint(torch.zeros(1, 1, 8, 8), torch.zeros(4, 4)), "mask"),
    ("ct", lambda m: m.inpaint(torch.zeros(1, 1, 8, 8), torch.full((8, 8), 0.5)), "mask"),
    ("ct", lambda m: m.inpaint(torch.zeros(1, 1, 6, 6), torch.zeros(6, 6)), "images"),
    ("ct", lambda m: m.inpaint(torch.zeros(1, 3, 8, 8), torch.zeros(8, 8)), "images"),
    ("ct", lambda m: m.inpaint(np.zeros((1, 1, 8, 8)), torch.zeros(8, 8)), "images"),
    ("ct", lambda m: m.inpaint(torch.zeros(1, 1, 8, 8), torch.zeros(8, 8), steps=0), "steps"),
    ("ct", lambda m: m.colorize(torch.zeros(1, 1, 8, 8)), "colorization"),
    ("rgb", lambda m: m.colorize(torch.zeros(1, 3, 8, 8)), "grey"),
    ("ct", lambda m: m.super_resolve(torch.zeros(1, 1, 4, 4), 3), "factor"),
    ("ct", lambda m: m.super_resolve(torch.zeros(1, 1, 8, 8), 2), "low_res"),
    ("ct", lambda m: m.edit_strokes(torch.zeros(1, 1, 8, 8), sigmas=[1, 2]), "time points"),
    ("ct", lambda m: m.denoise(torch.zeros(1, 1, 8, 8), 0.0), "σ_min"),
    ("ct", lambda m: m.interpolate(torch.zeros(1, 1, 8, 8), torch.zeros(2, 1, 8, 8), [0.5]), "differ"),
    ("ct", lambda m: m.interpolate(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), []), "alphas"),
    ("conditional", lambda m: m.denoise(torch.zeros(1, 1, 8, 8), 1.0), "labels"),
    ("teacher", lambda m: m.inpaint(torch.zeros(1, 1, 8, 8), torch.zeros(8, 8), steps=3), "teacher_steps"),
    ("teacher", lambda m: m.interpolate(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), [0.5]), "teacher"),
    ("vectors", lambda m: m.denoise(torch.zeros(1, 2), 1.0), "image model"),
    ("ct", lambda m: m.to("gpu7"), "device"),
]


@pytest.mark.parametrize(("name", "call", "fragment"), BAD, ids=[f"{i}-{case[2]}" for i, case in enumerate(BAD)])
def test_bad_arguments_raise_a_user_error_that_names_them(runs, name, call, fragment):
    model = tc.load(runs[name])
    with pytest.raises(tc.UserInputError) as raised:
        call(model)
    message = str(raised.value)
    assert fragment in message and "\n" not in message, message
