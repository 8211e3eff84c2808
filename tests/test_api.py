"""The public API of `import torch_consistency`: its names, its version and what importing it costs."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import torch_consistency as tc


def test_every_public_name_resolves_and_is_listed_once():
    assert len(set(tc.__all__)) == len(tc.__all__)
    missing = [name for name in tc.__all__ if not hasattr(tc, name)]
    assert missing == []
    for name in ("load", "Model", "train", "evaluate", "export_diffusers", "Preconditioned", "UserInputError"):
        assert name in tc.__all__


def test_the_version_has_one_source():
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "torch_consistency.__version__"}
    assert tc.__version__.count(".") == 2


def test_importing_the_package_does_not_import_diffusers_or_the_cli():
    code = (
        "import sys, torch_consistency; heavy = {'diffusers', 'fastapi', 'matplotlib'}; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy), 'torch_consistency.cli' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["[]", "False"]


def test_user_errors_of_the_api_are_one_exception_type(tmp_path):
    for subclass in (tc.ConfigError, tc.CheckpointError, tc.DataError):
        assert issubclass(subclass, tc.UserInputError)
    with pytest.raises(tc.UserInputError, match="no-run"):
        tc.load(tmp_path / "no-run")
