import math

import pytest
import torch

from torch_consistency.distances import (
    distance,
    l1_distance,
    l2_distance,
    pseudo_huber_constant,
    pseudo_huber_distance,
)


def test_l2_and_l1_are_per_sample_means():
    x = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    y = torch.tensor([[0.0, 0.0], [3.0, -1.0]])
    assert l2_distance(x, y).tolist() == [2.5, 5.0]
    assert l1_distance(x, y).tolist() == [1.5, 2.0]


def test_pseudo_huber_constant_for_cifar():
    assert pseudo_huber_constant(3 * 32 * 32) == pytest.approx(0.00054 * math.sqrt(3072))
    assert pseudo_huber_constant(3 * 32 * 32) == pytest.approx(0.03, abs=1e-3)


def test_pseudo_huber_is_on_the_per_sample_vector_norm():
    x = torch.zeros(2, 2, 2)
    y = torch.tensor([[[3.0, 0.0], [0.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    c = pseudo_huber_constant(4)
    expected = math.sqrt(25 + c**2) - c  # ‖(3, 0, 0, 4)‖ = 5
    assert pseudo_huber_distance(x, y)[0].item() == pytest.approx(expected, rel=1e-6)
    assert pseudo_huber_distance(x, y)[1].item() == 0.0
    per_element = (torch.sqrt((x - y) ** 2 + c**2) - c).flatten(1).sum(1)
    assert not torch.allclose(pseudo_huber_distance(x, y), per_element)


def test_pseudo_huber_behaves_like_l2_near_zero_and_l1_far_away():
    c = 1.0
    small = pseudo_huber_distance(torch.zeros(1, 1), torch.full((1, 1), 1e-3), c).item()
    large = pseudo_huber_distance(torch.zeros(1, 1), torch.full((1, 1), 1e3), c).item()
    assert small == pytest.approx(0.5e-6, rel=1e-3)  # ≈ ‖Δ‖²/(2c)
    assert large == pytest.approx(1e3 - 1, rel=1e-3)  # ≈ ‖Δ‖ − c


def test_lookup_by_name():
    assert distance("l2") is l2_distance
    with pytest.raises(ValueError):
        distance("lpips-alex")
