import itertools

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from torch_consistency.data.images import load_digits
from torch_consistency.errors import ConfigError, DataError
from torch_consistency.evaluation import classifier as classifier_module
from torch_consistency.evaluation.classifier import ClassifierSettings, classifier_cache_key, load_or_train_classifier
from torch_consistency.evaluation.features import classifier_extractor, raw_extractor, reference_statistics
from torch_consistency.evaluation.frechet import (
    FeatureStatistics,
    feature_statistics,
    frechet_distance,
    kernel_inception_distance,
    precision_recall,
)

FAST = ClassifierSettings(epochs=2, batch_size=32, width=16, augment=False)


def gaussian_features(n, d, seed, shift=0.0):
    """n draws of one correlated Gaussian law per d (the mixing is fixed; `seed` picks the draws)."""
    mixing = np.random.default_rng(d).normal(size=(d, d)) / np.sqrt(d) + np.eye(d)
    return np.random.default_rng(seed).normal(size=(n, d)) @ mixing + shift


def scipy_frechet(a, b):
    root = scipy.linalg.sqrtm(a.sigma @ b.sigma).real
    return float(((a.mu - b.mu) ** 2).sum() + np.trace(a.sigma + b.sigma - 2 * root))


def test_frechet_distance_matches_scipy_sqrtm_and_closed_forms():
    a = feature_statistics(gaussian_features(400, 24, 0))
    b = feature_statistics(gaussian_features(400, 24, 1, shift=0.3) * 1.5)
    assert frechet_distance(a, b) == pytest.approx(scipy_frechet(a, b), rel=1e-6)
    assert abs(frechet_distance(a, a)) < 1e-8
    # commuting (diagonal) covariances: FD = ‖Δμ‖² + Σ (√a_i − √b_i)²
    da, db = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    diagonal = frechet_distance(FeatureStatistics(np.zeros(3), np.diag(da)), FeatureStatistics(np.ones(3), np.diag(db)))
    assert diagonal == pytest.approx(3 + ((np.sqrt(da) - np.sqrt(db)) ** 2).sum(), rel=1e-12)


def test_frechet_distance_is_robust_to_singular_covariances_and_warns():
    few = feature_statistics(gaussian_features(10, 24, 2))  # rank 9 of 24: tiny negative eigenvalues
    many = feature_statistics(gaussian_features(400, 24, 3))
    with pytest.warns(UserWarning, match="only 10 samples for 24-dimensional"):
        value = frechet_distance(few, many)
    assert np.isfinite(value) and value > 0
    with pytest.warns(UserWarning):
        assert abs(frechet_distance(few, few)) < 1e-8


def test_statistics_round_trip_edm_npz_and_refuse_other_shapes(tmp_path):
    ours = feature_statistics(gaussian_features(50, 8, 4), extractor="raw values (8-d)")
    loaded = FeatureStatistics.load(ours.save(tmp_path / "ours.npz"))
    assert np.array_equal(loaded.mu, ours.mu) and np.array_equal(loaded.sigma, ours.sigma)
    assert (loaded.count, loaded.extractor) == (50, "raw values (8-d)")
    np.savez(tmp_path / "edm.npz", mu=ours.mu.astype(np.float32), sigma=ours.sigma)  # EDM's `fid.py ref` layout
    edm = FeatureStatistics.load(tmp_path / "edm.npz")
    assert edm.count == 0 and edm.mu.dtype == np.float64 and abs(frechet_distance(edm, ours)) < 1e-5
    other = feature_statistics(gaussian_features(50, 6, 5))
    with pytest.raises(ConfigError, match=r"dimension 8 .* and 6 .* different feature extractors"):
        frechet_distance(ours, other)
    np.savez(tmp_path / "foreign.npz", images=np.zeros(3))
    with pytest.raises(DataError, match="no arrays mu and sigma"):
        FeatureStatistics.load(tmp_path / "foreign.npz")


def test_kid_is_near_zero_for_one_law_and_positive_for_a_shift():
    a, b = gaussian_features(600, 16, 6), gaussian_features(600, 16, 7)
    same = kernel_inception_distance(a, b, subsets=20, subset_size=200)
    shifted = kernel_inception_distance(a, b + 0.5, subsets=20, subset_size=200)
    assert abs(same.mean) < 3 * same.std + 1e-3
    assert shifted.mean > 10 * max(abs(same.mean), same.std)
    with pytest.raises(ConfigError, match="subset size"):
        kernel_inception_distance(a, b, subset_size=1000)


