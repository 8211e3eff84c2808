"""Edges of the mathematical core that `make mutation` found untested: boundaries of schedules and validations,
exact one-line messages, dtypes the docstrings promise, reproducible draws, and EDM's stochastic sampler written
out. Each test names the behaviour; docs/results/mutation/README.md lists the mutants they kill."""

import itertools
import math

import pytest
import torch
from scipy.integrate import solve_ivp

from helpers import raises_exactly, tiny_config
from torch_consistency.distances import distance, pseudo_huber_distance
from torch_consistency.editing import (
    ChannelMixing,
    EditProblem,
    Identity,
    PatchTransform,
    check_images,
    check_task_fits_model,
    colorization_matrix,
    edit,
    patch_mean_matrix,
)
from torch_consistency.editing.algorithm import check_sigmas, default_edit_sigmas
from torch_consistency.errors import ConfigError, DataError
from torch_consistency.gaussian import GaussianMixture, gaussian_consistency_function
from torch_consistency.nets import build_model
from torch_consistency.objectives import consistency_weight, ect_loss
from torch_consistency.parameterization import Preconditioned, noise_conditioning, openai_noise_conditioning
from torch_consistency.samplers import sample_multistep, sample_onestep, sample_trigflow
from torch_consistency.schedules import (
    ct_num_points,
    ct_target_ema,
    ect_stage,
    ict_num_points,
    tangent_warmup,
)
from torch_consistency.sigmas import (
    default_sampling_sigmas,
    lognormal_pair_probabilities,
    sigmas_from_diffusers_timesteps,
    sigmas_from_openai_ts,
)
from torch_consistency.solvers import churn_gamma, heun_step, solve_ode
from torch_consistency.trigflow import normalise_tangent, scm_training_loss, trigflow_sampling_times
from written_out import GaussianData, ct_scale, ict_pair_probabilities, karras

DATA = GaussianData(torch.tensor([0.3, -0.2]), 0.4)


# ---- schedules (§5, §8–10) ------------------------------------------------------------------------------------


def test_ct_curriculum_at_every_step_for_another_s0():
    """N(k) and μ(k) against the formula at every k, with s0 = 3 (s0² ≠ 2·s0) and a one-step run."""
    for k in range(101):
        m = ct_scale(k, 100, 3, 40)
        assert ct_num_points(k, 100, 3, 40) == m + 1, k
        assert ct_target_ema(k, 100, 3, 40, 0.95) == pytest.approx(math.exp(3 * math.log(0.95) / m), rel=1e-12)
    assert [ct_num_points(k, 1, 2, 150) for k in (0, 1)] == [2, 151]
    with raises_exactly(ValueError, "total_steps must be positive, got 0"):
        ct_num_points(0, 0, 2, 150)
    with raises_exactly(ValueError, "unknown CT schedule variant 'blog'; choose one of ('code', 'paper')"):
        ct_target_ema(0, 10, 2, 150, 0.9, "blog")


def test_ct_target_rate_of_mu0_zero_is_zero_and_continuous_there():
    """μ0 = 0 means μ(k) = 0 at every step (the target is the current weights), the limit of exp(s0·ln μ0 / m)."""
    for variant in ("code", "paper"):
        assert [ct_target_ema(k, 100, 10, 150, 0.0, variant) for k in (0, 50, 100)] == [0.0, 0.0, 0.0]
    m = ct_scale(100, 100, 10, 150)
    assert ct_target_ema(100, 100, 10, 150, 1e-9) == pytest.approx(math.exp(10 * math.log(1e-9) / m), rel=1e-12)
    assert ct_target_ema(100, 100, 10, 150, 1e-300) < 1e-15


def test_ict_curriculum_when_stages_are_one_step_long():
    """K' = ⌊K/(log2⌊s1/s0⌋ + 1)⌋ is at least one step: with K = 5 < 8 stages, stage s starts at step s."""
    assert [ict_num_points(k, 5) for k in range(6)] == [11, 21, 41, 81, 161, 321]
    assert [ict_num_points(k, 40, 10, 40) for k in (0, 12, 13, 26, 40)] == [11, 11, 21, 41, 41]  # K' = ⌊40/3⌋


