"""The mechanisms of each method against their formulas written out or exact Gaussian oracles (reference.md):
the σ pairs each method draws, the teacher step CD takes, sCT's and sCD's tangents, and the re-noising of
Algorithms 1 and 4 and of TrigFlow sampling. Frequencies are checked with scipy's chi-square and KS tests."""

import math

import pytest
import torch
from scipy import stats

from helpers import tiny_config
from torch_consistency.editing import Identity, edit
from torch_consistency.samplers import sample_multistep, sample_trigflow
from torch_consistency.training.build import Teacher, build_method
from written_out import (
    SIGMA_DATA,
    SIGMA_MAX,
    SIGMA_MIN,
    GaussianData,
    ct_scale,
    dpmpp_2m,
    ect_second_point,
    euler,
    heun,
    ict_num_points,
    ict_pair_probabilities,
    karras,
)

DATA = GaussianData(torch.tensor([0.3, -0.2]), 0.4)
P_VALUE = 1e-3  # a correct sampler fails a test at this level once in a thousand seeds; these seeds are fixed


def method_for(*overrides: str):
    config = tiny_config(*overrides)
    return build_method(config, Teacher(DATA.denoiser, None, None, None))


def draws_of(method, step: int, n: int, seed: int = 0):
    return method.draw(step, n, (2,), torch.Generator().manual_seed(seed))


# ---- the σ pairs each method draws ------------------------------------------------------------------------------


def test_ct_draws_adjacent_pairs_uniformly_on_its_step_grid():
    """i ~ U{0..N(k)−2} on the N(k)-point Karras grid, (σ_i, σ_{i+1}) adjacent (§4, §5)."""
    method = method_for("train.method=ct", "ct.s0=2", "ct.s1=20")
    step = 20
    n = ct_scale(step, 40, 2, 20) + 1
    assert n == 15 and method.num_points(step) == n
    draws = draws_of(method, step, 60_000)
    counts = torch.bincount(draws["index"], minlength=n - 1)
    assert len(counts) == n - 1 and counts.min() > 0  # every pair of the grid, and no index past N − 2
    assert stats.chisquare(counts.numpy()).pvalue > P_VALUE
    sigma, sigma_next, weight = method.pair(step, draws, "uniform")
    assert torch.allclose(sigma.double(), karras(draws["index"], n), rtol=1e-6)
    assert torch.allclose(sigma_next.double(), karras(draws["index"] + 1, n), rtol=1e-6)
    assert torch.all(weight == 1)


def test_cd_draws_adjacent_pairs_uniformly_on_its_fixed_grid():
    method = method_for("train.method=cd", "cd.teacher=exact", "cd.num_points=9")
    draws = draws_of(method, 7, 40_000)
    counts = torch.bincount(draws["index"], minlength=8)
    assert len(counts) == 8 and counts.min() > 0
    assert stats.chisquare(counts.numpy()).pvalue > P_VALUE
    sigma, sigma_next, _ = method.pair(7, draws, "uniform")
    assert torch.allclose(sigma.double(), karras(draws["index"], 9), rtol=1e-6)
    assert torch.allclose(sigma_next.double(), karras(draws["index"] + 1, 9), rtol=1e-6)


def test_ict_draws_pairs_with_the_discrete_lognormal_frequencies():
    """p(i) ∝ erf((ln σ_i − P_mean)/(√2 P_std)) − erf((ln σ_{i+1} − P_mean)/(√2 P_std)) on the N(k)-point grid,
    here N = 21 at k = 5 of 40 (K' = 5) with P_mean = −0.5, P_std = 1.5 (§8)."""
    method = method_for("train.method=ict", "ict.p_mean=-0.5", "ict.p_std=1.5")
    step = 5
    n = ict_num_points(step, 40, 10, 1280)
    assert n == 21 and method.num_points(step) == n and method.num_points(step - 1) == 11
    expected = ict_pair_probabilities(n, -0.5, 1.5)
    draws = draws_of(method, step, 100_000)
    counts = torch.bincount(draws["index"], minlength=n - 1)
    assert len(counts) == n - 1
    assert stats.chisquare(counts.numpy(), [p * 100_000 for p in expected]).pvalue > P_VALUE
    assert stats.chisquare(counts.numpy()).pvalue < 1e-12  # far from uniform: the test can tell them apart
    sigma, sigma_next, weight = method.pair(step, draws, "inverse-delta")
    assert torch.allclose(sigma.double(), karras(draws["index"], n), rtol=1e-6)
    assert torch.allclose(sigma_next.double(), karras(draws["index"] + 1, n), rtol=1e-6)
    assert torch.allclose(weight.double(), 1 / (karras(draws["index"], n) - karras(draws["index"] + 1, n)), rtol=1e-5)


