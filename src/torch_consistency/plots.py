"""Pictures of results: scatter plots of 2-D samples and grids of images."""

import math
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from .files import atomic_path


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
        coordinates = points.flatten(1)[:, :2].cpu().numpy()
        axis.set_visible(True)
        axis.scatter(coordinates[:, 0], coordinates[:, 1], s=point_size, alpha=0.5, linewidths=0)
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
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG")
    return Path(path)


def save_samples_picture(samples: torch.Tensor, path: str | Path, title: str = "") -> Path:
    """A picture of samples: an image grid for images, a scatter plot for vectors."""
    if samples.ndim == 4:
        grid = image_grid(samples[:256])
        return save_png(grid, path, scale=max(1, 256 // grid.shape[0]))
    return save_scatter_grid({title: samples}, path, columns=1)


def save_metric_plot(
    series: dict[str, list[tuple[int, float]]], metric: str, path: str | Path, floor: float | None = None
) -> Path:
    """A metric against NFE (both axes log scale), one line per named series (distinct colours and markers), the
    data floor as a dashed line."""
    figure, axis = plt.subplots(figsize=(6, 4))
    colours = plt.get_cmap("tab20").colors  # type: ignore[attr-defined]  # tab20 is a ListedColormap
    markers = "osD^v<>ph*"
    for index, (name, points) in enumerate(series.items()):
        points = sorted(points)
        axis.plot([p[0] for p in points], [p[1] for p in points], marker=markers[index % len(markers)],
                  color=colours[index % len(colours)], label=name)  # fmt: skip
    if floor is not None:
        axis.axhline(floor, linestyle="--", color="grey", label="data floor")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("NFE")
    axis.set_ylabel(metric)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")
    plt.close(figure)
    return Path(path)


def save_image_rows(rows: dict[str, torch.Tensor], path: str | Path) -> Path:
    """One labelled row of images per entry (e.g. real, teacher, CD 1 step, CD 2 steps), saved as PNG."""
    figure, axes = plt.subplots(len(rows), 1, figsize=(8, 0.9 * len(rows) + 0.3), squeeze=False)
    for axis, (title, images) in zip(axes[:, 0], rows.items(), strict=True):
        grid = image_grid(images, columns=len(images))
        axis.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", interpolation="nearest")
        axis.set_axis_off()
        axis.set_title(title, fontsize=8, loc="left")
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")
    plt.close(figure)
    return Path(path)