def test_ect_stage_and_tangent_warmup_at_their_first_steps():
    assert [ect_stage(k, 1) for k in (-3, 0, 1, 5)] == [0, 0, 1, 5]
    assert [tangent_warmup(k, 1) for k in (-1, 0, 1, 2)] == [0.0, 0.0, 1.0, 1.0]
    assert tangent_warmup(0, 0) == 1.0


# ---- σ grids and time-point conventions (§1, §6, §8) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "message"),
    [
        ([39], "--ts needs at least two indices: the evaluated ones and the end marker steps-1"),
        ([0, 10, 22], "the last --ts index must be steps-1 = 39 (the end marker), got 22"),
        ([0, 22, 22, 39], "--ts indices must be increasing and non-negative, got [0, 22, 22, 39]"),
        ([-1, 22, 39], "--ts indices must be increasing and non-negative, got [-1, 22, 39]"),
    ],
)
def test_openai_ts_errors_name_the_problem(ts, message):
    with raises_exactly(ValueError, message):
        sigmas_from_openai_ts(ts, 40, 0.002, 80.0, 7.0)


def test_openai_ts_with_a_single_evaluated_index():
    assert torch.allclose(sigmas_from_openai_ts([0, 39], 40, 0.002, 80.0, 7.0), karras([0], 40), rtol=1e-14)


@pytest.mark.parametrize(
    ("timesteps", "message"),
    [
        ([], "timesteps must not be empty"),
        ([22, 22], "diffusers timesteps must be strictly descending, got [22, 22]"),
        ([40, 0], "diffusers timesteps must lie in [0, 39], got [40, 0]"),
        ([22, -1], "diffusers timesteps must lie in [0, 39], got [22, -1]"),
        ([30, 10, -1], "diffusers timesteps must lie in [0, 39], got [30, 10, -1]"),
    ],
)
def test_diffusers_timestep_errors_name_the_problem(timesteps, message):
    with raises_exactly(ValueError, message):
        sigmas_from_diffusers_timesteps(timesteps, 40, 0.002, 80.0, 7.0)


def test_diffusers_timesteps_are_exact_in_float64():
    sigmas = sigmas_from_diffusers_timesteps([39, 22, 1], 40, 0.002, 80.0, 7.0)
    assert sigmas.dtype == torch.float64
    assert torch.allclose(sigmas, karras([1, 22, 39], 40), rtol=1e-14)  # openai's indices, ascending


def test_default_sampling_sigmas():
    one = default_sampling_sigmas(1, 0.002, 80.0, 7.0)
    assert one.dtype == torch.float64 and one.tolist() == [80.0]
    assert torch.allclose(default_sampling_sigmas(3, 0.002, 80.0, 7.0), karras([0, 1, 2], 4), rtol=1e-14)
    with raises_exactly(ValueError, "the number of sampling steps must be at least 1, got 0"):
        default_sampling_sigmas(0, 0.002, 80.0, 7.0)


def test_lognormal_pair_probabilities_are_the_erf_formula():
    expected = torch.tensor(ict_pair_probabilities(31, -1.1, 2.0), dtype=torch.float64)
    assert torch.allclose(lognormal_pair_probabilities(karras(torch.arange(31), 31), -1.1, 2.0), expected, rtol=1e-10)


# ---- distances, weights, ECT's boundary row (§4, §9) -----------------------------------------------------------


def test_pseudo_huber_of_a_single_sample_uses_its_own_dimension():
    x, y = torch.zeros(1, 3, 4), torch.ones(1, 3, 4)
    c = 0.00054 * math.sqrt(12)
    assert pseudo_huber_distance(x, y).item() == pytest.approx(math.sqrt(12 + c**2) - c, rel=1e-6)


def test_unknown_distance_and_weighting_messages():
    with raises_exactly(ValueError, "unknown distance 'lpips-alex'; choose one of l2, l1, pseudo-huber"):
        distance("lpips-alex")
    sigma = torch.ones(1)
    with raises_exactly(ValueError, "unknown weighting 'x'; choose one of uniform, snr, snr+1, karras, truncated-snr, "
                            "inverse-delta"):  # fmt: skip
        consistency_weight("x", sigma, sigma, 0.5)


