import math

import pytest

from torch_consistency.schedules import ct_num_points, ct_target_ema, ict_num_points

K = 800_000


@pytest.mark.parametrize(("step", "n", "mu"), [(0, 2, 0.81), (K // 2, 107, 0.99801), (K, 151, 0.99860)])
def test_ct_schedule_cifar_worked_values(step, n, mu):
    # reference.md §5, code variant, s0=2, s1=150, μ0=0.9
    assert ct_num_points(step, K, 2, 150) == n
    assert ct_target_ema(step, K, 2, 150, 0.9) == pytest.approx(mu, abs=1e-5)


def test_ct_schedule_imagenet_worked_values():
    assert ct_num_points(0, K, 2, 200) == 2
    assert ct_target_ema(0, K, 2, 200, 0.95) == pytest.approx(0.9025)
    assert ct_num_points(K, K, 2, 200) == 201
    assert ct_target_ema(K, K, 2, 200, 0.95) == pytest.approx(0.99949, abs=1e-5)


def test_paper_variant_divides_by_n():
    assert ct_target_ema(0, K, 2, 150, 0.9, variant="paper") == pytest.approx(0.9)
    assert ct_target_ema(K, K, 2, 150, 0.9, variant="paper") == pytest.approx(math.exp(2 * math.log(0.9) / 151))


def test_schedules_are_clamped_after_the_last_step():
    assert ct_num_points(3 * K, K, 2, 150) == 151
    assert ct_target_ema(3 * K, K, 2, 150, 0.9) == ct_target_ema(K, K, 2, 150, 0.9)
    assert ict_num_points(3 * K, K) == 1281


def test_ct_schedule_is_monotone():
    values = [ct_num_points(k, 1000, 2, 150) for k in range(0, 1001, 10)]
    assert values == sorted(values)


def test_ict_curriculum_doubles():
    # K' = ⌊K/(log2⌊1280/10⌋ + 1)⌋ = ⌊K/8⌋
    stage = K // 8
    assert [ict_num_points(i * stage, K) for i in range(8)] == [11, 21, 41, 81, 161, 321, 641, 1281]
    assert ict_num_points(stage - 1, K) == 11


def test_unknown_variant_raises():
    with pytest.raises(ValueError):
        ct_target_ema(0, K, 2, 150, 0.9, variant="blog")