@pytest.mark.parametrize(("step", "stage"), [(35, 3), (39, 3), (40, 4)])
def test_ect_points_follow_the_lognormal_and_the_stage(step, stage):
    """t = exp(P_mean + P_std·n) clamped to [σ_min, σ_max]; r(t) at stage s = ⌊k/d⌋, here d = 10, q = 3 (§9)."""
    method = method_for("train.method=ect", "ect.stage_steps=10", "ect.q=3", "ect.p_mean=-0.6", "ect.p_std=1.7")
    draws = draws_of(method, step, 20_000)
    assert stats.kstest(draws["normal"].numpy(), "norm").pvalue > P_VALUE
    t, r = method.points(step, draws)
    expected_t = torch.clamp(torch.exp(-0.6 + 1.7 * draws["normal"].double()), SIGMA_MIN, SIGMA_MAX)
    assert torch.allclose(t.double(), expected_t, rtol=1e-5)
    assert torch.allclose(r.double(), ect_second_point(expected_t, stage, 3.0), rtol=1e-5, atol=1e-7)
    assert method.log_values(step) == {"stage": stage}


def test_scm_times_follow_the_lognormal_of_tan_t():
    """tan t = e^τ/σ_d with τ ~ N(P_mean, P_std²) (§10): ln(σ_d tan t) passes a KS test against that normal."""
    method = method_for("train.method=scm", "scm.p_mean=-0.7", "scm.p_std=1.2")
    draws = draws_of(method, 0, 20_000)
    t = method.times(draws).double()
    assert torch.allclose(t, torch.atan(torch.exp(-0.7 + 1.2 * draws["normal"].double()) / SIGMA_DATA), rtol=1e-6)
    tau = torch.log(SIGMA_DATA * torch.tan(t)).numpy()
    assert stats.kstest(tau, "norm", args=(-0.7, 1.2)).pvalue > P_VALUE
    assert stats.kstest(tau, "norm", args=(-0.7, 1.4)).pvalue < 1e-6  # the test can tell P_std apart


ALL_METHODS = {
    "teacher": ["train.method=teacher"],
    "cd": ["train.method=cd", "cd.teacher=exact", "cd.num_points=9", "cd.target_ema=0.9"],
    "ct": ["train.method=ct", "ct.s0=2", "ct.s1=20", "ct.mu0=0.9"],
    "ict": ["train.method=ict", "ict.s0=5", "ict.s1=20"],
    "ect": ["train.method=ect", "ect.stage_steps=10"],
    "scm": ["train.method=scm", "scm.tangent_warmup_steps=20"],
}


@pytest.mark.parametrize("name", list(ALL_METHODS))
def test_draws_are_a_function_of_the_generator_alone(name):
    """Every random number of step k comes from the step's generator, not the global RNG (resume, ranks)."""
    method = method_for(*ALL_METHODS[name])
    torch.manual_seed(1)
    first = draws_of(method, 5, 64, seed=3)
    torch.manual_seed(2)
    again = draws_of(method, 5, 64, seed=3)
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    other = draws_of(method, 5, 64, seed=4)
    assert not torch.equal(first["noise"], other["noise"])


