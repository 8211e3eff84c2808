"""Zero-shot editing (reference.md §7): transforms, Algorithm 4 against exact Gaussian laws, and `cm edit`."""

import copy
import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import torch_consistency as tc
from torch_consistency.edit_tasks import EditInputs, edit_in_batches
from torch_consistency.editing import (
    LUMINANCE,
    ChannelMixing,
    Identity,
    PatchTransform,
    check_images,
    check_task_fits_model,
    colorization_matrix,
    colorize,
    denoise,
    edit,
    inpaint,
    inpaint_with_teacher,
    interpolate_images,
    interpolate_noises,
    patch_mean_matrix,
    slerp,
    stroke_guided,
    super_resolve,
)
from torch_consistency.errors import ConfigError, DataError
from torch_consistency.gaussian import GaussianMixture, gaussian_consistency_function, gaussian_denoiser
from torch_consistency.samplers import renoise_std
from torch_consistency.sigmas import default_sampling_sigmas, karras_sigmas
from torch_consistency.solvers import solve_ode
from written_out import batch_generator

EPS = 0.002
PAPER_Q = torch.tensor([[0.4471, -0.8204, 0.3563], [0.8780, 0.4785, 0.0], [0.1705, -0.3129, -0.9343]])


# ---------------------------------------------------------------- transforms


def test_colorization_matrix_is_orthogonal_with_the_luminance_first_column():
    q = colorization_matrix()
    assert q.dtype == torch.float64
    assert torch.allclose(q.T @ q, torch.eye(3, dtype=torch.float64), atol=1e-6)
    luminance = torch.tensor(LUMINANCE, dtype=torch.float64)
    assert torch.allclose(q[:, 0], luminance / luminance.norm(), atol=1e-12)
    assert q[:, 0].sum() > 0
    signs = torch.sign((q * PAPER_Q.double()).sum(0))  # the paper's Q up to the signs of its columns (4 decimals)
    assert torch.allclose(q * signs, PAPER_Q.double(), atol=1e-4)


