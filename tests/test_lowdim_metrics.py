import math

import pytest
import torch

from torch_consistency.data.toy import eight_gaussians, toy_distribution
from torch_consistency.demo import squashed_onto_segments, uniform_disc
from torch_consistency.evaluation.evaluate import mmd_bandwidths, score, search_metric
from torch_consistency.evaluation.lowdim import (
    consistency_error,
    expected_kernel,
    gaussian_kernel_self_sum,
    gaussian_kernel_sum,
    gaussian_kernels,
    law_kernel,
    mixture_coverage,
    mmd,
    mmd_squared,
    ode_endpoint,
    wasserstein2,
    within_mean,
)
from torch_consistency.gaussian import GaussianMixture


def test_w2_of_a_shifted_copy_is_the_shift():
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    shift = torch.tensor([0.3, -0.4])
    assert wasserstein2(x, x + shift) == pytest.approx(0.5, rel=1e-6)
    assert wasserstein2(x, x[torch.randperm(300)]) == pytest.approx(0.0, abs=1e-7)


def test_w2_is_exact_on_a_tiny_case():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([[1.0, 1.0], [0.0, 1.0]])  # best matching pairs (0,0)-(0,1) and (1,0)-(1,1)
    assert wasserstein2(x, y) == pytest.approx(1.0)


def test_mmd_squared_matches_the_closed_form_between_two_gaussians():
    # x ~ N(a, s²I), y ~ N(b, t²I) in d dimensions, kernel exp(−‖u−v‖²/(2h²)):
    # E k(x, x') = (h²/(h²+2s²))^{d/2}, E k(x, y) = (h²/(h²+s²+t²))^{d/2} exp(−‖a−b‖²/(2(h²+s²+t²)))
    generator = torch.Generator().manual_seed(0)
    d, s, t, h = 2, 0.3, 0.5, 0.4
    a, b = torch.tensor([0.0, 0.0]), torch.tensor([0.4, -0.2])
    x = a + s * torch.randn(2000, d, generator=generator)
    y = b + t * torch.randn(2000, d, generator=generator)
    within_x, within_y = (h**2 / (h**2 + 2 * s**2)) ** (d / 2), (h**2 / (h**2 + 2 * t**2)) ** (d / 2)
    spread = h**2 + s**2 + t**2
    between = (h**2 / spread) ** (d / 2) * math.exp(-float((a - b).square().sum()) / (2 * spread))
    expected = within_x + within_y - 2 * between
    assert mmd_squared(x, y, (h,)) == pytest.approx(expected, rel=0.08)  # the spread of 2000 points: ±6 %
    assert mmd(x, y, (h,)) == pytest.approx(math.sqrt(expected), rel=0.04)
    # unbiased: about 0 (± 1e-4) for the same law; keeping the diagonal k(x_i, x_i) = 1 would add 2(1 − E k)/n ≈ 1e-3
    same = mmd_squared(x, a + s * torch.randn(2000, d, generator=generator), (0.05,))
    assert abs(same) < 3e-4


def test_the_kernel_expectations_under_one_isotropic_gaussian_are_the_closed_form():
    # y, y' ~ N(a, s²I) in 2-D, kernel exp(−‖u−v‖²/(2h²)): E k(x, y) = h²/(h²+s²) exp(−‖x−a‖²/(2(h²+s²))) and
    # E k(y, y') = h²/(h²+2s²), summed over the widths
    a, s, widths = torch.tensor([[0.3, -0.2]]), 0.25, (0.1, 0.4)
    law = GaussianMixture.isotropic(a, s)
    x = torch.tensor([[0.0, 0.0], [0.3, -0.2], [1.0, 2.0]], dtype=torch.float64)
    squared = (x - a.double()).square().sum(1)
    expected = sum(h**2 / (h**2 + s**2) * torch.exp(-squared / (2 * (h**2 + s**2))) for h in widths)
    assert torch.allclose(expected_kernel(x, law, widths), expected, rtol=1e-12)
    assert law_kernel(law, widths) == pytest.approx(sum(h**2 / (h**2 + 2 * s**2) for h in widths), rel=1e-12)


