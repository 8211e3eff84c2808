"""Configs shipped with the package: `cm train teacher toy_teacher ...` finds toy_teacher.toml here."""

from pathlib import Path

from ..errors import ConfigError

FOLDER = Path(__file__).parent


def bundled_configs() -> list[str]:
    """Names of the shipped configs."""
    return sorted(p.stem for p in FOLDER.glob("*.toml"))


def config_path(name_or_path: str | Path) -> Path:
    """An existing file, else the shipped config of that name (with or without .toml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = FOLDER / f"{path.stem}.toml"
    if path.parent == Path(".") and bundled.is_file():
        return bundled
    raise ConfigError(f"config file {path} does not exist; the bundled configs are {', '.join(bundled_configs())}")
