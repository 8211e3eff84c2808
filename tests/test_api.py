"""The public API of `import torch_consistency`: its names, its version and what importing it costs."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import torch_consistency as tc
from torch_consistency.checkpoint import save_checkpoint
from torch_consistency.configs import load_config
from torch_consistency.nets import build_model


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


@pytest.fixture(scope="module")
def vectors_run(tmp_path_factory):
    """An untrained checkpoint of a tiny MLP on eight 2-D Gaussians."""
    run = tmp_path_factory.mktemp("runs") / "ct"
    config = load_config(None, ["train.method=ct", "network.width=16", "network.depth=1"])
    model = build_model(config, "consistency", (2,), 0)
    ema = build_model(config, "consistency", (2,), 0)
    save_checkpoint(run, 1, config, (2,), 0, {"online": model, "ema-0.999": ema}, {}, keep=1)
    return run


BAD_WORKFLOWS = [
    (lambda run, out: tc.train("toy_ct", out, resume=True), "resume"),
    (lambda run, out: tc.train("no_such_config", out), "no_such_config"),
    (lambda run, out: tc.train("toy_ct", out, ["optim.lr=-1"]), "optim.lr"),
    (lambda run, out: tc.train("toy_ct", out, data_path=run), "data_path"),
    (lambda run, out: tc.evaluate(run, out, steps=[0]), "steps"),
    (lambda run, out: tc.evaluate(run, out, teacher_steps=[1]), "teacher_steps"),
    (lambda run, out: tc.evaluate(run, out, num=1), "num"),
    (lambda run, out: tc.evaluate(run, out, guidance=2.0), "guidance"),
    (lambda run, out: tc.evaluate(run, out, weights="ema-0.5"), "ema-0.5"),
    (lambda run, out: tc.evaluate(out, out), "does not exist"),
    (lambda run, out: tc.export_diffusers(run, out), "unet"),
]


@pytest.mark.parametrize(("call", "fragment"), BAD_WORKFLOWS, ids=[case[1] for case in BAD_WORKFLOWS])
def test_bad_arguments_to_the_workflows_raise_a_user_error_and_write_nothing(vectors_run, tmp_path, call, fragment):
    out = tmp_path / "out"
    before = sorted(vectors_run.rglob("*"))
    with pytest.raises(tc.UserInputError) as raised:
        call(vectors_run, out)
    message = str(raised.value)
    assert fragment in message and "\n" not in message, message
    assert not out.exists() and sorted(vectors_run.rglob("*")) == before