def test_the_kernel_expectations_under_a_mixture_match_monte_carlo():
    law = GaussianMixture(
        torch.tensor([0.3, 0.7]),
        torch.tensor([[0.0, 0.0], [0.5, 0.2]]),
        torch.tensor([[[0.04, 0.01], [0.01, 0.02]], [[0.01, -0.005], [-0.005, 0.03]]]),
    )
    generator = torch.Generator().manual_seed(0)
    draws, others = law.sample(400_000, generator), law.sample(400_000, generator)
    x = torch.tensor([[0.1, 0.0], [0.4, 0.3]], dtype=torch.float64)
    widths = (0.05, 0.2)
    by_draws = sum(torch.exp(-torch.cdist(x, draws).square() / (2 * h**2)).mean(1) for h in widths)
    assert torch.allclose(expected_kernel(x, law, widths), by_draws, rtol=0.01)
    pairs = sum(torch.exp(-(draws - others).square().sum(1) / (2 * h**2)).mean() for h in widths)
    assert law_kernel(law, widths) == pytest.approx(float(pairs), rel=0.01)


def test_the_mmd_to_the_law_is_unbiased_signed_and_quieter_than_to_a_held_out_set():
    data, widths = eight_gaussians(), (0.05, 0.1, 0.2, 0.4, 0.8)
    generator = torch.Generator().manual_seed(0)
    to_law, to_set = [], []
    for _ in range(30):
        draws = data.sample(300, generator)
        to_law.append(mmd_squared(draws, data.mixture, widths))
        to_set.append(mmd_squared(draws, data.sample(300, generator), widths))
    to_law, to_set = torch.tensor(to_law), torch.tensor(to_set)
    assert abs(float(to_law.mean())) < 3 * float(to_law.std()) / math.sqrt(30)  # 0 on average
    assert (to_law < 0).any() and (to_law > 0).any()  # signed: the noise below 0 is kept
    assert float(to_law.std()) < 0.8 * float(to_set.std())  # no reference set's own noise
    # a model's cluster spread 1.5× too wide scores about what it scores against a large held-out set
    wide = data.mixture.means[torch.randint(8, (3000,), generator=generator)] + 0.075 * torch.randn(
        3000, 2, generator=generator, dtype=torch.float64
    )
    assert mmd_squared(wide, data.mixture, widths) == pytest.approx(
        mmd_squared(wide, data.sample(20_000, generator), widths), rel=0.1
    )


def test_the_search_metric_is_the_signed_mmd_so_two_good_candidates_do_not_tie():
    data = eight_gaussians()
    metric = search_metric(data, 1000, seed=0)
    generator = torch.Generator().manual_seed(1)
    real = [metric(data.sample(1000, generator)) for _ in range(6)]
    assert min(real) < 0 and len(set(real)) == 6  # √max(·, 0) would read the negative ones as a tie at 0
    assert max(real) < metric(1.2 * data.sample(1000, generator))  # clusters too far out score worse


def test_the_within_set_mean_takes_its_pairs_inside_blocks():
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(2)).double()

    def kernel(i: int, j: int) -> float:
        return sum(math.exp(-float((x[i] - x[j]).square().sum()) / (2 * h**2)) for h in (0.3, 1.2))

    in_blocks = [(0, 1), (2, 3)]  # blocks of 2: {0, 1}, {2, 3}, {4}
    assert float(within_mean(x, (0.3, 1.2), block=2)) == pytest.approx(
        sum(kernel(i, j) for i, j in in_blocks) / 2, rel=1e-12
    )
    every_pair = [(i, j) for i in range(5) for j in range(i + 1, 5)]
    assert float(within_mean(x, (0.3, 1.2), block=5)) == pytest.approx(
        sum(kernel(i, j) for i, j in every_pair) / 10, rel=1e-12
    )


LADDER = (0.05, 0.1, 0.2, 0.4, 0.8)  # the demo's widths: each kernel the next wider one's 4th power


