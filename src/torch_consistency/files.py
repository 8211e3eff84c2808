"""Atomic file writes: a result appears complete under its name, or not at all."""

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import ConfigError


def fsync_path(path: Path) -> None:
    """Flush a file or folder to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def check_output_folder(path: str | Path, option: str = "--out") -> Path:
    """`path` as a Path; ConfigError unless it is a folder or can be made one (no file in the way, writable)."""
    path = Path(path)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        where = "is a file" if existing == path else f"cannot be created: {existing} is a file"
        raise ConfigError(f"{option} {path} {where}; name a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path} cannot be written: {existing} is not writable")
    return path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it to `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield temporary
        fsync_path(temporary)
        os.replace(temporary, path)
        fsync_path(path.parent)
    finally:
        if temporary.exists():
            temporary.unlink()


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write text to `path` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text)
    return Path(path)


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    """Write JSON to `path` atomically."""
    return write_text_atomic(path, json.dumps(payload, indent=2) + "\n")
