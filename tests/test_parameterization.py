import math

import pytest
import torch
from diffusers import CMStochasticIterativeScheduler
from torch import nn

from torch_consistency.parameterization import (
    Preconditioned,
    consistency_scalings,
    edm_noise_conditioning,
    edm_scalings,
    openai_noise_conditioning,
)


class Linear(nn.Module):
    """A tiny network that depends on its inputs, so scalings are visible in the output."""

    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dim, dim))

    def forward(self, x, c_noise, class_labels=None):
        return x @ self.weight + c_noise[:, None] * 1e-3


def test_edm_scalings_at_sigma_equal_sigma_data():
    sigma = torch.tensor([0.5], dtype=torch.float64)
    c_skip, c_out, c_in = edm_scalings(sigma, 0.5)
    assert c_skip.item() == pytest.approx(0.5)
    assert c_out.item() == pytest.approx(0.5 / math.sqrt(2))
    assert c_in.item() == pytest.approx(1 / (0.5 * math.sqrt(2)))


def test_consistency_scalings_match_diffusers_and_use_sigma_under_the_root():
    scheduler = CMStochasticIterativeScheduler(sigma_min=0.002, sigma_data=0.5)
    sigma = torch.tensor([0.002, 0.1, 1.0, 80.0], dtype=torch.float64)
    c_skip, c_out, c_in = consistency_scalings(sigma, 0.5, 0.002)
    ref_skip, ref_out = scheduler.get_scalings_for_boundary_condition(sigma)
    assert torch.allclose(c_skip, ref_skip) and torch.allclose(c_out, ref_out)
    assert torch.allclose(c_in, 1 / torch.sqrt(sigma**2 + 0.25))
    # (σ − σ_min) would be wrong under the root: check c_out against the formula with σ
    assert c_out[2].item() == pytest.approx((1.0 - 0.002) * 0.5 / math.sqrt(1.0 + 0.25))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_boundary_condition_is_exact(dtype):
    model = Preconditioned(Linear(4), "consistency", sigma_data=0.5, sigma_min=0.002).to(dtype)
    x = torch.randn(16, 4, dtype=dtype) * 3
    out = model(x, torch.full((16,), 0.002, dtype=dtype))
    assert torch.equal(out, x)


def test_boundary_is_not_exact_for_the_denoiser():
    model = Preconditioned(Linear(4), "denoiser", sigma_data=0.5, sigma_min=0.002)
    x = torch.randn(16, 4)
    assert not torch.equal(model(x, torch.full((16,), 0.002)), x)


def test_network_receives_c_in_x_and_c_noise():
    seen = {}

    class Spy(nn.Module):
        def forward(self, x, c_noise, class_labels=None):
            seen["x"], seen["c_noise"] = x, c_noise
            return torch.zeros_like(x)

    model = Preconditioned(Spy(), "consistency", sigma_data=0.5, sigma_min=0.002)
    x = torch.ones(2, 3)
    sigma = torch.tensor([1.0, 80.0])
    out = model(x, sigma)
    assert torch.allclose(seen["x"], x / torch.sqrt(sigma**2 + 0.25)[:, None])
    assert torch.allclose(seen["c_noise"], 250 * torch.log(sigma))
    c_skip = 0.25 / ((sigma - 0.002) ** 2 + 0.25)
    assert torch.allclose(out, c_skip[:, None] * x)


def test_noise_conditionings():
    sigma = torch.tensor([0.002, 1.0, 80.0], dtype=torch.float64)
    scheduler = CMStochasticIterativeScheduler()
    assert torch.allclose(openai_noise_conditioning(sigma), torch.from_numpy(scheduler.sigma_to_t(sigma.numpy())))
    assert torch.allclose(edm_noise_conditioning(sigma), torch.log(sigma) / 4)


def test_scalar_sigma_broadcasts_over_the_batch():
    model = Preconditioned(Linear(2), "denoiser", sigma_data=0.5, sigma_min=0.002)
    x = torch.randn(5, 2)
    assert torch.allclose(model(x, 1.5), model(x, torch.full((5,), 1.5)))


def test_unknown_names_raise():
    with pytest.raises(ValueError):
        Preconditioned(Linear(2), "score", sigma_data=0.5, sigma_min=0.002)
    with pytest.raises(ValueError):
        Preconditioned(Linear(2), "denoiser", sigma_data=0.5, sigma_min=0.002, noise_conditioning_name="vp")