def test_ect_rows_at_and_below_sigma_min():
    """r ≥ σ_min is evaluated (f(x, σ_min) = x for a boundary-exact f) with the gap t − r; r < σ_min counts as r = 0:
    the target is x0 and the gap t (§9)."""
    x0, noise = torch.zeros(2, 3, dtype=torch.float64), torch.ones(2, 3, dtype=torch.float64)
    t, r = torch.full((2,), 0.5, dtype=torch.float64), torch.tensor([0.002, 0.001], dtype=torch.float64)

    def identity(x, sigma):
        return x

    def offset(x, sigma):  # the online network outputs x0 + 1
        return torch.ones_like(x)

    loss = ect_loss(offset, identity, x0, noise, t, r, 0.002, 0.0)
    assert loss[0].item() == pytest.approx((1 - 0.002) * math.sqrt(3) / (0.5 - 0.002), rel=1e-12)
    assert loss[1].item() == pytest.approx(math.sqrt(3) / 0.5, rel=1e-12)


# ---- parameterization (§2) ---------------------------------------------------------------------------------------


class Linear(torch.nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(dim, dim))

    def forward(self, x, c_noise, class_labels=None):
        return x @ self.weight + c_noise[:, None] * 1e-3


def test_openai_conditioning_is_finite_at_sigma_zero():
    assert openai_noise_conditioning(torch.zeros(1, dtype=torch.float64)).item() == pytest.approx(250 * math.log(1e-44))


def test_boundary_is_exact_for_a_float32_sigma_and_a_float64_sample():
    """Scalings in σ's own dtype: σ = σ_min in float32 gives c_out = 0 exactly, even for float64 x (§2)."""
    model = Preconditioned(Linear(3), "consistency", 0.5, 0.002).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    assert torch.equal(model(x, torch.full((4,), 0.002, dtype=torch.float32)), x)


def test_integer_and_wider_sigmas_give_the_same_outputs_in_the_samples_dtype():
    model = Preconditioned(Linear(3), "denoiser", 0.5, 0.002).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    assert torch.equal(model(x, 2), model(x, torch.tensor(2.0, dtype=torch.float64)))  # an int σ takes x's dtype
    model, x = model.float(), x.float()
    wide = model(x, torch.full((4,), 2.0, dtype=torch.float64))
    assert wide.dtype == torch.float32 and torch.allclose(wide, model(x, 2.0), rtol=1e-6)


def test_unknown_conditioning_and_parameterization_messages():
    with raises_exactly(ValueError, "unknown noise conditioning 'vp'; choose one of openai, edm"):
        noise_conditioning("vp")
    with raises_exactly(ValueError, "unknown parameterization 'score'; choose one of ('denoiser', 'consistency')"):
        Preconditioned(Linear(2), "score", 0.5, 0.002)


# ---- the Gaussian oracles (§12) ----------------------------------------------------------------------------------


def test_gaussian_consistency_function_with_a_large_sigma_min_solves_the_ode():
    """The ODE dx/dσ = (x − D)/σ integrated by scipy from σ = 20 down to σ_min = 0.5."""
    mean, std = torch.tensor([0.3, -0.2], dtype=torch.float64), 0.4
    x = torch.tensor([[12.0, -7.0]], dtype=torch.float64)

    def rhs(sigma, y):
        state = torch.from_numpy(y)[None]
        return ((state - DATA.denoiser(state, torch.tensor([sigma]))) / sigma)[0].numpy()

    solution = solve_ivp(rhs, (20.0, 0.5), x[0].numpy(), rtol=1e-11, atol=1e-12, method="DOP853")
    closed = gaussian_consistency_function(x, torch.tensor([20.0], dtype=torch.float64), mean, std, 0.5)
    assert torch.allclose(closed[0], torch.from_numpy(solution.y[:, -1]), atol=1e-8)


def test_mixture_weights_are_normalised_and_isotropic_weights_used():
    means = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    mixture = GaussianMixture.isotropic(means, 0.1, weights=torch.tensor([3.0, 1.0]))
    assert torch.allclose(mixture.weights, torch.tensor([0.75, 0.25], dtype=torch.float64))
    # coordinate 0: mean 0.5, second moment 0.01 + 1 → variance 1.01 − 0.25
    assert torch.allclose(mixture.stds(), torch.tensor([0.76**0.5, 0.1], dtype=torch.float64))
    moved = mixture.to("cpu")
    assert torch.equal(moved.means, mixture.means) and torch.equal(moved.covariances, mixture.covariances)


