import pytest
import torch

from torch_consistency.evaluation.lowdim import consistency_error, mmd_squared, wasserstein2


def test_w2_of_a_shifted_copy_is_the_shift():
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    shift = torch.tensor([0.3, -0.4])
    assert wasserstein2(x, x + shift) == pytest.approx(0.5, rel=1e-6)
    assert wasserstein2(x, x[torch.randperm(300)]) == pytest.approx(0.0, abs=1e-7)


def test_w2_is_exact_on_a_tiny_case():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([[1.0, 1.0], [0.0, 1.0]])  # best matching pairs (0,0)-(0,1) and (1,0)-(1,1)
    assert wasserstein2(x, y) == pytest.approx(1.0)


def test_mmd_is_near_zero_for_the_same_law_and_grows_with_a_shift():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(1000, 2, generator=generator), torch.randn(1000, 2, generator=generator)
    same = mmd_squared(a, b)
    shifted = mmd_squared(a, b + 0.5)
    assert abs(same) < 0.01 and shifted > 10 * max(abs(same), 1e-3)


def test_consistency_error_is_zero_for_the_exact_function_and_not_for_the_denoiser(gaussian):
    x0 = gaussian.mean + gaussian.std * torch.randn(200, 3, dtype=torch.float64)
    sigmas = [0.5, 2.0, 20.0]
    exact = consistency_error(gaussian.consistency, gaussian.denoiser, x0, sigmas, 0.002)
    wrong = consistency_error(gaussian.denoiser, gaussian.denoiser, x0, sigmas, 0.002)
    assert exact.mean < 5e-5  # the reference ODE solution is accurate to about 2e-5 here
    assert wrong.mean > 1e-2
