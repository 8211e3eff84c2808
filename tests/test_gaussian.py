import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from torch_consistency.config import DataConfig
from torch_consistency.data import build_dataset
from torch_consistency.evaluation.lowdim import ode_endpoint
from torch_consistency.gaussian import GaussianMixture, gaussian_consistency_function, gaussian_denoiser


def mixture():
    means = torch.tensor([[0.5, 0.0], [-0.4, 0.3], [0.0, -0.6]], dtype=torch.float64)
    covariances = torch.stack(
        [
            torch.tensor([[0.04, 0.01], [0.01, 0.02]]),
            0.03 * torch.eye(2),
            torch.tensor([[0.05, -0.02], [-0.02, 0.03]]),
        ]
    ).double()
    return GaussianMixture(torch.tensor([0.5, 0.3, 0.2]), means, covariances)


def test_mixture_denoiser_is_tweedie():
    """D(x, σ) = x + σ²∇ log p_σ(x), with p_σ the mixture convolved with N(0, σ²I)."""
    gmm = mixture()
    x = torch.randn(32, 2, dtype=torch.float64, requires_grad=True)
    sigma = 0.7

    def log_density(points):
        total = 0
        for w, m, c in zip(gmm.weights, gmm.means, gmm.covariances, strict=True):
            cov = c + sigma**2 * torch.eye(2, dtype=torch.float64)
            total = total + w * torch.exp(torch.distributions.MultivariateNormal(m, cov).log_prob(points))
        return torch.log(total)

    (score,) = torch.autograd.grad(log_density(x).sum(), x)
    expected = x + sigma**2 * score
    assert torch.allclose(gmm.denoiser(x.detach(), torch.tensor(sigma)), expected.detach(), atol=1e-10)


def test_one_component_mixture_is_the_gaussian_denoiser():
    mean = torch.tensor([[0.2, -0.1, 0.4]], dtype=torch.float64)
    gmm = GaussianMixture.isotropic(mean, 0.3)
    x = torch.randn(10, 3, dtype=torch.float64)
    sigma = torch.linspace(0.01, 10, 10, dtype=torch.float64)
    assert torch.allclose(gmm.denoiser(x, sigma), gaussian_denoiser(x, sigma, mean[0], 0.3))


def test_gaussian_consistency_function_solves_the_ode():
    """The closed form f(x, σ) agrees with scipy's RK45 on dx/dσ = (x − D)/σ."""
    mean, std = torch.tensor([0.3, -0.2], dtype=torch.float64), 0.4
    x = np.array([12.0, -7.0])

    def rhs(sigma, y):
        t = torch.from_numpy(y)[None]
        return ((t - gaussian_denoiser(t, torch.tensor([sigma]), mean, std)) / sigma)[0].numpy()

    solution = solve_ivp(rhs, (20.0, 0.002), x, rtol=1e-11, atol=1e-12, method="DOP853")
    closed = gaussian_consistency_function(torch.from_numpy(x)[None], torch.tensor([20.0]), mean, std, 0.002)
    assert np.allclose(solution.y[:, -1], closed[0].numpy(), atol=1e-8)


def test_high_accuracy_ode_matches_scipy_on_a_mixture():
    gmm = mixture()
    x = torch.tensor([[3.0, -2.0], [-1.0, 4.0]], dtype=torch.float64) * 5

    def rhs(sigma, y):
        t = torch.from_numpy(y).reshape(2, 2)
        return ((t - gmm.denoiser(t, torch.tensor(sigma))) / sigma).flatten().numpy()

    solution = solve_ivp(rhs, (40.0, 0.002), x.flatten().numpy(), rtol=1e-11, atol=1e-12, method="DOP853")
    errors = [
        np.abs(ode_endpoint(gmm.denoiser, x, 40.0, 0.002, num_steps=n).flatten().numpy() - solution.y[:, -1]).max()
        for n in (256, 512)
    ]
    assert errors[1] < 2e-5  # far below the consistency errors it is used to measure
    assert errors[0] / errors[1] > 3  # second order: converging to scipy's solution


def test_mixture_samples_have_the_right_moments():
    gmm = mixture()
    samples = gmm.sample(200_000, torch.Generator().manual_seed(0))
    mean = (gmm.weights[:, None] * gmm.means).sum(0)
    assert torch.allclose(samples.mean(0), mean, atol=5e-3)
    assert torch.allclose(samples.std(0), gmm.stds(), atol=5e-3)


def test_mixture_samples_are_the_components_draws_from_the_callers_generator():
    """x_i = μ_{c_i} + L_{c_i} z_i with c ~ Categorical(π) then z ~ N(0, I), both from the given generator in that
    order (L = cholesky(Σ)): the same seed gives the same points, and they are these points."""
    gmm = mixture()
    stream = torch.Generator().manual_seed(3)
    component = torch.multinomial(gmm.weights, 500, replacement=True, generator=stream)
    z = torch.randn(500, gmm.dim, generator=stream, dtype=torch.float64)
    cholesky = torch.linalg.cholesky(gmm.covariances)
    expected = gmm.means[component] + (cholesky[component] @ z[:, :, None])[:, :, 0]
    samples = gmm.sample(500, torch.Generator().manual_seed(3))
    torch.testing.assert_close(samples, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["eight_gaussians", "two_moons", "swiss_roll", "checkerboard", "gmm"])
def test_toy_datasets_are_scaled_near_sigma_data(name):
    dataset = build_dataset(DataConfig(name=name, dim=2 if name != "gmm" else 5))
    x = dataset.sample(20_000, torch.Generator().manual_seed(0))
    assert x.shape == (20_000, dataset.dim)
    assert 0.2 < x.std().item() < 0.8 and x.mean(0).abs().max().item() < 0.4
    assert not math.isnan(x.sum().item())


def test_gmm_dataset_works_in_any_dimension():
    dataset = build_dataset(DataConfig(name="gmm", dim=16, components=4, component_std=0.2))
    assert dataset.mixture is not None and dataset.mixture.dim == 16
    x = dataset.sample(8)
    assert dataset.mixture.denoiser(x, torch.tensor(1.0)).shape == (8, 16)
