"""Datasets: low-dimensional distributions sampled on the fly, and images held in memory."""

from ..config import DataConfig
from ..errors import DataError
from .images import SPLITS, ImageDataset, colored, load_cifar10, load_digits, load_image_folder, load_mnist, load_npz
from .toy import TOY_DATASETS, Distribution, toy_distribution

IMAGE_DATASETS = ("digits", "mnist", "cifar10", "folder", "npz")
PATH_DATASETS = ("mnist", "cifar10", "folder", "npz")  # read from data.path
DATASETS = TOY_DATASETS + IMAGE_DATASETS
Dataset = Distribution | ImageDataset


def build_dataset(config: DataConfig) -> Dataset:
    """The dataset described by `config` (raises DataError for missing or unreadable files)."""
    if config.name in TOY_DATASETS:
        return toy_distribution(config.name, config.dim, config.components, config.component_std)
    if config.name in PATH_DATASETS and not config.path:
        raise DataError(f"data.path must name the {config.name} files")
    if config.name == "digits":
        dataset = load_digits()
    elif config.name == "mnist":
        dataset = load_mnist(config.path)
    elif config.name == "cifar10":
        dataset = load_cifar10(config.path)
    elif config.name == "folder":
        dataset = load_image_folder(config.path, config.resolution, config.channels)
    else:
        dataset = load_npz(config.path)
    if config.colored:
        dataset = colored(dataset)
    dataset.hflip = config.hflip
    if config.holdout_fraction > 0:
        dataset = dataset.split(config.holdout_fraction, config.split)
    return dataset


def build_vectors(config: DataConfig) -> Distribution:
    """`build_dataset` for a low-dimensional distribution; DataError for image data."""
    dataset = build_dataset(config)
    if not isinstance(dataset, Distribution):
        raise DataError(f"data.name = {config.name} holds images; a low-dimensional distribution is needed here")
    return dataset


def build_images(config: DataConfig) -> ImageDataset:
    """`build_dataset` for images; DataError for a low-dimensional distribution."""
    dataset = build_dataset(config)
    if not isinstance(dataset, ImageDataset):
        raise DataError(f"data.name = {config.name} is a low-dimensional distribution; images are needed here")
    return dataset


__all__ = [
    "DATASETS",
    "IMAGE_DATASETS",
    "PATH_DATASETS",
    "SPLITS",
    "Dataset",
    "Distribution",
    "ImageDataset",
    "build_dataset",
    "build_images",
    "build_vectors",
]
