import pytest
import torch

from helpers import raises_exactly
from torch_consistency.config import DataConfig
from torch_consistency.data import build_dataset
from torch_consistency.evaluation.lowdim import ode_endpoint
from torch_consistency.generate import teacher_sigmas
from torch_consistency.sigmas import karras_sigmas
from torch_consistency.solvers import churn_gamma, euler_step, heun_step, solve_ode, substepped, teacher_step
from written_out import dpmpp_2m, karras


def exact_endpoint(oracle, x, sigma_start, sigma_end):
    """For Gaussian data the PF-ODE scales x − μ by √((s²+σ_end²)/(s²+σ_start²)) (reference.md §12)."""
    s2 = oracle.std**2
    return oracle.mean + ((s2 + sigma_end**2) / (s2 + sigma_start**2)) ** 0.5 * (x - oracle.mean)


def endpoint_error(oracle, solver, num_points):
    x = torch.randn(256, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 80
    sigmas = karras_sigmas(num_points, 0.002, 80.0, 7.0)
    result = solve_ode(oracle.denoiser, x, sigmas, solver)
    return (result.x - exact_endpoint(oracle, x, 80.0, 0.002)).abs().max().item(), result.nfe


@pytest.mark.parametrize(("solver", "order"), [("euler", 1), ("heun", 2), ("dpmpp-2m", 2)])
def test_solver_order_on_the_gaussian_oracle(gaussian, solver, order):
    coarse, _ = endpoint_error(gaussian, solver, 41)
    fine, _ = endpoint_error(gaussian, solver, 81)
    assert coarse / fine == pytest.approx(2**order, rel=0.35)


def test_nfe_counts(gaussian):
    x = torch.randn(4, 3, dtype=torch.float64)
    levels = teacher_sigmas(18, 0.002, 80.0, 7.0)
    assert solve_ode(gaussian.denoiser, x, levels, "heun").nfe == 35
    assert solve_ode(gaussian.denoiser, x, teacher_sigmas(40, 0.002, 80.0, 7.0), "heun").nfe == 79
    assert solve_ode(gaussian.denoiser, x, levels, "euler").nfe == 18
    assert solve_ode(gaussian.denoiser, x, levels, "dpmpp-2m").nfe == 18


def test_euler_step_is_ddim(gaussian):
    x = torch.randn(8, 3, dtype=torch.float64)
    sigma, sigma_next = torch.full((8,), 2.0, dtype=torch.float64), torch.full((8,), 0.5, dtype=torch.float64)
    denoised = gaussian.denoiser(x, sigma)
    ddim = denoised + (0.5 / 2.0) * (x - denoised)  # x' = D + σ'/σ·(x − D)
    assert torch.allclose(euler_step(gaussian.denoiser, x, sigma, sigma_next), ddim)


def test_steps_take_a_sigma_per_sample(gaussian):
    x = torch.randn(2, 3, dtype=torch.float64)
    sigma = torch.tensor([5.0, 1.0], dtype=torch.float64)
    sigma_next = torch.tensor([4.0, 0.5], dtype=torch.float64)
    both = heun_step(gaussian.denoiser, x, sigma, sigma_next)
    for i in range(2):
        alone = heun_step(gaussian.denoiser, x[i : i + 1], sigma[i : i + 1], sigma_next[i : i + 1])
        assert torch.allclose(both[i : i + 1], alone)


@pytest.mark.parametrize(("step", "order"), [(euler_step, 1), (heun_step, 2)])
def test_substeps_shrink_the_step_error_by_the_solvers_order(gaussian, step, order):
    """k substeps of a solver of order p from σ = 80 to 20 cut its error against the exact ODE map ≈ k^p-fold (§12)."""
    x = torch.randn(256, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 80
    sigma, sigma_next = torch.full((256,), 80.0, dtype=torch.float64), torch.full((256,), 20.0, dtype=torch.float64)
    exact = exact_endpoint(gaussian, x, 80.0, 20.0)
    errors = [(substepped(step, k, 7.0)(gaussian.denoiser, x, sigma, sigma_next) - exact).abs().max() for k in (8, 16)]
    assert errors[0] / errors[1] == pytest.approx(2**order, rel=0.2)


def test_one_substep_is_the_step_itself_and_none_is_refused():
    assert substepped(heun_step, 1, 7.0) is heun_step
    with pytest.raises(ValueError, match="at least 1"):
        substepped(heun_step, 0, 7.0)


def test_dpmpp_2m_teacher_step_shrinks_the_step_error_4x_per_halving(gaussian):
    """DPM-Solver++(2M) through k substeps is second order: 8 → 16 substeps cut its error ≈ 4-fold (§12)."""
    x = torch.randn(256, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 80
    sigma, sigma_next = torch.full((256,), 80.0, dtype=torch.float64), torch.full((256,), 20.0, dtype=torch.float64)
    exact = exact_endpoint(gaussian, x, 80.0, 20.0)
    errors = [(teacher_step("dpmpp-2m", k, 7.0)(gaussian.denoiser, x, sigma, sigma_next) - exact).abs().max()
              for k in (8, 16)]  # fmt: skip
    assert errors[0] / errors[1] == pytest.approx(4, rel=0.2)


def test_dpmpp_2m_teacher_step_is_the_multistep_written_out_with_a_sigma_per_sample(gaussian):
    """Each sample walks its own interval of the 5-point grid through the 4-substep levels (the 17-point grid)."""
    index = torch.tensor([0, 1, 2, 3, 3, 1])
    x = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * karras(index, 5)[:, None]
    step = teacher_step("dpmpp-2m", 4, 7.0)
    expected = dpmpp_2m(gaussian.denoiser, x, [karras(4 * index + j, 17) for j in range(5)])
    assert torch.allclose(step(gaussian.denoiser, x, karras(index, 5), karras(index + 1, 5)), expected, rtol=1e-12)


def test_teacher_step_picks_the_solver_and_refuses_2m_without_substeps():
    assert teacher_step("heun", 1, 7.0) is heun_step and teacher_step("euler", 1, 7.0) is euler_step
    with pytest.raises(ValueError, match="at least 2 substeps, got 1"):
        teacher_step("dpmpp-2m", 1, 7.0)
    with raises_exactly(ValueError, "unknown solver 'rk4'; choose one of euler, heun, dpmpp-2m"):
        teacher_step("rk4", 2, 7.0)


def test_dpmpp_2m_teacher_step_takes_two_substeps_the_least_it_needs(gaussian):
    """An Euler step to the middle of the 3-level grid, then one second-order step: the multistep written out."""
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 80
    sigma, sigma_next = torch.full((4,), 80.0, dtype=torch.float64), torch.full((4,), 20.0, dtype=torch.float64)
    middle = torch.full((4,), ((80.0 ** (1 / 7) + 20.0 ** (1 / 7)) / 2) ** 7, dtype=torch.float64)
    expected = dpmpp_2m(gaussian.denoiser, x, [sigma, middle, sigma_next])
    got = teacher_step("dpmpp-2m", 2, 7.0)(gaussian.denoiser, x, sigma, sigma_next)
    assert torch.allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("solver", ["heun", "dpmpp-2m"])
def test_substepped_teacher_steps_keep_float32(gaussian, solver):
    """The levels between and the 2M coefficients are computed in float64; a float32 state stays float32 (a float64
    target would make every CD loss float64)."""
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(5)) * 10
    sigma, sigma_next = torch.full((4,), 10.0), torch.full((4,), 2.0)
    step = teacher_step(solver, 4, 7.0)
    assert step(gaussian.denoiser, x, sigma, sigma_next).dtype == torch.float32


def test_dpmpp_2m_to_sigma_zero_is_the_multistep_then_the_last_denoised(gaussian):
    """Through the positive levels by DPM-Solver++(2M), then x = D(x, σ_last) for the step to 0 (one call each)."""
    x = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6)) * 10
    levels = [10.0, 3.0, 1.0, 0.3]
    positive = [torch.full((8,), s, dtype=torch.float64) for s in levels]
    expected = gaussian.denoiser(dpmpp_2m(gaussian.denoiser, x, positive), positive[-1])
    result = solve_ode(gaussian.denoiser, x, torch.tensor([*levels, 0.0], dtype=torch.float64), "dpmpp-2m")
    assert result.nfe == 4
    assert torch.allclose(result.x, expected, rtol=1e-12)


