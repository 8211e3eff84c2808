"""Per-step logs: one JSON line per step in RUN/log.jsonl, optionally TensorBoard scalars too."""

import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError


def summary_writer() -> type:
    """TensorBoard's SummaryWriter, or a ConfigError when the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("train.tensorboard needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter


class RunLog:
    """Appends step records to log.jsonl (and TensorBoard); on resume, drops the lines of steps to be redone."""

    def __init__(self, run_dir: Path, resume_step: int | None, tensorboard: bool) -> None:
        self.path = run_dir / "log.jsonl"
        if resume_step is not None and self.path.exists():
            kept = []
            for line in self.path.read_text(errors="replace").splitlines():  # damaged lines are dropped below
                step = _step(line)
                if step is not None and step <= resume_step:
                    kept.append(line + "\n")
            self.path.write_text("".join(kept))
        self.file = open(self.path, "a")
        self.writer = summary_writer()(str(run_dir / "tensorboard")) if tensorboard else None

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key != "step":
                    self.writer.add_scalar(key, value, record["step"])

    def flush(self) -> None:
        self.file.flush()
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        self.file.close()
        if self.writer is not None:
            self.writer.close()


def _step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None  # a line cut short by a crash
