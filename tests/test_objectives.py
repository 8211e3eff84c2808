import pytest
import torch
from torch import nn

from torch_consistency.distances import l2_distance
from torch_consistency.objectives import (
    consistency_distillation_loss,
    consistency_training_loss,
    consistency_weight,
    edm_loss,
    edm_loss_weight,
    paired_passes,
)
from torch_consistency.sigmas import karras_sigmas
from torch_consistency.solvers import euler_step, heun_step


def test_edm_weight_formula():
    sigma = torch.tensor([0.5, 2.0])
    assert torch.allclose(edm_loss_weight(sigma, 0.5), (sigma**2 + 0.25) / (sigma * 0.5) ** 2)


def test_edm_loss_of_the_exact_denoiser_is_the_weighted_posterior_variance(gaussian):
    """E‖D(x_σ) − x0‖²/d = s²σ²/(s²+σ²) for Gaussian data (reference.md §12)."""
    n = 400_000
    generator = torch.Generator().manual_seed(0)
    x0 = gaussian.mean + gaussian.std * torch.randn(n, 3, dtype=torch.float64, generator=generator)
    sigma = torch.full((n,), 0.7, dtype=torch.float64)
    loss = edm_loss(gaussian.denoiser, x0, sigma, torch.randn(n, 3, dtype=torch.float64, generator=generator), 0.5)
    s2 = gaussian.std**2
    expected = edm_loss_weight(torch.tensor(0.7), 0.5).item() * s2 * 0.49 / (s2 + 0.49)
    assert loss.mean().item() == pytest.approx(expected, rel=5e-3)


def test_weightings():
    sigma, sigma_next = torch.tensor([2.0]), torch.tensor([1.5])
    assert consistency_weight("uniform", sigma, sigma_next, 0.5).item() == 1.0
    assert consistency_weight("inverse-delta", sigma, sigma_next, 0.5).item() == pytest.approx(2.0)
    assert consistency_weight("snr", sigma, sigma_next, 0.5).item() == pytest.approx(0.25)
    assert consistency_weight("truncated-snr", torch.tensor([0.5]), sigma_next, 0.5).item() == pytest.approx(4.0)
    assert consistency_weight("truncated-snr", sigma, sigma_next, 0.5).item() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        consistency_weight("lpips", sigma, sigma_next, 0.5)


def _cd_loss(gaussian, model, step, n=4096):
    generator = torch.Generator().manual_seed(0)
    grid = karras_sigmas(18, 0.002, 80.0, 7.0)
    index = torch.randint(0, 17, (n,), generator=generator)
    x0 = gaussian.mean + gaussian.std * torch.randn(n, 3, dtype=torch.float64, generator=generator)
    noise = torch.randn(n, 3, dtype=torch.float64, generator=generator)
    return consistency_distillation_loss(
        model, model, gaussian.denoiser, step, x0, noise, grid[index], grid[index + 1], l2_distance,
        torch.ones(n, dtype=torch.float64),
    ).mean().item()  # fmt: skip


def test_cd_loss_vanishes_for_the_exact_consistency_function(gaussian):
    exact_heun = _cd_loss(gaussian, gaussian.consistency, heun_step)
    exact_euler = _cd_loss(gaussian, gaussian.consistency, euler_step)
    wrong = _cd_loss(gaussian, gaussian.denoiser, heun_step)
    assert exact_heun < 1e-5
    assert exact_heun < exact_euler  # Heun's teacher step is more accurate
    assert wrong > 100 * exact_heun


def test_ct_loss_of_the_exact_function_shrinks_as_the_grid_gets_finer(gaussian):
    def loss(num_points):
        n = 20_000
        generator = torch.Generator().manual_seed(0)
        grid = karras_sigmas(num_points, 0.002, 80.0, 7.0)
        index = torch.randint(0, num_points - 1, (n,), generator=generator)
        x0 = gaussian.mean + gaussian.std * torch.randn(n, 3, dtype=torch.float64, generator=generator)
        noise = torch.randn(n, 3, dtype=torch.float64, generator=generator)
        return consistency_training_loss(
            gaussian.consistency, gaussian.consistency, x0, noise, grid[index], grid[index + 1], l2_distance,
            torch.ones(n, dtype=torch.float64),
        ).mean().item()  # fmt: skip

    assert loss(100) < loss(10) / 10


def test_paired_passes_share_the_dropout_mask():
    net = nn.Sequential(nn.Linear(8, 64), nn.Dropout(0.5), nn.Linear(64, 8)).train()
    x = torch.randn(4, 8)
    online, target = paired_passes(lambda: net(x), lambda: net(x), x.device)
    assert torch.equal(online, target)
    assert online.requires_grad and not target.requires_grad
    assert not torch.equal(net(x), net(x))  # without pairing the masks differ


def test_paired_passes_continue_the_stream_as_if_the_target_pass_had_not_run():
    torch.manual_seed(3)
    paired_passes(lambda: torch.rand(3), lambda: torch.rand(3), torch.device("cpu"))
    after_pair = torch.rand(3)
    torch.manual_seed(3)
    torch.rand(3)
    assert torch.equal(after_pair, torch.rand(3))
