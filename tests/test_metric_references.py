"""Our metrics equal the maintained libraries' on the same weights and features (issue 11, deliverable 3).

Inception features and the whole image → features pipeline equal torch-fidelity's; LPIPS equals the lpips package's;
KID and the Fréchet distance equal torch-fidelity's; precision and recall equal prdc's and torch-fidelity's.
The networks get random weights (nothing is downloaded), with non-trivial batch-norm statistics.
"""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reference_libraries import (
    FeatureExtractorInceptionV3,
    fid_features_to_statistics,
    fid_statistics_to_metric,
    interpolate_bilinear_2d_like_tensorflow1x,
    kernel_mmd,
    kid_features_to_metric,
    lpips,
    prc_features_to_metric,
    prdc,
)
from torch_consistency.evaluation.features import inception_extractor
from torch_consistency.evaluation.frechet import (
    feature_statistics,
    frechet_distance,
    kernel_inception_distance,
    mmd2_unbiased,
    precision_recall,
)
from torch_consistency.evaluation.inception import InceptionV3Features, resize_tensorflow1
from torch_consistency.nets.lpips import installed_lpips_heads, load_lpips


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """‖ours − reference‖ / ‖reference‖ per row."""
    return (ours - reference).norm(dim=1) / reference.norm(dim=1)


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """Random FID-Inception weights in torch-fidelity's layout (torchvision names, fc, batch counters).

    He-initialised convolutions and batch-norm statistics measured on random images keep every layer's activations
    at unit scale, so that the features depend on the input (with PyTorch's default initialisation they are nearly
    constant, and a wrong input scale or resize would change them by less than 1e-7).
    """
    torch.manual_seed(3)
    network = InceptionV3Features()
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # running statistics = the average over the calibration batch
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.2, 0.2)
    with torch.no_grad():
        network.train()(torch.randn(2, 3, 299, 299))
    state = dict(network.eval().state_dict())
    state["fc.weight"], state["fc.bias"] = torch.randn(1008, 2048) * 0.01, torch.zeros(1008)
    path = tmp_path_factory.mktemp("inception") / "weights-inception-random.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def torch_fidelity_inception(inception_file):
    return FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=inception_file)


@pytest.mark.parametrize("shape", [(8, 8), (28, 28), (32, 32), (299, 299), (300, 300), (512, 384), (1, 5), (37, 1)])
def test_resize_is_torch_fidelitys_tensorflow1_bilinear(shape):
    x = torch.rand(2, 3, *shape) * 255
    reference = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    assert torch.equal(resize_tensorflow1(x), reference)


def test_resize_is_not_torchs_bilinear():
    """The two resizes differ (pytorch-fid's F.interpolate would change FID), so the test above can fail."""
    x = torch.rand(1, 3, 32, 32) * 255
    torch_bilinear = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    assert (resize_tensorflow1(x) - torch_bilinear).abs().max() > 1