def test_each_kernel_is_the_exp_of_its_own_width_widest_first():
    """A ladder taken by squaring (0.1 → 0.05) and a width that is not half the one before (0.4 → 0.1) alike."""
    squared = torch.rand(7, 9, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 0.2
    widths, before = (0.05, 0.8, 0.1, 0.4), squared.clone()
    kernels = [kernel.clone() for kernel in gaussian_kernels(squared, widths)]
    for kernel, h in zip(kernels, (0.8, 0.4, 0.1, 0.05), strict=True):
        assert torch.allclose(kernel, torch.exp(-squared / (2 * h**2)), rtol=1e-13, atol=0)
    assert torch.equal(squared, before)  # the input is left as it was (not overwritten by the kernels)


@pytest.mark.parametrize("widths", [(0.1, 0.7), LADDER])
@pytest.mark.parametrize("dimensions", [2, 3])
def test_the_kernel_sum_in_blocks_equals_the_whole_matrix(dimensions, widths):
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(37, dimensions, generator=generator).double()
    b = torch.randn(23, dimensions, generator=generator).double()
    whole = sum(torch.exp(-torch.cdist(a, b).square() / (2 * h**2)).sum() for h in widths)
    assert float(gaussian_kernel_sum(a, b, widths, block_entries=50)) == pytest.approx(float(whole), rel=1e-12)


@pytest.mark.parametrize("widths", [(0.1, 0.7), LADDER])
@pytest.mark.parametrize("block_entries", [100, 37 * 37])  # blocks of 2 rows (the last one short), and one block
@pytest.mark.parametrize("dimensions", [2, 3])
def test_the_kernel_self_sum_from_half_the_pairs_equals_the_whole_matrix(block_entries, dimensions, widths):
    x = torch.randn(37, dimensions, generator=torch.Generator().manual_seed(3)).double()
    whole = sum(torch.exp(-torch.cdist(x, x).square() / (2 * h**2)).sum() for h in widths)
    assert float(gaussian_kernel_self_sum(x, widths, block_entries)) == pytest.approx(float(whole), rel=1e-12)


def _segments_and_disc(points: torch.Tensor, means: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The failure modes seen in the old demo: CD's clusters squashed into segments, CT's uniform disc."""
    return squashed_onto_segments(points, means), uniform_disc(len(points), 0.85, seed=5)


def test_the_demos_mmd_separates_clusters_segments_and_a_disc_where_w2_cannot():
    data = eight_gaussians()
    generator = torch.Generator().manual_seed(0)
    reference, clusters = data.sample(2000, generator).double(), data.sample(2000, generator).double()
    segments, disc = _segments_and_disc(clusters, data.mixture.means)
    bandwidths = mmd_bandwidths(data, reference)
    assert bandwidths == pytest.approx((0.05, 0.1, 0.2, 0.4, 0.8))  # from the components' std 0.05
    scores = {name: mmd(x, reference, bandwidths) for name, x in [("clusters", clusters), ("segments", segments),
                                                                 ("disc", disc)]}  # fmt: skip
    assert scores["clusters"] < 0.15 * scores["segments"]
    assert scores["segments"] < 0.75 * scores["disc"]
    # the exact W2 of the same 2000 points barely tells segments from clusters: its own sampling noise dominates
    w2 = {name: wasserstein2(x, reference) for name, x in [("clusters", clusters), ("segments", segments)]}
    assert w2["segments"] < 1.5 * w2["clusters"]


def test_mixture_coverage_counts_points_inside_each_components_99_percent_region():
    data = eight_gaussians(component_std=0.05)
    means = data.mixture.means
    generator = torch.Generator().manual_seed(0)
    fresh = mixture_coverage(data.sample(20000, generator), data.mixture)
    assert fresh.precision == pytest.approx(0.99, abs=0.003) and fresh.covered == 8 and fresh.components == 8
    # radius² ≤ χ²₂(0.99)·s² = −2 ln(0.01)·s²: just inside and just outside that circle around the first mean
    edge = 0.05 * math.sqrt(-2 * math.log(0.01))
    inside = means[0] + torch.tensor([[0.99 * edge, 0.0]], dtype=torch.float64)
    outside = means[0] + torch.tensor([[0.0, 1.01 * edge]], dtype=torch.float64)
    both = mixture_coverage(torch.cat([inside, outside]), data.mixture)
    assert both.precision == 0.5 and both.covered == 1
    _, disc = _segments_and_disc(data.sample(5000, generator), means)
    assert mixture_coverage(disc, data.mixture).covered == 0


def test_consistency_error_is_zero_for_the_exact_function_and_not_for_the_denoiser(gaussian):
    x0 = gaussian.mean + gaussian.std * torch.randn(200, 3, dtype=torch.float64)
    sigmas = [0.5, 2.0, 20.0]
    exact = consistency_error(gaussian.consistency, gaussian.denoiser, x0, sigmas, 0.002)
    wrong = consistency_error(gaussian.denoiser, gaussian.denoiser, x0, sigmas, 0.002)
    assert exact.mean < 5e-5  # the reference ODE solution is accurate to about 2e-5 here
    assert wrong.mean > 1e-2


def test_ode_endpoint_takes_a_sigma_per_row_and_lands_on_the_exact_map(gaussian):
    """Rows from σ = 0.5, 2 and 20 solved together reach the exact PF-ODE map of Gaussian data,
    μ + √((s² + σ_end²)/(s² + σ²))·(x − μ) (§12), each from its own σ."""
    sigmas = torch.tensor([0.5, 2.0, 20.0, 2.0], dtype=torch.float64)
    x = gaussian.mean + sigmas[:, None] * torch.randn(4, 3, dtype=torch.float64)
    s2 = gaussian.std**2
    exact = gaussian.mean + ((s2 + 0.002**2) / (s2 + sigmas[:, None] ** 2)).sqrt() * (x - gaussian.mean)
    assert torch.allclose(ode_endpoint(gaussian.denoiser, x, sigmas, 0.002), exact, atol=5e-5)
    alone = ode_endpoint(gaussian.denoiser, x[1:2], 2.0, 0.002, num_steps=64)
    assert torch.allclose(ode_endpoint(gaussian.denoiser, x, sigmas, 0.002, num_steps=64)[1:2], alone, rtol=1e-13)
    with pytest.raises(ValueError, match="sigma_end > 0"):
        ode_endpoint(gaussian.denoiser, x, sigmas, 0.0)


def test_consistency_error_reports_each_sigma_on_its_own(gaussian):
    """Per σ, the mean distance for that σ's rows only: f = the exact consistency function off by 0.1 only where
    σ > 1, so the error is ≈ 0 at σ = 0.5 and ≈ 0.1·√3 at σ = 2 and 20."""

    def off_above_one(x, sigma):
        return gaussian.consistency(x, sigma) + 0.1 * (sigma > 1).to(x.dtype)[:, None]

    x0 = gaussian.mean + gaussian.std * torch.randn(100, 3, dtype=torch.float64)
    error = consistency_error(off_above_one, gaussian.denoiser, x0, [0.5, 2.0, 20.0], 0.002)
    assert error.per_sigma[0] < 5e-5
    assert error.per_sigma[1:] == pytest.approx([0.1 * math.sqrt(3)] * 2, abs=5e-5)


def test_mmd_bandwidths_without_a_mixture_start_at_a_tenth_of_the_datas_std():
    reference = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [2.0, 4.0]])  # variances 4/3 and 16/3 (n − 1)
    width = 0.1 * math.sqrt((4 / 3 + 16 / 3) / 2)
    assert mmd_bandwidths(toy_distribution("two_moons"), reference) == pytest.approx([width * 2**k for k in range(5)])


def test_a_2d_score_is_the_mmd_over_five_widths_the_w2_of_2000_points_and_the_coverage():
    data = eight_gaussians()
    generator = torch.Generator().manual_seed(3)
    samples, reference = 1.3 * data.sample(2100, generator), data.sample(2100, generator)  # clusters too far out
    result = score("model", samples, reference, 1, data)
    assert result.mmd == pytest.approx(math.sqrt(mmd_squared(samples, data.mixture, (0.05, 0.1, 0.2, 0.4, 0.8))))
    assert result.w2 == pytest.approx(wasserstein2(samples[:2000], reference[:2000]))
    coverage = mixture_coverage(samples, data.mixture)
    assert (result.precision, result.covered) == (coverage.precision, coverage.covered)
    moons = score("model", samples, reference, 1, toy_distribution("two_moons"))  # no mixture: the held-out set
    assert moons.covered is None
    widths = mmd_bandwidths(toy_distribution("two_moons"), reference)
    assert moons.mmd == pytest.approx(math.sqrt(max(mmd_squared(samples, reference, widths), 0.0)))
