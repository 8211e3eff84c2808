"""Shared fixtures: small exact problems that tests can check against closed forms."""

import os

import pytest
import torch


def pytest_configure(config):
    """Under pytest-xdist (`make test` runs two workers on two cores) each worker, and every `cm` it starts, computes on
    one thread: two processes that each spread over all cores slow each other far more than twice."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def gaussian():
    """Data ~ N(μ, s²I) in 3 dimensions, with the closed-form denoiser and consistency function."""
    from torch_consistency.gaussian import gaussian_consistency_function, gaussian_denoiser

    mean = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    std = 0.4

    class Oracle:
        def __init__(self):
            self.mean, self.std = mean, std

        def denoiser(self, x, sigma):
            return gaussian_denoiser(x, sigma, mean.to(x.dtype), std)

        def consistency(self, x, sigma, sigma_min=0.002):
            return gaussian_consistency_function(x, sigma, mean.to(x.dtype), std, sigma_min)

    return Oracle()


@pytest.fixture(scope="session")
def digits_cache(tmp_path_factory):
    """One classifier cache for the session: the digits evaluation classifier is trained once."""
    return tmp_path_factory.mktemp("classifier-cache")
