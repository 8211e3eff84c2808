import subprocess
import sys

import pytest
import torch

from helpers import tiny_config
from torch_consistency.checkpoint import load_checkpoint, store_sampling_sigmas
from torch_consistency.evaluation.evaluate import sample_checkpoint
from torch_consistency.evaluation.timepoints import greedy_time_points, search_checkpoint_sigmas, ternary_search
from torch_consistency.generate import sampling_sigmas
from torch_consistency.sigmas import karras_sigmas
from torch_consistency.training.loop import train


@pytest.mark.parametrize("minimum", [1, 5, 17, 30])
def test_ternary_search_finds_the_minimum_of_a_unimodal_function(minimum):
    calls = []

    def objective(i):
        calls.append(i)
        return (i - minimum) ** 2 + 0.5 * abs(i - minimum)

    best, value = ternary_search(objective, 1, 30)
    assert best == minimum and value == 0
    assert len(set(calls)) == len(calls) < 20  # each point once, far fewer than the 30 candidates


def test_greedy_search_picks_one_point_at_a_time_below_the_previous():
    grid = karras_sigmas(18, 0.002, 80.0, 7.0).tolist()
    best2, best3 = grid[11], grid[14]

    def objective(sigmas):  # smallest when σ_2 = grid[11] and σ_3 = grid[14]
        penalty = (sigmas[1] - best2) ** 2
        return penalty + ((sigmas[2] - best3) ** 2 if len(sigmas) == 3 else 0)

    found = greedy_time_points(objective, grid, max_steps=3)
    assert found == {2: [80.0, best2], 3: [80.0, best2, best3]}


def test_searched_sigmas_are_stored_in_the_checkpoint_and_used_by_default(tmp_path):
    train(tiny_config("train.method=ct", "train.total_steps=1"), tmp_path / "run", progress=False)
    checkpoint = load_checkpoint(tmp_path / "run")
    assert sampling_sigmas(checkpoint.config, 2)[0] == pytest.approx(80.0)
    store_sampling_sigmas(checkpoint, {2: [80.0, 0.7], 3: [80.0, 0.7, 0.1]})
    reloaded = load_checkpoint(tmp_path / "run")
    assert sampling_sigmas(reloaded.config, 2) == [80.0, 0.7]
    assert sampling_sigmas(reloaded.config, 3) == [80.0, 0.7, 0.1]
    assert len(sampling_sigmas(reloaded.config, 4)) == 4


def test_a_checkpoint_search_stops_at_max_steps_and_follows_the_metric(tmp_path):
    train(tiny_config("train.method=ct", "train.total_steps=1"), tmp_path / "run", progress=False)
    checkpoint = load_checkpoint(tmp_path / "run")
    d = checkpoint.config.diffusion
    grid = karras_sigmas(checkpoint.grid_points(), d.sigma_min, d.sigma_max, d.rho).tolist()
    # The same seed gives the same samples for the same σ's, so the metric can tell which σ_2 made them, and it
    # scores the distance (in grid points) to the one wanted: a unimodal objective with a known minimum.
    made = [sample_checkpoint(checkpoint, 16, sigmas=[80.0, s], seed=1).x for s in grid[1:-1]]
    wanted = 5

    def metric(samples: torch.Tensor) -> float:
        index = next(i for i, x in enumerate(made, start=1) if torch.equal(x, samples))
        return abs(index - wanted)

    found = search_checkpoint_sigmas(checkpoint, metric, 16, seed=0, log=lambda line: None, max_steps=2)
    assert found == {2: [80.0, grid[wanted]]}


def test_cm_eval_searches_the_sigmas_of_a_2d_checkpoint_and_refuses_a_teacher(tmp_path):
    # two moons: no exact ODE, so `cm eval` skips the (slow) consistency error; the MMD's kernel is a tenth of the std
    train(
        tiny_config("train.method=ct", "train.total_steps=20", "data.name=two_moons"), tmp_path / "ct", progress=False
    )
    train(tiny_config("train.total_steps=1"), tmp_path / "teacher", progress=False)

    def cm_eval(run: str, out: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "torch_consistency", "eval", "--checkpoint", str(tmp_path / run),
                   "--search-sigmas", "--steps", "2", "--num", "200", "--out", str(tmp_path / out)]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, timeout=300)

    result = cm_eval("ct", "eval")
    assert result.returncode == 0, result.stderr
    config = load_checkpoint(tmp_path / "ct").config
    grid = karras_sigmas(load_checkpoint(tmp_path / "ct").grid_points(), 0.002, 80.0, 7.0).tolist()
    assert len(config.sampling.sigmas_2) == 2 and len(config.sampling.sigmas_3) == 3
    assert config.sampling.sigmas_3[:2] == config.sampling.sigmas_2 and config.sampling.sigmas_2[0] == 80.0
    assert all(any(s == pytest.approx(g) for g in grid) for s in config.sampling.sigmas_3)  # points of the grid
    assert config.sampling.sigmas_3[2] < config.sampling.sigmas_2[1]
    assert "σ's [80.0" in result.stdout  # each point tried is printed with its MMD

    refused = cm_eval("teacher", "teacher-eval")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "search-sigmas" in refused.stderr and not (tmp_path / "teacher-eval").exists()
