"""Pictures of results: scatter plots of 2-D samples."""

from pathlib import Path

import matplotlib

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


def save_samples_picture(samples: torch.Tensor, path: str | Path, title: str = "") -> Path:
    """A picture of samples: a scatter plot for vectors."""
    return save_scatter_grid({title: samples}, path, columns=1)