def test_inception_pipeline_equals_torch_fidelity_for_any_image_size(inception_file, torch_fidelity_inception):
    """Our weights file → images → 2048-d features equals torch-fidelity's on the same file, within 1e-4 relative."""
    ours = inception_extractor(inception_file)
    generator = torch.Generator().manual_seed(0)
    grey = torch.randint(0, 256, (1, 1, 28, 28), dtype=torch.uint8, generator=generator)  # upsampled
    large = torch.randint(0, 256, (1, 3, 400, 350), dtype=torch.uint8, generator=generator)  # downsampled
    floats = torch.rand(2, 3, 32, 32, generator=generator) * 2 - 1  # not on the 8-bit grid: theirs needs uint8
    cases = [
        (grey, grey.expand(-1, 3, -1, -1)),
        (large, large),
        (floats, ((floats + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)),
    ]
    for images, as_uint8 in cases:
        with torch.no_grad():
            (reference,) = torch_fidelity_inception(as_uint8)
        features = torch.from_numpy(ours(images)).float()
        assert reference.norm(dim=1).min() > 0 and reference.std(dim=1).min() > 0
        assert relative_error(features, reference).max() <= 1e-4, tuple(images.shape)


@pytest.fixture(scope="module")
def lpips_pair(tmp_path_factory):
    """The lpips package's LPIPS (its bundled VGG heads, a random VGG16) and ours from the same two files."""
    torch.manual_seed(4)
    with warnings.catch_warnings():  # torchvision: lpips' `pretrained=False` is deprecated
        warnings.simplefilter("ignore", UserWarning)
        reference = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
    vgg = {  # lpips' net.slice{s}.{i}.* are torchvision's features.{i}.*
        f"features.{key.split('.', 2)[2]}": value
        for key, value in reference.state_dict().items()
        if key.startswith("net.")
    }
    path = tmp_path_factory.mktemp("lpips") / "vgg16-random.pth"
    torch.save(vgg, path)
    heads = installed_lpips_heads()
    assert heads == Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth"
    return reference, load_lpips(path, heads)


@pytest.mark.parametrize("shape", [(3, 32, 32), (3, 48, 40)])
def test_lpips_distance_equals_the_lpips_package(lpips_pair, shape):
    """Same VGG16 and heads, images at their own size: distances equal within 1e-5 relative."""
    reference, ours = lpips_pair
    x, y = torch.rand(4, *shape) * 2 - 1, torch.rand(4, *shape) * 2 - 1
    y[0] = x[0]  # and a distance of 0
    with torch.no_grad():
        expected = reference(x, y).flatten()
        distance = ours.distance(x, y)
    assert expected[1:].min() > 0 and distance[0] == 0 == expected[0]
    assert torch.allclose(distance, expected, rtol=1e-5, atol=0)


def test_lpips_of_small_images_is_the_lpips_package_on_images_upsampled_to_224(lpips_pair):
    """Below 256 px ours upsamples to 224 (bilinear, as openai's CD); lpips does not resize, so it gets them resized."""
    reference, ours = lpips_pair
    x, y = torch.rand(1, 1, 16, 16) * 2 - 1, torch.rand(1, 1, 16, 16) * 2 - 1  # grey: replicated to RGB

    def upsampled(images):
        return F.interpolate(images.expand(-1, 3, -1, -1), size=(224, 224), mode="bilinear", align_corners=False)

    with torch.no_grad():
        expected = reference(upsampled(x), upsampled(y)).flatten()
        distance = ours(x, y)
    assert torch.allclose(distance, expected, rtol=1e-5, atol=0)


def two_laws(n_a: int, n_b: int, dim: int, seed: int, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """Features of two different laws: N(0, I) and a shifted, scaled, correlated one."""
    rng = np.random.default_rng(seed)
    mixing = np.eye(dim) + 0.3 * rng.standard_normal((dim, dim)) / np.sqrt(dim)
    a = rng.standard_normal((n_a, dim))
    b = 0.4 + 1.2 * rng.standard_normal((n_b, dim)) @ mixing
    return a.astype(dtype), b.astype(dtype)


def test_frechet_distance_equals_torch_fidelitys_from_the_same_features():
    a, b = two_laws(400, 300, 16, seed=0)
    theirs = fid_statistics_to_metric(
        fid_features_to_statistics(torch.from_numpy(a)), fid_features_to_statistics(torch.from_numpy(b)), False
    )["frechet_inception_distance"]
    ours = frechet_distance(feature_statistics(a), feature_statistics(b))
    assert theirs > 1 and ours == pytest.approx(theirs, rel=1e-9)


def test_mmd2_equals_torch_fidelitys_cubic_kernel_estimate():
    a, b = two_laws(60, 60, 8, seed=1)
    assert mmd2_unbiased(a, b) == pytest.approx(kernel_mmd(a, b), rel=1e-9, abs=0)


@pytest.mark.parametrize("shift", [0.0, 1.0])
def test_kid_equals_torch_fidelitys_on_the_same_features_and_seed(shift):
    """Same RandomState(seed) draws the same subsets (first from a, then from b); mean and std equal to 1e-6."""
    a, b = two_laws(120, 150, 32, seed=2)
    b = b + shift
    theirs = kid_features_to_metric(torch.from_numpy(a), torch.from_numpy(b), kid_subsets=10, kid_subset_size=50,
                                    rng_seed=7, verbose=False)  # fmt: skip
    ours = kernel_inception_distance(a, b, subsets=10, subset_size=50, seed=7)
    assert theirs["kernel_inception_distance_std"] > 0
    assert abs(ours.mean - theirs["kernel_inception_distance_mean"]) <= 1e-6 * theirs["kernel_inception_distance_std"]
    assert ours.std == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-6)


@pytest.mark.parametrize("k", [3, 5])
def test_precision_recall_equal_prdc_and_torch_fidelity(k):
    """Kynkäänniemi et al.'s k-NN manifolds, same k: prdc (strict <) and torch-fidelity (≤) agree on continuous data."""
    real, fake = two_laws(200, 150, 16, seed=3, dtype=np.float32)
    reference = prdc.compute_prdc(real, fake, nearest_k=k)
    fidelity = prc_features_to_metric(torch.from_numpy(fake), torch.from_numpy(real), prc_neighborhood=k,
                                      prc_batch_size=10000, save_cpu_ram=False, verbose=False)  # fmt: skip
    ours = precision_recall(real, fake, k=k)
    assert 0.05 < reference["precision"] < 0.95 and 0.05 < reference["recall"] < 0.95
    assert ours.precision == reference["precision"] == pytest.approx(fidelity["precision"], abs=1e-6)  # float32 mean
    assert ours.recall == reference["recall"] == pytest.approx(fidelity["recall"], abs=1e-6)  # (one point: 1/150)