def heun_relative_errors(component_std, level_counts):
    """Mean errors of EDM's Heun at K Karras levels (+ σ = 0) on eight Gaussians, relative to the data scale."""
    mixture = build_dataset(DataConfig(name="eight_gaussians", component_std=component_std)).mixture
    x = 80 * torch.randn(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    reference = ode_endpoint(mixture.denoiser, x, 80.0, 1e-6, num_steps=4096)
    scale = 2**0.5 * mixture.stds().mean().item()
    results = [solve_ode(mixture.denoiser, x, teacher_sigmas(k, 0.002, 80.0, 7.0), "heun") for k in level_counts]
    return [((r.x - reference).norm(dim=1).mean().item() / scale, r.nfe) for r in results]


def test_heun_reaches_the_exact_endpoint_within_1e3_at_79_nfe_on_a_sharp_mixture():
    [(error, nfe)] = heun_relative_errors(0.01, [40])
    assert nfe == 79 and error < 1e-3


def test_heun_error_falls_about_4x_when_levels_double():
    (coarse, _), (fine, _) = heun_relative_errors(0.05, [40, 80])
    assert 3 < coarse / fine < 6


def test_churn_adds_noise_but_no_evaluations(gaussian):
    x = torch.randn(64, 3, dtype=torch.float64)
    levels = teacher_sigmas(18, 0.002, 80.0, 7.0)
    plain = solve_ode(gaussian.denoiser, x, levels, "heun")
    churned = solve_ode(
        gaussian.denoiser, x, levels, "heun", s_churn=10.0, s_tmin=0.05, s_tmax=50.0,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert churned.nfe == plain.nfe
    assert not torch.allclose(churned.x, plain.x)


def test_churn_gamma_window():
    assert churn_gamma(1.0, 18, 0.0, 0.0, float("inf")) == 0.0
    assert churn_gamma(1.0, 10, 1.0, 0.5, 2.0) == pytest.approx(0.1)
    assert churn_gamma(1.0, 10, 100.0, 0.5, 2.0) == pytest.approx(2**0.5 - 1)
    assert churn_gamma(3.0, 10, 1.0, 0.5, 2.0) == 0.0


def test_unknown_solver_raises(gaussian):
    with pytest.raises(ValueError):
        solve_ode(gaussian.denoiser, torch.zeros(1, 3), torch.tensor([1.0, 0.0]), "rk4")