@pytest.mark.parametrize("p", [2, 4, 7])
def test_patch_mean_matrix_is_orthogonal_with_a_constant_first_column(p):
    q = patch_mean_matrix(p)
    assert q.dtype == torch.float64 and q.shape == (p * p, p * p)
    assert torch.allclose(q.T @ q, torch.eye(p * p, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(q[:, 0], torch.full((p * p,), 1.0 / p, dtype=torch.float64), atol=1e-12)


def test_transforms_invert_and_the_patch_transform_keeps_means():
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    for transform in (Identity(), ChannelMixing(colorization_matrix()), PatchTransform(patch_mean_matrix(3))):
        assert torch.allclose(transform.inverse(transform.forward(x)), x, atol=1e-12)
    coefficients = PatchTransform(patch_mean_matrix(3)).forward(x)
    assert coefficients.shape == (2, 3, 2, 2, 9)
    assert torch.allclose(coefficients[..., 0] / 3, torch.nn.functional.avg_pool2d(x, 3), atol=1e-12)


# ---------------------------------------------------- tasks with an exact f


def image_oracle(channels=3, size=8):
    """The exact f for images whose pixels are independent N(m, 0.5²) around a fixed mean image m."""
    mean = 0.5 * torch.rand(channels, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return lambda x, sigma: gaussian_consistency_function(x, sigma, mean.to(x.dtype), 0.5, EPS)


def test_edit_is_algorithm_4_step_by_step():
    """`edit` against Algorithm 4 written out for colorization (a non-identity A), with the same z's."""
    f, levels = image_oracle(), [80.0, 5.0, 0.5]
    y = torch.rand(2, 3, 8, 8, dtype=torch.float64) * 2 - 1
    q, mask = colorization_matrix(), torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64).reshape(3, 1, 1)
    a, a_inv = (lambda v: torch.einsum("bchw,cd->bdhw", v, q)), (lambda c: torch.einsum("bdhw,cd->bchw", c, q))
    result = edit(f, y, ChannelMixing(q), mask, levels, EPS, torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)
    kept = a(y) * (1 - mask)
    x = a_inv(kept) + levels[0] * torch.randn(y.shape, generator=generator, dtype=y.dtype)
    for n, t in enumerate(levels):
        if n > 0:
            x = x + (t**2 - EPS**2) ** 0.5 * torch.randn(y.shape, generator=generator, dtype=y.dtype)
        x = a_inv(kept + a(f(x, torch.full((2,), t, dtype=y.dtype))) * mask)
    assert result.nfe == 3
    assert torch.allclose(result.x, x, atol=1e-12)


@pytest.mark.parametrize("solver", ["heun", "euler"])
def test_the_teacher_baseline_is_replacement_guidance_step_by_step(solver):
    """`inpaint_with_teacher` written out: before each step the kept pixels become y + σ·z (one z throughout), then
    a Heun step (Euler on the last step to 0, or Euler throughout), and a last projection onto y."""

    def denoiser(x, sigma):  # mixes pixels, so that the generated ones see the kept ones
        return (x + x.mean((2, 3), keepdim=True)) / (1 + sigma[:, None, None, None] ** 2)

    levels = [3.0, 1.0, 0.3, 0.0]
    y = torch.rand(2, 1, 4, 4, dtype=torch.float64) * 2 - 1
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[1:3] = True
    out = inpaint_with_teacher(denoiser, y, mask, levels, solver, torch.Generator().manual_seed(4))
    z = torch.randn(y.shape, generator=torch.Generator().manual_seed(4), dtype=y.dtype)
    x = torch.where(mask, 0.0, y) + levels[0] * z
    for sigma, sigma_next in itertools.pairwise(levels):
        x = torch.where(mask, x, y + sigma * z)
        d = (x - denoiser(x, torch.full((2,), sigma))) / sigma
        euler = x + (sigma_next - sigma) * d
        if solver == "euler" or sigma_next == 0:
            x = euler
        else:
            d_next = (euler - denoiser(euler, torch.full((2,), sigma_next))) / sigma_next
            x = x + (sigma_next - sigma) * (d + d_next) / 2
    assert out.nfe == (5 if solver == "heun" else 3)
    assert torch.allclose(out.x, torch.where(mask, x, y), atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_known_part_equals_the_reference(dtype):
    """Inpainting keeps pixels bit for bit; colorization the luminance; super-resolution the patch means."""
    f, levels, tol = (
        image_oracle(),
        default_sampling_sigmas(4, EPS, 80.0, 7.0),
        1e-12 if dtype == torch.float64 else 2e-6,
    )
    generator = torch.Generator().manual_seed(0)
    y = (torch.rand(3, 3, 8, 8, generator=generator) * 2 - 1).to(dtype)
    mask = torch.zeros(8, 8)
    mask[2:6, 1:5] = 1
    out = inpaint(f, y, mask, sigmas=levels, sigma_min=EPS, generator=generator, clip_denoised=True)
    assert out.nfe == 4 and out.x.dtype == dtype
    assert torch.equal(out.x[..., mask == 0], y[..., mask == 0])
    assert not torch.allclose(out.x[..., mask == 1], y[..., mask == 1])
    grey = y[:, :1]
    out = colorize(f, grey, sigmas=levels, sigma_min=EPS, generator=generator)
    luminance = torch.einsum("bchw,c->bhw", out.x, torch.tensor(LUMINANCE, dtype=dtype))
    assert out.x.shape == (3, 3, 8, 8) and torch.allclose(luminance, grey[:, 0], atol=tol)
    low = y[..., :4, :4]
    out = super_resolve(f, low, 2, sigmas=levels, sigma_min=EPS, generator=generator)
    assert out.x.shape == (3, 3, 8, 8)
    assert torch.allclose(torch.nn.functional.avg_pool2d(out.x, 2), low, atol=tol)
    teacher = lambda x, sigma: gaussian_denoiser(x, sigma, torch.zeros((), dtype=dtype), 0.5)  # noqa: E731
    grid = torch.cat([karras_sigmas(5, EPS, 80.0, 7.0), torch.zeros(1, dtype=torch.float64)])
    out = inpaint_with_teacher(teacher, y, mask, grid, "heun", generator)
    assert out.nfe == 2 * 5 - 1 and torch.equal(out.x[..., mask == 0], y[..., mask == 0])


def test_stroke_guided_is_algorithm_1_started_at_the_strokes():
    f, strokes = image_oracle(), torch.rand(2, 3, 8, 8, dtype=torch.float64) * 2 - 1
    out = stroke_guided(f, strokes, sigma_min=EPS, generator=torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)
    x = strokes + 5.38 * torch.randn(strokes.shape, generator=generator, dtype=strokes.dtype)
    x = f(x, torch.full((2,), 5.38, dtype=x.dtype))
    x = x + renoise_std(2.24, EPS) * torch.randn(strokes.shape, generator=generator, dtype=strokes.dtype)
    assert out.nfe == 2 and torch.allclose(out.x, f(x, torch.full((2,), 2.24, dtype=x.dtype)), atol=1e-12)


def test_denoise_and_interpolation():
    f = image_oracle()
    noisy = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    out = denoise(f, noisy, 0.7, sigma_min=EPS)
    assert out.nfe == 1 and torch.equal(out.x, f(noisy, torch.full((2,), 0.7, dtype=torch.float64)))
    with pytest.raises(ConfigError):
        denoise(f, noisy, 0.001, sigma_min=EPS)
    z_a, z_b = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.randn(2, 3, 8, 8, dtype=torch.float64)
    assert torch.allclose(slerp(z_a, z_b, 0.0), z_a) and torch.allclose(slerp(z_a, z_b, 1.0), z_b)
    e1, e2 = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    assert torch.allclose(slerp(e1, e2, 0.5).norm(), torch.tensor(3.0))  # a great circle keeps the norm
    out = interpolate_noises(f, z_a, z_b, [0.0, 0.5, 1.0], sigmas=[80.0], sigma_min=EPS)
    assert out.x.shape == (2, 3, 3, 8, 8) and out.nfe == 1
    assert torch.allclose(out.x[:, 0], f(80 * z_a, torch.full((2,), 80.0, dtype=torch.float64)), atol=1e-12)
    image_a, image_b = torch.rand_like(z_a), -torch.rand_like(z_b)
    out = interpolate_images(f, image_a, image_b, [0.0, 1.0], sigma_min=EPS, generator=torch.Generator().manual_seed(2))
    for k, image in enumerate((image_a, image_b)):  # the endpoints are SDEdit reconstructions with the shared z's
        alone = stroke_guided(f, image, sigma_min=EPS, generator=torch.Generator().manual_seed(2))
        assert torch.allclose(out.x[:, k], alone.x, atol=1e-12)


def one_line(error):
    return "\n" not in str(error.value) and len(str(error.value)) > 10


def test_bad_inputs_raise_one_line_errors():
    f, y, levels = image_oracle(), torch.zeros(1, 3, 8, 8), [80.0]
    cases = [
        (DataError, lambda: inpaint(f, y, torch.zeros(4, 4), sigmas=levels, sigma_min=EPS)),
        (DataError, lambda: inpaint(f, y, torch.full((8, 8), 0.5), sigmas=levels, sigma_min=EPS)),
        (DataError, lambda: colorize(f, y, sigmas=levels, sigma_min=EPS)),
        (ConfigError, lambda: inpaint(f, y, torch.zeros(8, 8), sigmas=[1.0, 2.0], sigma_min=EPS)),
        (ConfigError, lambda: inpaint(f, y, torch.zeros(8, 8), sigmas=[1e-3], sigma_min=EPS)),
        (ConfigError, lambda: super_resolve(f, y, 1, sigmas=levels, sigma_min=EPS)),
        (DataError, lambda: check_images(y, (1, 8, 8))),
        (DataError, lambda: check_images(y, (3, 16, 16))),
        (ConfigError, lambda: check_task_fits_model("colorize", (1, 8, 8))),
        (ConfigError, lambda: check_task_fits_model("super-resolve", (3, 8, 8), factor=3)),
    ]
    for kind, call in cases:
        with pytest.raises(kind) as error:
            call()
        assert one_line(error), error.value
    check_images(y, (3, 8, 8))
    check_task_fits_model("super-resolve", (3, 8, 8), factor=4)


# ---------------------------------------- Algorithm 4 on correlated Gaussian data

RHO, STD = 0.8, 0.5
MU = torch.tensor([0.2, -0.1, 0.3, 0.0], dtype=torch.float64)
SIGMA = STD**2 * RHO ** (torch.arange(4.0)[:, None] - torch.arange(4.0)[None]).abs().double()  # AR(1) "pixels"
KNOWN, HOLE, Y_KNOWN = [0, 3], [1, 2], torch.tensor([0.6, -0.5], dtype=torch.float64)
EIGENVALUES, EIGENVECTORS = torch.linalg.eigh(SIGMA)


def ode_map(sigma):
    """M(σ) = (Σ+ε²I)^{1/2}(Σ+σ²I)^{-1/2}: the exact f of N(μ, Σ) is μ + M(σ)(x − μ) (Σ and σ²I commute)."""
    scale = (
        (EIGENVALUES + EPS**2) / (EIGENVALUES + torch.as_tensor(sigma, dtype=torch.float64)[..., None] ** 2)
    ).sqrt()
    return torch.einsum("ij,...j,kj->...ik", EIGENVECTORS, scale, EIGENVECTORS)


def correlated_f(x, sigma):
    if (sigma == sigma[0]).all():  # one σ for the batch (always, in Algorithm 4): one matrix
        return MU + (x - MU) @ ode_map(sigma[0]).T
    return MU + torch.einsum("bij,bj->bi", ode_map(sigma), x - MU)


def conditional():
    """N(μ_a + Σ_ab Σ_bb⁻¹(y_b − μ_b), Σ_aa − Σ_ab Σ_bb⁻¹ Σ_ba): the exact law of the hole given the rest."""
    s_ab, s_bb = SIGMA[HOLE][:, KNOWN], SIGMA[KNOWN][:, KNOWN]
    mean = MU[HOLE] + s_ab @ torch.linalg.solve(s_bb, Y_KNOWN - MU[KNOWN])
    return mean, SIGMA[HOLE][:, HOLE] - s_ab @ torch.linalg.solve(s_bb, s_ab.T)


def algorithm4_law(levels):
    """Law of the hole after Algorithm 4 with the exact f: linear-Gaussian, so mean and covariance propagate exactly.

    Step 1 starts from x = (0 in the hole, y_b) + t_1 z; step n ≥ 2 from (x_a, y_b) + √(t_n² − ε²) z.
    """
    d = Y_KNOWN - MU[KNOWN]
    mean, cov = torch.zeros(2, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64)
    for n, t in enumerate(levels):
        m = ode_map(t)
        m_aa, m_ab, m2_aa = m[HOLE][:, HOLE], m[HOLE][:, KNOWN], (m @ m)[HOLE][:, HOLE]
        added = t**2 if n == 0 else t**2 - EPS**2  # variance of the noise added before f(·, t)
        mean = MU[HOLE] + m_aa @ (mean - MU[HOLE]) + m_ab @ d
        cov = m_aa @ cov @ m_aa.T + added * m2_aa
    return mean, cov


def sample_hole(levels, count, seed):
    reference = torch.full((count, 4), 7.0, dtype=torch.float64)  # hole values must not leak (line 1 zeroes them)
    reference[:, KNOWN] = Y_KNOWN
    mask = torch.zeros(4)
    mask[HOLE] = 1
    out = inpaint(
        correlated_f, reference, mask, sigmas=levels, sigma_min=EPS, generator=torch.Generator().manual_seed(seed)
    )
    assert torch.equal(out.x[:, KNOWN], reference[:, KNOWN])
    return out.x[:, HOLE]


def assert_moments(samples, mean, cov, z=5.0):
    """Sample moments within z standard errors: SE(mean_i) = √(C_ii/n), SE(C_ij) = √((C_ii C_jj + C_ij²)/n)."""
    n, var = len(samples), torch.diagonal(cov)
    assert ((samples.mean(0) - mean).abs() <= z * (var / n).sqrt()).all(), (samples.mean(0), mean)
    se_cov = ((var[:, None] * var[None] + cov**2) / n).sqrt()
    assert ((torch.cov(samples.T) - cov).abs() <= z * se_cov).all(), (torch.cov(samples.T), cov)


def test_the_correlated_oracle_is_the_ode_map_of_the_exact_denoiser():
    mixture = GaussianMixture(torch.ones(1), MU[None], SIGMA[None])
    x = MU + 2.0 * torch.randn(16, 4, dtype=torch.float64)
    solved = solve_ode(mixture.denoiser, x, karras_sigmas(200, EPS, 2.0, 7.0), "heun").x  # Heun's error ~7e-5
    assert torch.allclose(correlated_f(x, torch.full((16,), 2.0, dtype=torch.float64)), solved, atol=1e-4)


@pytest.mark.parametrize("steps", [1, 4, 40])
def test_inpainting_follows_the_law_of_algorithm_4(steps):
    """Monte Carlo over 10 000 samples matches the exactly propagated law of Algorithm 4 within 5 standard errors.

    5 SE: a correct implementation fails with probability < 1e-5 per statistic (and the seed is fixed).
    """
    levels = default_sampling_sigmas(steps, EPS, 80.0, 7.0).tolist()
    assert_moments(sample_hole(levels, 10_000, steps), *algorithm4_law(levels))


def test_algorithm_4_reaches_the_exact_conditional_only_with_long_schedules():
    """What is true: replacement guidance is not posterior sampling. With the exact f on correlated Gaussian data,
    one step samples the hole almost from its prior (the known pixels barely enter: mean off by ~0.19, far beyond
    sampling error), and the law approaches the exact conditional roughly as 1/N on a Karras grid: max mean
    errors 0.19 (N = 1), 0.047 (40), 0.0028 (1000), 0.0015 (2000). At N = 2000 this bias is a quarter of a
    standard error of 2 000 samples, and Monte Carlo of `inpaint` matches the exact conditional within 5 SE.
    """
    exact_mean, exact_cov = conditional()
    errors = []
    for steps in (1, 40, 1000, 2000):
        mean, cov = algorithm4_law(default_sampling_sigmas(steps, EPS, 80.0, 7.0).tolist())
        errors.append(((mean - exact_mean).abs().max().item(), (cov - exact_cov).abs().max().item()))
    assert errors[0][0] > 0.15 and errors[1][0] > 0.03
    assert errors[-1][0] < 2e-3 and errors[-1][1] < 1e-3
    assert all(later < earlier for (earlier, _), (later, _) in itertools.pairwise(errors))
    one_step = sample_hole([80.0], 10_000, 11)
    se = (torch.diagonal(exact_cov) / 10_000).sqrt()
    assert ((one_step.mean(0) - exact_mean).abs() > 20 * se).any()
    assert_moments(
        sample_hole(default_sampling_sigmas(2000, EPS, 80.0, 7.0).tolist(), 2_000, 12), exact_mean, exact_cov
    )


# ---------------------------------------------------------------- the command

CM = [sys.executable, "-m", "torch_consistency", "edit"]


def cm_edit(*args):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([*CM, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def save_model(run_dir, shape, method, kind="mlp"):
    from torch_consistency.checkpoint import save_checkpoint
    from torch_consistency.configs import load_config
    from torch_consistency.nets import build_model

    network = (
        ["network.kind=unet", "network.preset=tiny"] if kind == "unet" else ["network.width=32", "network.depth=1"]
    )
    config = load_config(None, [*network, "data.name=digits", f"train.method={method}"])
    model = build_model(config, "denoiser" if method == "teacher" else "consistency", shape)
    weights = {"online": model, "ema-0.999": copy.deepcopy(model)}  # safetensors refuses shared tensors
    save_checkpoint(run_dir, 1, config, shape, 0, weights, {"optimizer": {}}, keep=1)
    return run_dir


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Untrained checkpoints: the brief's tiny U-Net (grey 8×8, CT and teacher) and quick MLPs (grey and RGB)."""
    root = tmp_path_factory.mktemp("models")
    return {
        "unet": save_model(root / "unet", (1, 8, 8), "ct", "unet"),
        "teacher": save_model(root / "teacher", (1, 8, 8), "teacher", "unet"),
        "grey": save_model(root / "grey", (1, 8, 8), "ct"),
        "rgb": save_model(root / "rgb", (3, 8, 8), "ct"),
    }


def write_png(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)
    return path


def read_png(path):
    return np.asarray(Image.open(path)).astype(np.int64)


@pytest.mark.slow
def test_cli_inpaints_a_folder_in_batches_with_a_teacher_baseline(tmp_path, models):
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        write_png(tmp_path / "in" / f"{name}.png", rng.integers(0, 256, (8, 8)))
    mask = np.zeros((8, 8))
    mask[2:6, 2:6] = 255
    write_png(tmp_path / "mask.png", mask)
    result = cm_edit("inpaint", "--checkpoint", models["unet"], "--input", tmp_path / "in", "--mask",
                     tmp_path / "mask.png", "--steps", 2, "--batch-size", 2, "--teacher", models["teacher"],
                     "--teacher-steps", 3, "--out", tmp_path / "out")  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name in ("a", "b", "c"):
        original, edited = read_png(tmp_path / "in" / f"{name}.png"), read_png(tmp_path / "out" / f"{name}.png")
        assert np.array_equal(edited[mask == 0], original[mask == 0])
        assert np.array_equal(read_png(tmp_path / "out" / "teacher" / f"{name}.png")[mask == 0], original[mask == 0])
    assert read_png(tmp_path / "out" / "comparison.png").size > 0
    summary = json.loads((tmp_path / "out" / "edit.json").read_text())
    assert summary["nfe"] == 2 and summary["teacher"]["nfe"] == 5


@pytest.mark.slow
def test_cli_super_resolves_and_colorizes_keeping_the_known_part(tmp_path, models):
    """At t = σ_min the consistency function is the identity, so the PNGs show the kept part up to rounding."""
    low = np.random.default_rng(1).integers(30, 226, (4, 4))
    write_png(tmp_path / "low.png", low)
    result = cm_edit("super-resolve", "--checkpoint", models["grey"], "--input", tmp_path / "low.png", "--factor", 2,
                     "--sigmas", EPS, "--out", tmp_path / "sr")  # fmt: skip
    assert result.returncode == 0, result.stderr
    high = read_png(tmp_path / "sr" / "low.png")
    assert high.shape == (8, 8) and np.abs(high.reshape(4, 2, 4, 2).mean((1, 3)) - low).max() <= 1
    write_png(tmp_path / "grey.png", np.random.default_rng(2).integers(60, 196, (8, 8)))  # |G| = 1.31|grey| < 1
    result = cm_edit("colorize", "--checkpoint", models["rgb"], "--input", tmp_path / "grey.png", "--sigmas", EPS,
                     "--out", tmp_path / "colour")  # fmt: skip
    assert result.returncode == 0, result.stderr
    rgb = read_png(tmp_path / "colour" / "grey.png")
    assert rgb.shape == (8, 8, 3) and np.abs(rgb @ np.array(LUMINANCE) - read_png(tmp_path / "grey.png")).max() <= 1


@pytest.mark.slow
def test_cli_interpolates_between_two_noises(tmp_path, models):
    result = cm_edit("interpolate", "--checkpoint", models["rgb"], "--seed2", 1, "--num", 2, "--alphas", "0,0.5,1",
                     "--out", tmp_path / "out")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("noise-*.png")) == [
        f"noise-{i}-{k:02d}.png" for i in range(2) for k in range(3)
    ]
    # the path's ends are the 1-step samples of seeds 0 (the default --seed) and 1, as `cm sample` draws them
    for seed, k in ((0, 0), (1, 2)):
        expected = (tc.load(models["rgb"]).sample(2, seed=seed).x + 1) * 127.5
        for i in range(2):
            got = read_png(tmp_path / "out" / f"noise-{i}-{k:02d}.png").astype(np.float64)
            assert np.abs(got - expected[i].permute(1, 2, 0).numpy()).max() <= 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("mask-size", "mask"),
        ("mask-values", "not binary"),
        ("image-size", "expected 8×8"),
        ("image-channels", "colour"),
        ("factor", "does not divide"),
        ("colorize-grey-model", "3-channel"),
    ],
)
def test_cli_bad_inputs_end_with_one_line_and_write_nothing(tmp_path, models, case, fragment):
    image = write_png(tmp_path / "x.png", np.full((8, 8), 100))
    mask = write_png(tmp_path / "m.png", np.zeros((8, 8)))
    task, extra = "inpaint", []
    if case == "mask-size":
        mask = write_png(tmp_path / "m.png", np.zeros((4, 4)))
    elif case == "mask-values":
        mask = write_png(tmp_path / "m.png", np.full((8, 8), 128))
    elif case == "image-size":
        image = write_png(tmp_path / "x.png", np.full((16, 16), 100))
    elif case == "image-channels":
        image = write_png(tmp_path / "x.png", np.stack([np.full((8, 8), v) for v in (10, 200, 90)], -1))
    elif case == "factor":
        task, extra = "super-resolve", ["--factor", 3]
    elif case == "colorize-grey-model":
        task = "colorize"
    options = ["--mask", mask] if task == "inpaint" else extra
    result = cm_edit(task, "--checkpoint", models["grey"], "--input", image, *options, "--out", tmp_path / "out")
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr and fragment in lines[0], result.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- the library behind the command


def test_edit_in_batches_gives_batch_b_its_own_generator_and_the_teacher_the_same_noise(models):
    """Three images in batches of two: each batch is Model.inpaint with batch b's generator, the teacher's
    baseline the same with its own levels, and the comparison rows are input | kept part | edit | teacher."""
    model, teacher = tc.load(models["unet"]), tc.load(models["teacher"])
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1
    inputs = EditInputs(images, mask=mask)
    out = edit_in_batches(model, "inpaint", inputs, teacher=teacher, steps=2, seed=7, batch_size=2, teacher_steps=3)
    for b, (start, stop) in enumerate([(0, 2), (2, 3)]):
        alone = model.inpaint(images[start:stop], mask, steps=2, generator=batch_generator(7, b))
        baseline = teacher.inpaint(images[start:stop], mask, teacher_steps=3, generator=batch_generator(7, b))
        assert torch.equal(out.results[start:stop], alone.x) and torch.equal(out.teacher[start:stop], baseline.x)
    assert (out.nfe, out.teacher_nfe, out.columns, out.sigmas) == (2, 5, 4, model.edit_sigmas("inpaint", 2))
    rows = out.panels.reshape(3, 4, 1, 8, 8)
    assert torch.equal(rows[:, 0], images) and torch.equal(rows[:, 1], images * (1 - mask))
    assert torch.equal(rows[:, 2], out.results) and torch.equal(rows[:, 3], out.teacher)


def test_edit_in_batches_adds_the_denoising_noise_from_the_batch_generator(models):
    model = tc.load(models["grey"])
    clean = torch.zeros(2, 1, 8, 8)
    out = edit_in_batches(model, "denoise", EditInputs(clean, sigma=0.5, add_noise=True), seed=3)
    noisy = 0.5 * torch.randn(clean.shape, generator=batch_generator(3, 0))
    assert torch.equal(out.results, model.denoise(noisy, 0.5).x) and out.nfe == 1 and out.sigmas == [0.5]
    assert torch.equal(out.panels.reshape(2, 3, 1, 8, 8)[:, 0], noisy)  # noisy | clean | denoised
    with pytest.raises(ConfigError, match="denoiser"):
        edit_in_batches(tc.load(models["teacher"]), "stroke", EditInputs(clean))