def test_logged_values_and_target_rates():
    """What each method logs at step k and the θ⁻ rate it asks for (0: θ⁻ = stopgrad θ)."""
    methods = {name: method_for(*overrides) for name, overrides in ALL_METHODS.items()}
    k = 30  # of 40
    assert methods["teacher"].log_values(k) == {} and methods["teacher"].target_rate(k) == 0.0
    assert methods["cd"].log_values(k) == {"N": 9, "mu": 0.9} and methods["cd"].target_rate(k) == 0.9
    m = ct_scale(k, 40, 2, 20)
    assert methods["ct"].log_values(k) == {"N": m + 1, "mu": pytest.approx(math.exp(2 * math.log(0.9) / m))}
    assert methods["ict"].log_values(k) == {"N": ict_num_points(k, 40, 5, 20)} == {"N": 21}
    assert methods["ict"].num_points(0) == 6
    assert methods["ect"].log_values(k) == {"stage": 3}
    assert methods["scm"].log_values(k) == {"r": 1.0} and methods["scm"].log_values(5) == {"r": 0.25}
    for name in ("ict", "ect", "scm"):
        assert methods[name].target_rate(k) == 0.0 and not methods[name].uses_target


# ---- the teacher step of CD --------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_cd_target_point_is_one_teacher_step_of_the_chosen_solver(solver):
    """x̂ (the point the target pass sees) is EDM's Euler or Heun step from σ_i to σ_{i+1} (§3, §4)."""
    method = method_for("train.method=cd", "cd.teacher=exact", "cd.num_points=6", f"cd.solver={solver}")
    draws = draws_of(method, 0, 64)
    draws["noise"] = draws["noise"].double()
    x0 = DATA.sample(64, torch.Generator().manual_seed(1))
    seen = {}

    def target(x, sigma):
        seen["x"], seen["sigma"] = x, sigma
        return x

    method.loss(lambda x, sigma: x, target, x0, draws, 0)
    sigma, sigma_next = karras(draws["index"], 6).float(), karras(draws["index"] + 1, 6).float()
    x = x0 + sigma[:, None] * draws["noise"]
    steps = {"euler": euler(DATA.denoiser, x, sigma, sigma_next), "heun": heun(DATA.denoiser, x, sigma, sigma_next)}
    assert torch.equal(seen["sigma"], sigma_next)
    assert torch.allclose(seen["x"], steps[solver], rtol=1e-12, atol=1e-12)
    other = steps["heun" if solver == "euler" else "euler"]
    assert (other - steps[solver]).abs().max() > 1e-3  # the two solvers' points are far apart here


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_cd_teacher_substeps_walk_the_finer_karras_grid(solver):
    """With cd.teacher_substeps = k, x̂ is k solver steps from σ_i to σ_{i+1} of the N-point grid through the levels
    of the ((N−1)k + 1)-point grid: σ_i = fine σ_{ki} (§1, §4). Here N = 6, k = 3: the 16-point grid."""
    method = method_for("train.method=cd", "cd.teacher=exact", "cd.num_points=6", f"cd.solver={solver}",
                        "cd.teacher_substeps=3")  # fmt: skip
    draws = draws_of(method, 0, 64)
    draws["noise"] = draws["noise"].double()
    x0 = DATA.sample(64, torch.Generator().manual_seed(1))
    seen = {}

    def target(x, sigma):
        seen["x"] = x
        return x

    method.loss(lambda x, sigma: x, target, x0, draws, 0)
    step = {"euler": euler, "heun": heun}[solver]
    index = draws["index"]
    x = x0 + karras(index, 6).float()[:, None] * draws["noise"]
    for j in range(3):
        x = step(DATA.denoiser, x, karras(3 * index + j, 16).float(), karras(3 * index + j + 1, 16).float())
    assert torch.allclose(seen["x"], x, rtol=1e-6, atol=1e-6)
    one_step = step(DATA.denoiser, x0 + karras(index, 6).float()[:, None] * draws["noise"], karras(index, 6).float(),
                    karras(index + 1, 6).float())  # fmt: skip
    assert (one_step - x).abs().max() > 1e-3  # one step lands elsewhere: the test sees the substeps


