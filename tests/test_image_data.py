"""Image datasets from real files written here: IDX, CIFAR batches, image folders, npz."""

import gzip
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from torch_consistency.config import DataConfig
from torch_consistency.data import build_dataset
from torch_consistency.data.images import load_cifar10, load_digits, load_image_folder, load_mnist, load_npz
from torch_consistency.errors import DataError


def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_digits_are_8x8_grey_in_minus_one_to_one():
    digits = load_digits()
    assert digits.sample_shape == (1, 8, 8) and len(digits) == 1797 and digits.num_classes == 10
    x, labels = digits.training_batch(0, 16, seed=0)
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1 and labels.shape == (16,)


def test_mnist_from_idx_files(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (12, 28, 28))
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(12) % 10)
    dataset = load_mnist(tmp_path)
    assert dataset.sample_shape == (1, 28, 28) and dataset.labels.tolist() == (np.arange(12) % 10).tolist()
    assert torch.equal(dataset.images[:, 0], torch.from_numpy(images.astype(np.uint8)))
    assert load_mnist(tmp_path / "t10k-images-idx3-ubyte.gz").sample_shape == (1, 28, 28)


def test_truncated_or_foreign_idx_files_are_refused(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 28, 28)))
    data = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(data[:-10])
    with pytest.raises(DataError, match="truncated"):
        load_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_text("hello")
    with pytest.raises(DataError, match="not an IDX file"):
        load_mnist(tmp_path)
    with pytest.raises(DataError, match="no MNIST images"):
        load_mnist(tmp_path / "..")


def test_cifar10_python_batches(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        batch = {b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), b"labels": [i % 10] * 3}
        (tmp_path / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    dataset = load_cifar10(tmp_path)
    assert dataset.sample_shape == (3, 32, 32) and len(dataset) == 15
    with pytest.raises(DataError, match="test_batch"):
        load_cifar10(tmp_path, part="test")


def make_images(folder, sizes, mode="RGB"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).convert(mode).save(folder / f"image{i}.png")


def test_image_folder_recursive_grey_and_rgb_with_corrupt_files_skipped(tmp_path):
    make_images(tmp_path / "a", [(16, 16)] * 3)
    make_images(tmp_path / "a" / "b", [(16, 16)] * 2, mode="L")
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    rgb = load_image_folder(tmp_path / "a", channels=3)
    assert rgb.sample_shape == (3, 16, 16) and len(rgb) == 5 and rgb.skipped == 1
    assert load_image_folder(tmp_path / "a", channels=1).sample_shape == (1, 16, 16)


def test_mixed_sizes_need_a_resolution(tmp_path):
    make_images(tmp_path, [(16, 16), (20, 12)])
    with pytest.raises(DataError, match=r"data\.resolution"):
        load_image_folder(tmp_path)
    resized = load_image_folder(tmp_path, resolution=8)
    assert resized.sample_shape == (3, 8, 8) and len(resized) == 2


def test_empty_missing_and_unreadable_folders(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_image_folder(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="none of the 1 image files"):
        load_image_folder(tmp_path / "bad")


@pytest.mark.parametrize("layout", ["nhwc-uint8", "nchw-float"])
def test_npz_arrays(tmp_path, layout):
    rng = np.random.default_rng(0)
    if layout == "nhwc-uint8":
        images = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
        np.savez(tmp_path / "a.npz", arr_0=images, arr_1=np.arange(6))
    else:
        images = rng.uniform(-1, 1, (6, 3, 8, 8)).astype(np.float32)
        np.savez(tmp_path / "a.npz", images=images, labels=np.arange(6))
    dataset = load_npz(tmp_path / "a.npz")
    assert dataset.sample_shape == (3, 8, 8) and dataset.labels.tolist() == list(range(6))


def test_batches_cover_each_epoch_once_and_depend_only_on_seed_and_step():
    digits = load_digits()
    steps = len(digits) // 97
    seen = torch.cat([digits.training_batch(step, 97, seed=3)[1] for step in range(steps)])
    counts = torch.bincount(seen, minlength=10)
    assert counts.sum() == 97 * steps
    expected = torch.bincount(digits.labels, minlength=10)
    assert torch.all(counts <= expected)  # no image repeats within the epoch
    again = load_digits()
    assert torch.equal(digits.training_batch(7, 32, 3)[0], again.training_batch(7, 32, 3)[0])
    assert not torch.equal(digits.training_batch(7, 32, 3)[0], digits.training_batch(7, 32, 4)[0])


def test_flips_and_holdout_split():
    config = DataConfig(name="digits", hflip=True, holdout_fraction=0.25)
    train, holdout = (
        build_dataset(config),
        build_dataset(DataConfig(name="digits", holdout_fraction=0.25, split="holdout")),
    )
    assert len(train) + len(holdout) == 1797 and abs(len(holdout) - 449) <= 1
    train_set = {bytes(image.numpy()) for image in train.images}
    assert not any(bytes(image.numpy()) in train_set for image in holdout.images[:50])
    x, _ = train.training_batch(0, 256, seed=0)
    plain = build_dataset(DataConfig(name="digits", holdout_fraction=0.25)).training_batch(0, 256, seed=0)[0]
    flipped = ~torch.isclose(x, plain).all(dim=(1, 2, 3))
    assert 0.3 < flipped.float().mean() < 0.7 and torch.allclose(x[flipped], plain[flipped].flip(-1))


def test_colored_variant_keeps_the_digit_and_varies_the_hue():
    grey = load_digits()
    color = build_dataset(DataConfig(name="digits", colored=True))
    assert color.sample_shape == (3, 8, 8) and torch.equal(color.labels, grey.labels)
    brightest = color.images.float().amax(dim=1)  # one channel is fully on: the max channel is the grey value
    assert torch.allclose(brightest, grey.images[:, 0].float(), atol=1)
    mean_colour = color.images.float().mean(dim=(2, 3))
    assert mean_colour.argmax(dim=1).unique().numel() == 3  # red-, green- and blue-dominated digits all occur
