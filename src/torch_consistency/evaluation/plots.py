"""Pictures of results: scatter plots of 2-D samples and grids of images."""

import math
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from ..files import atomic_path


def save_scatter_grid(
    panels: dict[str, torch.Tensor],
    path: str | Path,
    limit: float = 1.2,
    columns: int = 4,
    point_size: float = 1.0,
) -> Path:
    """One scatter plot per named set of 2-D points, in a grid, saved as PNG."""
    path = Path(path)
    rows = (len(panels) + columns - 1) // columns
    columns = min(columns, len(panels))
    figure, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows), squeeze=False)
    for axis in axes.flat:
        axis.set_visible(False)
    for axis, (title, points) in zip(axes.flat, panels.items(), strict=False):
        points = points.flatten(1)[:, :2].cpu().numpy()
        axis.set_visible(True)
        axis.scatter(points[:, 0], points[:, 1], s=point_size, alpha=0.5, linewidths=0)
        axis.set_xlim(-limit, limit)
        axis.set_ylim(-limit, limit)
        axis.set_aspect("equal")
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_title(title, fontsize=9)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100, format="png")
    plt.close(figure)
    return path


def image_grid(images: torch.Tensor, columns: int | None = None, padding: int = 1) -> np.ndarray:
    """Images in [-1, 1] (N, C, H, W) tiled into one uint8 H×W×C array, `columns` per row."""
    count, channels, height, width = images.shape
    columns = columns or max(1, math.ceil(math.sqrt(count)))
    rows = math.ceil(count / columns)
    grid = np.full(
        (rows * (height + padding) + padding, columns * (width + padding) + padding, channels), 255, np.uint8
    )
    pixels = to_uint8(images)
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = padding + row * (height + padding), padding + column * (width + padding)
        grid[top : top + height, left : left + width] = pixels[index]
    return grid


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] floats (N, C, H, W) → uint8 (N, H, W, C), the layout of openai's evaluator."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def save_png(array: np.ndarray, path: str | Path, scale: int = 1) -> Path:
    """Write a uint8 H×W×C (C = 1 or 3) array as PNG, enlarged `scale` times with nearest neighbours."""
    image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG")
    return Path(path)


def save_samples_picture(samples: torch.Tensor, path: str | Path, title: str = "") -> Path:
    """A picture of samples: an image grid for images, a scatter plot for vectors."""
    if samples.ndim == 4:
        grid = image_grid(samples[:256])
        return save_png(grid, path, scale=max(1, 256 // grid.shape[0]))
    return save_scatter_grid({title: samples}, path, columns=1)