def test_cd_teacher_dpmpp_2m_walks_the_finer_karras_grid_with_one_call_per_level():
    """cd.solver = dpmpp-2m with k substeps: x̂ is DPM-Solver++(2M) through the same k + 1 levels of the finer grid,
    a call at each level but the last (§3, §4). Here N = 6, k = 3: the 16-point grid."""
    method = method_for("train.method=cd", "cd.teacher=exact", "cd.num_points=6", "cd.solver=dpmpp-2m",
                        "cd.teacher_substeps=3")  # fmt: skip
    draws = draws_of(method, 0, 64)
    draws["noise"] = draws["noise"].double()
    x0 = DATA.sample(64, torch.Generator().manual_seed(1))
    seen, calls = {}, []

    def teacher(x, sigma):
        calls.append(sigma)
        return DATA.denoiser(x, sigma)

    method.teacher = teacher
    method.loss(lambda x, sigma: x, lambda x, sigma: seen.setdefault("x", x), x0, draws, 0)
    index = draws["index"]
    levels = [karras(3 * index + j, 16).float() for j in range(4)]
    expected = dpmpp_2m(DATA.denoiser, x0 + levels[0][:, None] * draws["noise"], levels)
    assert torch.allclose(seen["x"].double(), expected, rtol=1e-5, atol=1e-5)
    assert len(calls) == 3
    heun_three = x0 + levels[0][:, None] * draws["noise"]
    for j in range(3):
        heun_three = heun(DATA.denoiser, heun_three, levels[j], levels[j + 1])
    assert (heun_three - expected).abs().max() > 1e-4  # another solver through the same levels lands elsewhere


# ---- sCT's and sCD's tangents against the exact TrigFlow velocity ------------------------------------------------


def scm_tangent_in_the_loss(method, x0, noise, t, step):
    """ĝ = g/(‖g‖ + c) as the loss uses it, read off its gradient: with F_θ = F* + δ and w = 0, ∂loss/∂δ = −2ĝ/D
    at δ = 0. F* is the exact TrigFlow velocity of the Gaussian data (its f is the exact consistency function)."""
    probe = torch.zeros_like(x0, requires_grad=True)

    def online(x_scaled, time, with_log_weight=False):
        return DATA.trigflow_velocity(x_scaled, time) + probe, torch.zeros_like(time)

    normal = (torch.log(SIGMA_DATA * torch.tan(t)) - method.config.scm.p_mean) / method.config.scm.p_std
    loss = method.loss(online, DATA.trigflow_velocity, x0, {"normal": normal, "noise": noise}, step)
    (gradient,) = torch.autograd.grad(loss.sum(), probe)
    return -x0.shape[1] / 2 * gradient


def test_scd_tangent_vanishes_at_the_exact_consistency_function():
    """With the exact teacher, dx_t/dt = σ_d·F_teacher is the exact ODE velocity, along which the exact f does not
    change: g = 0 once r = 1 (§10, §12); before the warm-up ends (r = 1/2) it does not vanish."""
    method = method_for("train.method=scm", "scm.mode=scd", "scm.teacher=exact", "scm.tangent_warmup_steps=10")
    generator = torch.Generator().manual_seed(3)
    x0, noise = DATA.sample(32, generator), torch.randn(32, 2, generator=generator, dtype=torch.float64)
    t = torch.linspace(0.05, 1.5, 32, dtype=torch.float64)
    assert scm_tangent_in_the_loss(method, x0, noise, t, step=10).abs().max() < 1e-9
    assert scm_tangent_in_the_loss(method, x0, noise, t, step=5).abs().max() > 1e-2


def test_sct_tangent_is_unbiased_for_the_exact_velocity():
    """sCT's dx_t/dt = cos t·z − sin t·x0 is one sample of the velocity: averaged over x0 ~ p(x0 | x_t) (and the
    z that gives the same x_t), g at the exact F vanishes as sCD's does. A large c makes ĝ ≈ g/c linear in g."""
    method = method_for("train.method=scm", "scm.tangent_norm_c=1000", "scm.tangent_warmup_steps=0")
    generator = torch.Generator().manual_seed(4)
    samples = 20_000
    for time in (0.3, 0.9, 1.4):
        t = torch.full((samples,), time, dtype=torch.float64)
        x_t = (DATA.sample(1, generator) * math.cos(time) + SIGMA_DATA * math.sin(time) * 0.7).expand(samples, 2)
        mean, variance = DATA.posterior(x_t, t)
        x0 = mean + variance**0.5 * torch.randn(samples, 2, generator=generator, dtype=torch.float64)
        noise = (x_t - math.cos(time) * x0) / (math.sin(time) * SIGMA_DATA)
        g = 1000 * scm_tangent_in_the_loss(method, x0, noise, t, step=1)
        spread = g.std(0) / samples**0.5
        assert torch.all(g.std(0) > 1e-3)  # each sample's tangent is far from 0 ...
        assert torch.all(g.mean(0).abs() < 5 * spread)  # ... their mean is 0 within its sampling error
        # the velocity the tangent is built from is the exact one in mean: E[cos t·z − sin t·x0 | x_t]
        velocity = (math.cos(time) * SIGMA_DATA * noise - math.sin(time) * x0).mean(0)
        exact = DATA.ode_velocity(x_t[:1], t[:1])[0]
        assert torch.allclose(velocity, exact, atol=5 * SIGMA_DATA / samples**0.5)


