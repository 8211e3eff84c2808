"""Datasets: low-dimensional distributions sampled on the fly."""

from ..config import DataConfig
from .toy import TOY_DATASETS, Distribution, toy_distribution

DATASETS = TOY_DATASETS


def build_dataset(config: DataConfig) -> Distribution:
    """The dataset described by `config`."""
    return toy_distribution(config.name, config.dim, config.components, config.component_std)


__all__ = ["DATASETS", "Distribution", "build_dataset"]
