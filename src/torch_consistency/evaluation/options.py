"""The settings and the result of one evaluation (`evaluation.run.evaluate`, `cm eval`)."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

DEFAULT_CACHE = Path.home() / ".cache" / "torch-consistency"


@dataclass
class EvaluationOptions:
    """The settings of one evaluation (`evaluate`'s arguments; `cm eval`'s options of the same names)."""

    checkpoint: str | Path
    out: Path | None = None
    steps: Sequence[int] = (1, 2, 4)
    teacher_steps: Sequence[int] = (18,)
    num: int | None = None
    weights: str | None = None
    seed: int = 0
    device: str | torch.device = "cpu"
    features: str = "classifier"
    inception_weights: Path | None = None
    allow_torchscript: bool = False
    cache: Path = field(default_factory=lambda: DEFAULT_CACHE)
    reference_stats: Path | None = None
    guidance: float | None = None
    search_sigmas: bool = False
    data_path: Path | None = None


@dataclass
class Evaluation:
    """The scores of one evaluation: `results` (what results.json holds: checkpoint, step, scores, data_floor and,
    for vectors, consistency_error; for images metric, features and reference), `report` (the Markdown table of
    results.md) and `out`, the folder they were written to (None: nothing written)."""

    results: dict[str, Any]
    report: str
    out: Path | None

    @property
    def scores(self) -> list[dict[str, Any]]:
        """One dict per scored sampler (label, nfe and the metrics)."""
        return self.results["scores"]
