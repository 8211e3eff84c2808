import pytest
import torch
from diffusers import CMStochasticIterativeScheduler

from helpers import raises_exactly
from torch_consistency.sigmas import (
    default_sampling_sigmas,
    karras_sigmas,
    lognormal_pair_probabilities,
    sigmas_from_diffusers_timesteps,
    sigmas_from_openai_ts,
)


def test_karras_grid_ends_are_exact_and_descending():
    grid = karras_sigmas(18, 0.002, 80.0, 7.0)
    assert grid.dtype == torch.float64
    assert grid[0].item() == pytest.approx(80.0, rel=1e-14)
    assert grid[-1].item() == pytest.approx(0.002, rel=1e-12)
    assert torch.all(grid[1:] < grid[:-1])


def test_karras_grid_worked_values():
    # reference.md §6: CIFAR-10 CD N=18, index 11 ≈ 0.585; ImageNet CD index 22 of 40 ≈ 1.38
    assert karras_sigmas(18, 0.002, 80.0, 7.0)[11].item() == pytest.approx(0.585, abs=2e-3)
    assert karras_sigmas(40, 0.002, 80.0, 7.0)[22].item() == pytest.approx(1.38, abs=1e-2)


def test_karras_grid_formula_in_the_middle():
    grid = karras_sigmas(5, 0.002, 80.0, 7.0)
    expected = (80.0 ** (1 / 7) + 0.5 * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    assert grid[2].item() == pytest.approx(expected, rel=1e-14)


def test_grid_needs_two_points():
    with raises_exactly(ValueError, "a Karras grid needs at least 2 points, got 1"):
        karras_sigmas(1, 0.002, 80.0, 7.0)


def test_openai_ts_drop_the_end_marker():
    grid = karras_sigmas(40, 0.002, 80.0, 7.0)
    sigmas = sigmas_from_openai_ts([0, 22, 39], 40, 0.002, 80.0, 7.0)
    assert torch.allclose(sigmas, grid[[0, 22]], rtol=1e-14)


@pytest.mark.parametrize("bad", [[0, 22], [22, 0, 39], [0]])
def test_openai_ts_rejects_malformed_lists(bad):
    with pytest.raises(ValueError):
        sigmas_from_openai_ts(bad, 40, 0.002, 80.0, 7.0)


def test_diffusers_timesteps_match_the_real_scheduler():
    scheduler = CMStochasticIterativeScheduler(num_train_timesteps=40, sigma_min=0.002, sigma_max=80.0, rho=7.0)
    scheduler.set_timesteps(timesteps=[22, 0])
    ours = sigmas_from_diffusers_timesteps([22, 0], 40, 0.002, 80.0, 7.0)
    # diffusers appends σ_min as the end marker and stores float32
    assert torch.allclose(ours.float(), scheduler.sigmas[:-1], rtol=1e-6)
    assert torch.allclose(ours, sigmas_from_openai_ts([0, 22, 39], 40, 0.002, 80.0, 7.0))


def test_default_sampling_sigmas_start_at_sigma_max():
    assert default_sampling_sigmas(1, 0.002, 80.0, 7.0).tolist() == [80.0]
    two = default_sampling_sigmas(2, 0.002, 80.0, 7.0)
    assert len(two) == 2 and two[0] == pytest.approx(80.0) and 0.002 < two[1] < 80.0


def test_lognormal_pair_probabilities_sum_to_one_and_peak_near_the_mode():
    grid = karras_sigmas(200, 0.002, 80.0, 7.0)
    p = lognormal_pair_probabilities(grid, -1.1, 2.0)
    assert p.sum().item() == pytest.approx(1.0)
    assert torch.all(p >= 0)
    # the pair holding exp(P_mean) receives the most mass per unit of ln σ
    density = p / (torch.log(grid[:-1]) - torch.log(grid[1:]))
    peak = density.argmax()
    assert grid[peak + 1].item() <= torch.exp(torch.tensor(-1.1)).item() * 1.2
    assert grid[peak].item() >= torch.exp(torch.tensor(-1.1)).item() / 1.2