def test_mixture_samples_come_from_the_generator_and_denoiser_keeps_dtype_and_precision():
    mixture = GaussianMixture.isotropic(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), 0.1, weights=torch.tensor([3.0, 1.0]))
    a = mixture.sample(50, torch.Generator().manual_seed(7))
    torch.manual_seed(0)
    b = mixture.sample(50, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    x = torch.randn(5, 2, dtype=torch.float64)
    assert torch.equal(mixture.denoiser(x, 0.7), mixture.denoiser(x, torch.tensor(0.7, dtype=torch.float64)))
    assert mixture.denoiser(x.float(), 0.7).dtype == torch.float32


# ---- solvers (§3) ------------------------------------------------------------------------------------------------


def test_churn_window_includes_its_ends():
    assert churn_gamma(0.5, 10, 1.0, 0.5, 2.0) == pytest.approx(0.1)
    assert churn_gamma(2.0, 10, 1.0, 0.5, 2.0) == pytest.approx(0.1)


def test_edm_stochastic_sampler_written_out():
    """EDM Algorithm 2 with S_churn: γ = min(S_churn/K, √2−1) in [S_tmin, S_tmax], σ̂ = σ(1+γ),
    x̂ = x + √(σ̂² − σ²)·S_noise·z, a Heun step σ̂ → σ' (Euler to σ' = 0); K steps, z's in order from the generator."""
    levels = [10.0, 3.0, 1.0, 0.3, 0.0]
    x = 10 * torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    result = solve_ode(DATA.denoiser, x, torch.tensor(levels, dtype=torch.float64), "heun", s_churn=1.0, s_tmin=0.5,
                       s_tmax=5.0, s_noise=1.007, generator=torch.Generator().manual_seed(1))  # fmt: skip
    generator, expected = torch.Generator().manual_seed(1), x
    for sigma, sigma_next in itertools.pairwise(levels):
        gamma = min(1.0 / 4, 2**0.5 - 1) if 0.5 <= sigma <= 5.0 else 0.0  # 1/K = 0.25, below the cap
        if gamma > 0:
            sigma_hat = sigma * (1 + gamma)
            z = torch.randn(expected.shape, generator=generator, dtype=torch.float64)
            expected = expected + (sigma_hat**2 - sigma**2) ** 0.5 * 1.007 * z
            sigma = sigma_hat
        s, s_next = torch.full((64,), sigma, dtype=torch.float64), torch.full((64,), sigma_next, dtype=torch.float64)
        d = (expected - DATA.denoiser(expected, s)) / sigma
        if sigma_next == 0:
            expected = expected + (sigma_next - sigma) * d
        else:
            x_euler = expected + (sigma_next - sigma) * d
            d_next = (x_euler - DATA.denoiser(x_euler, s_next)) / sigma_next
            expected = expected + (sigma_next - sigma) * (d + d_next) / 2
    assert result.nfe == 7
    assert torch.allclose(result.x, expected, rtol=1e-12, atol=1e-12)


def test_solver_defaults_are_heun_without_churn():
    x = torch.randn(8, 2, dtype=torch.float64)
    levels = torch.tensor([5.0, 0.8, 0.2], dtype=torch.float64)  # a step from σ < 1: S_tmin = 0 by default
    assert torch.equal(solve_ode(DATA.denoiser, x, levels).x, solve_ode(DATA.denoiser, x, levels, "heun").x)
    churned = solve_ode(DATA.denoiser, x, levels, s_churn=1.0, generator=torch.Generator().manual_seed(0))
    explicit = solve_ode(DATA.denoiser, x, levels, s_churn=1.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0,
                         generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert torch.equal(churned.x, explicit.x)
    single = heun_step(DATA.denoiser, x, torch.full((8,), 5.0, dtype=torch.float64), torch.full((8,), 1.0,
                       dtype=torch.float64))  # fmt: skip
    assert not torch.allclose(churned.x, solve_ode(DATA.denoiser, single, levels[1:]).x)  # the churn did something


def test_solver_errors_name_the_problem():
    x, levels = torch.zeros(1, 2), torch.tensor([1.0, 0.0])
    with raises_exactly(ValueError, "unknown solver 'rk4'; choose one of euler, heun, dpmpp-2m"):
        solve_ode(DATA.denoiser, x, levels, "rk4")
    with raises_exactly(ValueError, "churn (EDM's stochastic sampler) is defined for the Heun solver only"):
        solve_ode(DATA.denoiser, x, levels, "euler", s_churn=0.5)
    with raises_exactly(ValueError, "before_step is defined for the one-step solvers euler, heun"):
        solve_ode(DATA.denoiser, x, levels, "dpmpp-2m", before_step=lambda x, sigma: x)


def test_dpmpp_2m_ends_on_the_denoised_sample_at_sigma_zero():
    x = torch.randn(8, 2, dtype=torch.float64)
    result = solve_ode(DATA.denoiser, x, torch.tensor([2.0, 0.0], dtype=torch.float64), "dpmpp-2m")
    assert result.nfe == 1 and torch.equal(result.x, DATA.denoiser(x, torch.full((8,), 2.0, dtype=torch.float64)))


@pytest.mark.parametrize("solver", ["euler", "heun", "dpmpp-2m"])
def test_a_single_level_is_nothing_to_integrate(solver):
    x = torch.randn(3, 2, dtype=torch.float64)
    result = solve_ode(DATA.denoiser, x, torch.tensor([0.0], dtype=torch.float64), solver)
    assert result.nfe == 0 and torch.equal(result.x, x)


# ---- samplers (§6, §10) ------------------------------------------------------------------------------------------


def identity(x, sigma):
    return x


@pytest.mark.parametrize(
    ("sigmas", "message"),
    [
        ([], "sample_multistep needs at least one σ"),
        ([2.0, 2.0], "sampling σ's must be strictly decreasing, got [2.0, 2.0]"),
        ([80.0, 1.0, 0.001], "sampling σ's must be at least σ_min = 0.002, got 0.001"),
    ],
)
def test_multistep_errors_name_the_problem(sigmas, message):
    with raises_exactly(ValueError, message):
        sample_multistep(identity, sigmas, torch.zeros(1, 2), 0.002)


def test_multistep_may_end_at_sigma_min_and_one_step_below_one():
    assert sample_multistep(identity, [1.0, 0.002], torch.zeros(3, 2), 0.002).nfe == 2
    assert torch.equal(sample_onestep(identity, torch.ones(3, 2), 0.5).x, torch.full((3, 2), 0.5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_samplers_draw_later_noise_from_the_generator_in_the_samples_dtype(dtype):
    """Algorithm 1: x + √(σ² − σ_min²)·z; TrigFlow: cos t·x + sin t·σ_d·z, z from the generator in x's dtype."""
    noise = torch.ones(3, 2, dtype=dtype)
    multi = sample_multistep(identity, [4.0, 1.0], noise, 0.6, torch.Generator().manual_seed(5))
    z = torch.randn(3, 2, generator=torch.Generator().manual_seed(5), dtype=dtype)
    assert torch.allclose(multi.x, 4.0 * noise + 0.8 * z, rtol=1e-6)
    trig = sample_trigflow(identity, [1.5, 0.5], noise, 0.5, torch.Generator().manual_seed(5))
    first = math.sin(1.5) * 0.5 * noise
    assert torch.allclose(trig.x, math.cos(0.5) * first + math.sin(0.5) * 0.5 * z, rtol=1e-6)


def test_clipping_clamps_both_sides_at_every_step():
    def wild(x, sigma):
        return torch.tensor([-5.0, 5.0, 0.5], dtype=x.dtype).expand_as(x) + 0 * x

    noise = torch.zeros(2, 3)
    expected = torch.tensor([-1.0, 1.0, 0.5]).expand(2, 3)
    assert torch.equal(sample_multistep(wild, [2.0, 1.0], noise, 0.002, clip_denoised=True).x, expected)
    assert torch.equal(sample_trigflow(wild, [1.5, 1.0], noise, 0.5, clip_denoised=True).x, expected)
    assert torch.equal(sample_trigflow(wild, [1.5], noise, 0.5).x, torch.tensor([-5.0, 5.0, 0.5]).expand(2, 3))


@pytest.mark.parametrize(
    ("times", "message"),
    [
        ([], "sample_trigflow needs at least one time"),
        ([1.0, 1.0], "TrigFlow times must be strictly decreasing in (0, π/2], got [1.0, 1.0]"),
        ([1.0, 0.0], "TrigFlow times must be strictly decreasing in (0, π/2], got [1.0, 0.0]"),
        ([3.0], "TrigFlow times must be strictly decreasing in (0, π/2], got [3.0]"),
        ([math.pi / 2 + 1e-6], f"TrigFlow times must be strictly decreasing in (0, π/2], got [{math.pi / 2 + 1e-6}]"),
    ],
)
def test_trigflow_sampler_errors_name_the_problem(times, message):
    with raises_exactly(ValueError, message):
        sample_trigflow(identity, times, torch.zeros(1, 2), 0.5)


# ---- editing's Algorithm 4 (§7) ----------------------------------------------------------------------------------


def test_transform_and_basis_errors():
    with raises_exactly(ConfigError, "the factor 4 does not divide the image size 8×6"):
        PatchTransform(patch_mean_matrix(4)).forward(torch.zeros(1, 1, 8, 6))
    with raises_exactly(ConfigError, "the factor 4 does not divide the image size 6×8"):
        PatchTransform(patch_mean_matrix(4)).forward(torch.zeros(1, 1, 6, 8))
    assert torch.equal(patch_mean_matrix(1), torch.ones(1, 1, dtype=torch.float64))
    with raises_exactly(ConfigError, "the super-resolution factor must be a positive integer, got 0"):
        patch_mean_matrix(0)


def test_colorization_basis_is_exact_in_float64():
    luminance = torch.tensor([0.2989, 0.5870, 0.1140], dtype=torch.float64)
    assert torch.allclose(colorization_matrix()[:, 0], luminance / luminance.norm(), rtol=1e-15, atol=0)


def test_projection_keeps_given_coefficients_and_accepts_a_full_shape_mask():
    reference = torch.zeros(2, 1, 2, 2, dtype=torch.float64)
    mask = torch.tensor([[[[True, False], [False, True]]]]).expand(2, 1, 2, 2)  # as many dimensions as Ay
    problem = EditProblem(reference, Identity(), mask)
    kept = torch.full((2, 1, 2, 2), 3.0, dtype=torch.float64)
    x = torch.ones(2, 1, 2, 2, dtype=torch.float64)
    assert torch.equal(problem.project(x, kept), torch.where(mask, x, kept))
    assert torch.equal(problem.project(x), torch.where(mask, x, reference))
    with raises_exactly(DataError, "the mask must be binary (1 = generate, 0 = keep); it has other values"):
        EditProblem(reference, Identity(), torch.full((2, 2), 0.5))
    with raises_exactly(DataError, "the mask has shape (3, 3), which does not fit coefficients of shape (2, 1, 2, 2)"):
        EditProblem(reference, Identity(), torch.ones(3, 3))
    basis = ChannelMixing(colorization_matrix())
    y = torch.randn(1, 3, 2, 2, dtype=torch.float64)
    assert torch.allclose(basis.inverse(basis.forward(y)), y, atol=1e-12)


def test_default_edit_time_points():
    """The first `steps` points of a Karras grid of steps + 1, 40 by default (§6, §7)."""
    assert default_edit_sigmas(0.002, 80.0, 7.0, steps=3) == pytest.approx(karras([0, 1, 2], 4).tolist(), rel=1e-14)
    levels = default_edit_sigmas(0.002, 80.0, 7.0)
    assert len(levels) == 40 and levels == pytest.approx(karras(torch.arange(40), 41).tolist(), rel=1e-14)


def test_time_point_checks():
    assert check_sigmas([1.0, 0.002], 0.002) == [1.0, 0.002]
    with raises_exactly(ConfigError, "editing needs at least one time point"):
        check_sigmas([], 0.002)
    with raises_exactly(ConfigError, "time points must be finite and strictly decreasing, got [1.0, 1.0]"):
        check_sigmas([1.0, 1.0], 0.002)
    with raises_exactly(ConfigError, "time points must be finite and strictly decreasing, got [inf, 1.0]"):
        check_sigmas([math.inf, 1.0], 0.002)
    with raises_exactly(ConfigError, "time points must be at least σ_min = 0.002, got 0.001"):
        check_sigmas([1.0, 0.001], 0.002)


def test_image_and_task_checks_name_the_problem():
    images = torch.zeros(1, 3, 4, 6)
    with raises_exactly(DataError, "images: expected a batch of shape (B, 3, 8, 8), got (1, 3, 4, 6)"):
        check_images(images, (3, 8, 8))
    with raises_exactly(DataError, "references: expected a batch of shape (B, 1, 8, 8), got (1, 3, 4, 6)"):
        check_images(images, (1, 8, 8), "references")
    with raises_exactly(DataError, "images: expected a batch of shape (B, 3, 8, 8), got (3, 8, 8)"):
        check_images(images[0, :, :2, :2].repeat(1, 4, 4), (3, 8, 8))  # one image, not a batch
    check_images(torch.zeros(2, 3, 8, 8), (3, 8, 8))
    check_task_fits_model("inpaint", (1, 8, 8))
    check_task_fits_model("colorize", (3, 8, 8))
    check_task_fits_model("super-resolve", (3, 8, 8), factor=2)
    with raises_exactly(ConfigError, "colorization needs a 3-channel (RGB) model; this one makes 4-channel images"):
        check_task_fits_model("colorize", (4, 8, 8))
    with raises_exactly(ConfigError, "super-resolution needs an integer factor of at least 2, got None"):
        check_task_fits_model("super-resolve", (3, 8, 8))
    with raises_exactly(ConfigError, "the factor 8 does not divide the model's image size 8×12"):
        check_task_fits_model("super-resolve", (3, 8, 12), factor=8)
    with raises_exactly(ConfigError, "the factor 8 does not divide the model's image size 12×8"):
        check_task_fits_model("super-resolve", (3, 12, 8), factor=8)


def test_editing_clips_both_sides_when_asked():
    def wild(x, sigma):
        return torch.tensor([-5.0, 5.0], dtype=x.dtype).reshape(1, 1, 1, 2).expand_as(x) + 0 * x

    reference = torch.zeros(2, 1, 1, 2)
    out = edit(wild, reference, Identity(), torch.ones(1, 2), [2.0, 1.0], 0.002, clip_denoised=True)
    assert torch.equal(out.x, torch.tensor([-1.0, 1.0]).reshape(1, 1, 1, 2).expand(2, 1, 1, 2))


# ---- TrigFlow (§10) and class labels (§2) -------------------------------------------------------------------------


def test_tangent_normalisation_and_loss_defaults():
    """c = 0.1 by default (§10), the JVP pass in fp32 and no teacher (sCT)."""
    g = torch.randn(4, 3, dtype=torch.float64)
    assert torch.allclose(normalise_tangent(g), g / (g.norm(dim=1, keepdim=True) + 0.1), rtol=1e-12)
    x0, noise = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    t = torch.tensor([0.2, 0.6, 1.0, 1.4], dtype=torch.float64)

    def online(x, time, with_log_weight=False):
        return DATA.trigflow_velocity(x, time), torch.zeros_like(time)

    default = scm_training_loss(online, DATA.trigflow_velocity, x0, noise, t, 1.0, 0.5)
    explicit = scm_training_loss(online, DATA.trigflow_velocity, x0, noise, t, 1.0, 0.5, 0.1, None, True)
    assert torch.equal(default, explicit)
    assert not torch.allclose(default, scm_training_loss(online, DATA.trigflow_velocity, x0, noise, t, 1.0, 0.5, 1.1))


class DiagonalVelocity(torch.nn.Module):
    """F(x, t) = a·x·cos t through a linear layer: autocast runs it in bf16 unless told not to."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(torch.diag(torch.tensor([0.7, -1.3])))

    def forward(self, x, t, with_log_weight=False):
        velocity = self.linear(x) * torch.cos(t)[:, None]
        return (velocity, torch.zeros_like(t)) if with_log_weight else velocity


def tangent_under_autocast(jvp_fp32: bool, autocast: bool) -> torch.Tensor:
    """ĝ of sCT read off the loss gradient (as in test_mechanisms), for float32 data."""
    model = DiagonalVelocity()
    generator = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(8, 2, generator=generator), torch.randn(8, 2, generator=generator)
    t = torch.linspace(0.2, 1.4, 8)
    probe = torch.zeros_like(x0, requires_grad=True)

    def online(x, time, with_log_weight=False):
        exact = (x * torch.tensor([0.7, -1.3])) * torch.cos(time)[:, None]  # the same F without a matmul
        return exact + probe, torch.zeros_like(time)

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = scm_training_loss(online, model, x0, noise, t, 1.0, 0.5, 0.1, None, jvp_fp32)
    return torch.autograd.grad(loss.sum(), probe)[0]


def test_the_tangent_pass_runs_in_fp32_under_bf16_autocast():
    reference = tangent_under_autocast(jvp_fp32=True, autocast=False)
    assert torch.allclose(tangent_under_autocast(jvp_fp32=True, autocast=True), reference, rtol=1e-5, atol=1e-7)
    assert (tangent_under_autocast(jvp_fp32=False, autocast=True) - reference).abs().max() > 1e-4


def test_learned_weighting_is_linear_in_fourier_features_of_log_sigma():
    """w(t) = Linear([cos 2πcω, sin 2πcω]) with c = ln(σ_d tan t)/4, ω ~ N(0, 1), in fp32 even under autocast."""
    model = build_model(tiny_config("train.method=scm"), "trigflow", (2,))
    weighting = model.weighting
    with torch.no_grad():
        weighting.linear.weight.normal_(generator=torch.Generator().manual_seed(0))
        weighting.linear.bias.fill_(0.2)
    t = torch.tensor([0.1, 0.7, 1.3])
    c = 0.25 * torch.log(0.5 * torch.tan(t))
    angles = 2 * math.pi * c[:, None] * weighting.embed.frequencies[None]
    features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    expected = features @ weighting.linear.weight[0] + 0.2
    assert torch.allclose(weighting(t), expected, rtol=1e-5, atol=1e-5)
    assert 0.7 < weighting.embed.frequencies.std().item() < 1.3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(weighting(t), weighting(t.clone()).float()) and weighting(t).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = weighting(t)
    assert torch.equal(inside, weighting(t))


def test_trigflow_conditioning_saturates_outside_the_noise_range_in_fp32():
    """c_noise(σ_d tan t) with t clamped to [arctan(σ_min/σ_d), arctan(σ_max/σ_d)], computed in fp32 (§10)."""
    model = build_model(tiny_config("train.method=scm"), "trigflow", (2,))
    ends = model.noise_input(torch.tensor([0.0, math.pi / 2], dtype=torch.float64))
    assert torch.allclose(ends, 250 * torch.log(torch.tensor([0.002, 80.0], dtype=torch.float64)), rtol=1e-10)
    assert model.noise_input(torch.tensor([0.5], dtype=torch.bfloat16)).dtype == torch.float32


def test_trigflow_sampling_times():
    sigmas = karras([0, 1, 2], 4)
    assert trigflow_sampling_times(1, sigmas, 0.5) == [math.pi / 2]
    assert trigflow_sampling_times(2, sigmas, 0.5) == [math.pi / 2, 1.1]
    three = trigflow_sampling_times(3, sigmas, 0.5)
    assert three[0] == math.pi / 2 and three[1:] == pytest.approx(torch.atan(sigmas[1:] / 0.5).tolist(), rel=1e-14)
    with raises_exactly(ValueError, "the number of sampling steps must be at least 1, got 0"):
        trigflow_sampling_times(0, sigmas, 0.5)


@pytest.mark.parametrize("parameterization", ["denoiser", "consistency", "trigflow"])
def test_class_labels_reach_the_network(parameterization):
    config = tiny_config("network.class_conditional=true")
    model = build_model(config, parameterization, (2,), num_classes=3).double()
    x = torch.randn(4, 2, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0])
    if parameterization == "trigflow":
        t = torch.full((4,), 0.9, dtype=torch.float64)
        f = model.consistency(x, t, labels)
        velocity = model(x / 0.5, t, labels)
        assert torch.allclose(f, math.cos(0.9) * x - math.sin(0.9) * 0.5 * velocity, rtol=1e-12)
        edm = model.edm_consistency(x / math.cos(0.9), 0.5 * math.tan(0.9), labels)
        assert torch.allclose(edm, f, rtol=1e-5, atol=1e-6)  # σ → t moves σ by an ulp; the MLP embeds in fp32
        one = torch.tensor(1.0, dtype=torch.float64)
        assert torch.equal(model.consistency(x, 1, labels), model.consistency(x, one, labels))  # an int t: x's dtype
        outputs = [model.consistency(x, t, (labels + shift) % 3) for shift in (0, 1)]
    else:
        outputs = [model(x, 1.5, (labels + shift) % 3) for shift in (0, 1)]
    assert not torch.allclose(outputs[0], outputs[1])
