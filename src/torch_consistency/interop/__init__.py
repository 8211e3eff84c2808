"""Interoperability with diffusers: export consistency models, load diffusers teachers (see `interop.diffusers`).

Only `is_diffusers_folder` lives here: it needs no diffusers import, so toy runs do not pay for one.
"""

import json
from pathlib import Path


def is_diffusers_folder(path: str | Path) -> bool:
    """True for a folder with model_index.json, or with a config.json naming a diffusers class (`_class_name`)."""
    path = Path(path)
    if (path / "model_index.json").is_file():
        return True
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "_class_name" in config