def test_precision_recall_near_one_for_one_law_and_falls_with_a_shift():
    real, other = gaussian_features(1000, 2, 8), gaussian_features(1000, 2, 9)
    same = precision_recall(real, other, k=3)
    assert same.precision > 0.9 and same.recall > 0.9
    far = precision_recall(real, other + 2.0, k=3)
    assert far.precision < same.precision - 0.3 and far.recall < same.recall - 0.3
    # many small batches give exactly the same answer as one block
    assert precision_recall(real, other + 1.0, max_elements=3000) == precision_recall(real, other + 1.0)


@pytest.fixture(scope="module")
def digits_classifier(tmp_path_factory):
    cache = tmp_path_factory.mktemp("classifier-cache")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 8×8 convolutions gain nothing from threads, and lose much on a busy machine
    try:
        return load_or_train_classifier(load_digits(), cache, FAST), cache
    finally:
        torch.set_num_threads(threads)


def test_classifier_learns_digits_and_is_cached(digits_classifier, monkeypatch):
    trained, cache = digits_classifier
    assert trained.trained and trained.accuracy > 0.9
    assert trained.weights_path.is_file() and trained.weights_path.with_suffix(".json").is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("a cache hit must not retrain")

    monkeypatch.setattr(classifier_module, "train_classifier", no_training)
    again = load_or_train_classifier(load_digits(), cache, FAST)
    assert not again.trained and again.accuracy == trained.accuracy
    for name, tensor in trained.model.state_dict().items():
        assert torch.equal(tensor, again.model.state_dict()[name]), name


def test_classifier_cache_key_changes_with_settings_and_data():
    digits = load_digits()
    key = classifier_cache_key(digits, FAST)
    assert key == classifier_cache_key(load_digits(), ClassifierSettings(2, 32, width=16, augment=False))
    assert key != classifier_cache_key(digits, ClassifierSettings(epochs=3, batch_size=32, width=16, augment=False))
    assert key != classifier_cache_key(digits, ClassifierSettings(epochs=2, batch_size=32, width=16, seed=1))
    digits.labels[0] = (digits.labels[0] + 1) % 10
    assert key != classifier_cache_key(digits, FAST)


def gaussian_blur(x, sigma):
    if sigma == 0:
        return x
    offsets = torch.arange(-3, 4, dtype=torch.float32)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    x = F.conv2d(F.pad(x, (3, 3, 0, 0), mode="replicate"), kernel.view(1, 1, 1, 7))
    return F.conv2d(F.pad(x, (0, 0, 3, 3), mode="replicate"), kernel.view(1, 1, 7, 1))


def test_classifier_frechet_distance_grows_with_blur_and_noise(digits_classifier):
    extractor = classifier_extractor(digits_classifier[0])
    assert extractor.metric_name == "FD_classifier" and extractor.dim == 64
    digits = load_digits()
    images = digits.to_float(digits.images)
    reference = feature_statistics(extractor(images[::2]), extractor.description)  # disjoint halves
    distances = [
        frechet_distance(reference, feature_statistics(extractor(gaussian_blur(images[1::2], s))))
        for s in (0.0, 0.5, 0.8, 1.5)
    ]
    assert all(later > earlier for earlier, later in itertools.pairwise(distances)), distances
    assert distances[-1] > 20 * distances[0]  # the data floor is small next to heavy blur
    noise = torch.randn(images[1::2].shape, generator=torch.Generator().manual_seed(0))
    noised = [
        frechet_distance(reference, feature_statistics(extractor(images[1::2] + std * noise)))
        for std in (0.0, 0.1, 0.3, 0.6)
    ]
    assert all(later > earlier for earlier, later in itertools.pairwise(noised)), noised


def test_reference_statistics_are_cached_per_extractor_and_data(tmp_path):
    samples = torch.from_numpy(gaussian_features(300, 5, 10)).float()
    extractor = raw_extractor(5)
    first = reference_statistics(extractor, samples, tmp_path, "toy/train")
    files = sorted(tmp_path.glob("*.npz"))
    assert len(files) == 1 and files[0].name.startswith("toy-train-raw-")
    again = reference_statistics(extractor, samples, tmp_path, "toy/train")
    assert np.array_equal(first.sigma, again.sigma) and again.count == 300
    reference_statistics(extractor, samples[:200], tmp_path, "toy/train")  # other data: another file
    assert len(list(tmp_path.glob("*.npz"))) == 2
    with pytest.raises(ConfigError, match=r"dimension 5 .* and 3"):
        frechet_distance(first, feature_statistics(gaussian_features(300, 3, 11)))