# ---- re-noising in Algorithm 1, Algorithm 4 and TrigFlow sampling -------------------------------------------------


def test_algorithm_1_renoises_by_sqrt_sigma_squared_minus_sigma_min_squared():
    """With f = identity, x = σ_1 z_1 + √(σ_2² − σ_min²) z_2 has variance σ_1² + σ_2² − σ_min² (§6). σ_min = 0.8 makes
    the wrong √σ_2² (variance 1.81 instead of 1.17) far outside the tolerance."""
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(200_000, 1, generator=generator, dtype=torch.float64)
    seen = []

    def identity(x, sigma):
        seen.append(sigma)
        return x

    result = sample_multistep(identity, [1.0, 0.9], noise, 0.8, generator)
    assert result.nfe == 2 and [s[0].item() for s in seen] == [1.0, 0.9]
    assert result.x.var().item() == pytest.approx(1.0 + 0.81 - 0.64, rel=0.02)


def test_algorithm_1_keeps_the_exact_law_with_a_large_sigma_min():
    """The exact f (boundary σ_min = 0.5) maps N(μ, s² + σ²) onto N(μ, s² + σ_min²); Algorithm 1's re-noise keeps
    that law at every step. Re-noising by σ instead would end with std 0.76 instead of 0.64."""
    sigma_min = 0.5
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn(200_000, 2, generator=generator, dtype=torch.float64)

    def exact(x, sigma):
        return DATA.consistency(x, sigma, sigma_min)

    result = sample_multistep(exact, [80.0, 2.0, 0.7], noise, sigma_min, generator)
    assert torch.allclose(result.x.mean(0), DATA.mean, atol=1e-2)
    assert torch.allclose(result.x.std(0), torch.full((2,), (DATA.std**2 + sigma_min**2) ** 0.5, dtype=torch.float64),
                          rtol=1e-2)  # fmt: skip


def test_algorithm_4_renoises_like_algorithm_1():
    """Editing with everything to generate (A = I, Ω = 1) is Algorithm 1 started at N(0, t_1²) (§7)."""
    sigma_min = 0.5
    mean = 0.3

    def exact(x, sigma):  # pixels ~ N(0.3, 0.4²) independently
        return mean + torch.sqrt((0.16 + sigma_min**2) / (0.16 + sigma[:, None, None, None] ** 2)) * (x - mean)

    reference = torch.zeros(20_000, 1, 4, 4, dtype=torch.float64)
    out = edit(exact, reference, Identity(), torch.ones(4, 4), [80.0, 2.0, 0.7], sigma_min,
               torch.Generator().manual_seed(2))  # fmt: skip
    assert out.nfe == 3
    assert out.x.mean().item() == pytest.approx(0.3, abs=5e-3)
    assert out.x.std().item() == pytest.approx((0.16 + sigma_min**2) ** 0.5, rel=1e-2)


def test_trigflow_sampling_keeps_the_exact_law():
    """With the exact TrigFlow f, every step maps cos t·x + sin t·σ_d·z (x ~ data) back onto the data (§10)."""
    generator = torch.Generator().manual_seed(3)
    noise = torch.randn(200_000, 2, generator=generator, dtype=torch.float64)
    one = sample_trigflow(DATA.trigflow_consistency, [math.pi / 2], noise, SIGMA_DATA, generator)
    three = sample_trigflow(DATA.trigflow_consistency, [math.pi / 2, 1.1, 0.4], noise, SIGMA_DATA, generator)
    for result in (one, three):
        assert torch.allclose(result.x.mean(0), DATA.mean, atol=5e-3)
        assert torch.allclose(result.x.std(0), torch.full((2,), DATA.std, dtype=torch.float64), rtol=1e-2)
    assert three.nfe == 3
