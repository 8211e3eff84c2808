import pytest
import torch

from torch_consistency.samplers import renoise_std, sample_multistep, sample_onestep


def test_one_step_with_the_exact_consistency_function_samples_the_data(gaussian):
    noise = torch.randn(200_000, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    result = sample_onestep(gaussian.consistency, noise, 80.0)
    assert result.nfe == 1
    assert torch.allclose(result.x.mean(0), gaussian.mean, atol=5e-3)
    assert torch.allclose(result.x.std(0), torch.full((3,), gaussian.std, dtype=torch.float64), atol=5e-3)


def test_multistep_keeps_the_exact_distribution(gaussian):
    """With the exact f each step maps N(μ, s² + σ²) back onto the data, so the law stays exact."""
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn(200_000, 3, dtype=torch.float64, generator=generator)
    result = sample_multistep(gaussian.consistency, [80.0, 2.0, 0.5], noise, 0.002, generator)
    assert result.nfe == 3
    expected_std = (gaussian.std**2 + 0.002**2) ** 0.5
    assert torch.allclose(result.x.std(0), torch.full((3,), expected_std, dtype=torch.float64), atol=5e-3)
    assert torch.allclose(result.x.mean(0), gaussian.mean, atol=5e-3)


def test_renoising_adds_sqrt_sigma_squared_minus_sigma_min_squared():
    calls = []

    def identity(x, sigma):
        calls.append(sigma[0].item())
        return torch.zeros_like(x)

    generator = torch.Generator().manual_seed(0)
    noise = torch.zeros(100_000, 1)
    result = sample_multistep(identity, [80.0, 3.0], noise, 0.002, generator)
    assert calls == [80.0, 3.0] and result.x.abs().max() == 0
    assert renoise_std(3.0, 2.0) == pytest.approx(5**0.5)  # σ_min large enough that √σ² = 3 would fail


def test_multistep_draws_noise_from_the_generator_in_order():
    seen = []

    def record(x, sigma):
        seen.append(x.clone())
        return torch.zeros_like(x)

    generator = torch.Generator().manual_seed(5)
    sample_multistep(record, [80.0, 1.0], torch.ones(2, 2), 0.6, generator)
    expected = torch.randn(2, 2, generator=torch.Generator().manual_seed(5)) * (1.0 - 0.6**2) ** 0.5
    assert torch.allclose(seen[1], expected)


def test_clip_denoised_clamps_each_output():
    result = sample_onestep(lambda x, s: 5 * torch.ones_like(x), torch.randn(3, 2), 80.0, clip_denoised=True)
    assert torch.all(result.x == 1)


@pytest.mark.parametrize("sigmas", [[], [1.0, 2.0], [80.0, 0.001]])
def test_bad_sigma_lists_raise(sigmas):
    with pytest.raises(ValueError):
        sample_multistep(lambda x, s: x, sigmas, torch.zeros(1, 2), 0.002)
