"""Property-based fuzzing (Hypothesis) of the config layer, the command line and the file loaders.

The property everywhere: an input is either accepted (and then valid, or the run/sample/edit completes) or refused
with one line (ConfigError / DataError / CheckpointError from the API, exit code 2 and one stderr line from the
CLI), never a traceback. Examples are derandomized so that `make test` is reproducible and stays fast; sizes that
only cost memory (a width of 2^40) are outside the property and drawn small.
"""

import contextlib
import dataclasses
import datetime
import io
import itertools
import json
import math
import pickle
import shutil
import subprocess
import sys
import typing

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from helpers import untrained_checkpoint
from torch_consistency.cli import main
from torch_consistency.config import METHODS, Config
from torch_consistency.configs import load_config
from torch_consistency.data.images import load_cifar10, load_image_folder, load_mnist, load_npz
from torch_consistency.errors import ConfigError, DataError, UserInputError
from torch_consistency.image_files import read_image, read_mask

FUZZ = settings(
    max_examples=100, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip

SECTIONS = {field.name: field.type for field in dataclasses.fields(Config)}
HINTS = {
    f"{s}.{name}": kind for s, section in SECTIONS.items() for name, kind in typing.get_type_hints(section).items()
}
KEYS = list(HINTS)
# keys whose large values only cost time or memory: drawn from small values in the runs below
SIZE_KEYS = {"train.total_steps", "network.width", "network.depth", "network.embedding_dim", "optim.batch_size",
             "data.dim", "data.components", "data.resolution", "cd.num_points", "ct.s0", "ct.s1", "ict.s0",
             "ict.s1", "sampling.teacher_steps", "train.sample_every", "train.checkpoint_every"}  # fmt: skip


def one_line(error: Exception) -> bool:
    return "\n" not in str(error).strip() and bool(str(error).strip())


# ---- values as a user would type them: mostly of the key's own type, on the edges of ranges ---------------------

INTS = st.one_of(
    st.integers(-3, 20), st.sampled_from([0, 1, -1, 2, 2**31, 2**62, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30])
)
FLOATS = st.one_of(
    st.floats(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 0.5, 0.999, 1.0, 1.5, 2.0, 1e-300, 1e300, -1e300, math.nan, math.inf, -math.inf]),
)
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
NAMES = st.sampled_from(["cpu", "cuda", "gpu", "auto", "mps", "meta", "cuda:0", "unet", "mlp", "digits", "gmm",
                         "npz", "mnist", "heun", "euler", "lpips", "l1", "exact", "sct", "scd", "fp32", "bf16",
                         "teacher", "ct", "holdout", "fourier", "edm", "tiny", "", " "])  # fmt: skip
SCALARS = st.one_of(INTS, FLOATS, st.booleans(), TEXT, NAMES)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.datetimes().map(lambda d: d.replace(microsecond=0)))


def typed(key: str) -> st.SearchStrategy:
    """Values of the type of config key `key`, or (less often) of any type."""
    kind = HINTS[key]
    own = {bool: st.booleans(), int: INTS, float: st.one_of(FLOATS, INTS), str: st.one_of(NAMES, TEXT)}.get(
        kind, st.lists(FLOATS, max_size=4)
    )
    return st.sampled_from([own] * 9 + [VALUES]).flatmap(lambda values: values)


PAIRS = st.sampled_from(KEYS).flatmap(lambda key: typed(key).map(lambda value: (key, value)))


def toml_value(value) -> str:
    """`value` written as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        escaped = "".join(f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F or c in '"\\' else c for c in value)
        return f'"{escaped}"'
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return "[" + ", ".join(toml_value(v) for v in value) + "]"


def small(key: str, value):
    """Keep size keys small (they are validated for range, not for memory)."""
    if key in SIZE_KEYS and isinstance(value, int) and not isinstance(value, bool) and value > 16:
        return value % 17
    return value


SETTINGS = PAIRS.map(lambda pair: f"{pair[0]}={toml_value(small(*pair))}")


# ---- the config layer ----------------------------------------------------------------------------------------

JUNK = st.tuples(st.sampled_from(["model", "Train", "train", "optim", "data"]), st.sampled_from(["nesterov", ""]),
                 VALUES)  # fmt: skip


def toml_document(pairs, junk, scalar_section: bool) -> str:
    """A TOML file setting `pairs` (config keys) and `junk` (unknown sections or keys)."""
    tables: dict[str, dict] = {}
    for key, value in pairs:
        section, name = key.split(".")
        tables.setdefault(section, {})[name] = value
    for section, name, value in junk:
        tables.setdefault(section, {})[name] = value
    lines = ["sampling = 3"] if scalar_section else []  # a section given as a number
    for section, table in tables.items():
        lines += [f"[{section}]", *(f"{toml_value(name)} = {toml_value(value)}" for name, value in table.items())]
    return "\n".join(lines) + "\n"


# What an accepted config must satisfy, written out here rather than taken from config.RANGES.
INVARIANTS = {
    "optim.beta1": lambda v: 0 <= v < 1,
    "optim.beta2": lambda v: 0 <= v < 1,
    "optim.lr": lambda v: 0 < v < math.inf,
    "optim.weight_decay": lambda v: 0 <= v < math.inf,
    "optim.batch_size": lambda v: v >= 1,
    "train.seed": lambda v: 0 <= v < 2**63,
    "train.total_steps": lambda v: v >= 1,
    "network.width": lambda v: v >= 1,
    "network.depth": lambda v: v >= 0,
    "network.embedding_dim": lambda v: v >= 2 and v % 2 == 0,
    "network.dropout": lambda v: 0 <= v < 1,
    "data.components": lambda v: v >= 1,
    "data.dim": lambda v: v >= 1,
    "data.component_std": lambda v: 0 < v < math.inf,
    "diffusion.sigma_min": lambda v: 0 < v < math.inf,
    "cd.num_points": lambda v: v >= 2,
    "sampling.teacher_steps": lambda v: v >= 2,
    "train.device": lambda v: v == "auto" or v in ("cpu", "cuda", "mps") or v.startswith("cuda:"),
}


@settings(FUZZ, max_examples=300)
@given(pairs=st.lists(PAIRS, max_size=3), junk=st.lists(JUNK, max_size=1), scalar_section=st.booleans())
def test_random_toml_files_are_accepted_and_valid_or_refused_in_one_line(pairs, junk, scalar_section, tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(toml_document(pairs, junk, scalar_section and not pairs))
    try:
        config = load_config(path)
    except ConfigError as error:
        assert one_line(error), str(error)
        return
    assert Config.from_dict(json.loads(json.dumps(config.to_dict()))) == config  # survives a checkpoint
    for key, holds in INVARIANTS.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        assert holds(value), (key, value)


@settings(FUZZ, max_examples=300)
@given(overrides=st.lists(st.one_of(SETTINGS, SETTINGS, TEXT), min_size=1, max_size=3))
def test_random_set_strings_through_the_api(overrides):
    try:
        config = load_config(None, overrides)
    except ConfigError as error:
        assert one_line(error), str(error)
        return
    for key, holds in INVARIANTS.items():
        section, name = key.split(".")
        assert holds(getattr(getattr(config, section), name)), key


# ---- cm train with random --set strings: accepted runs really train ---------------------------------------------

BASE = ["network.width=8", "network.depth=1", "network.embedding_dim=8", "optim.batch_size=8",
        "train.total_steps=2", "train.checkpoint_every=2", "data.name=gmm", "data.dim=2", "data.components=2",
        "cd.teacher=exact", "scm.teacher=exact", "scm.mode=scd", "network.preset=tiny"]  # fmt: skip


def run_in_process(argv):
    """(exit code, stdout, stderr) of `cm ARGV` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit:
            code = exit.code
    return code, out.getvalue(), err.getvalue()


def assert_outcome(code, err, out_dir):
    """Exit 0, or exit 2 with one stderr line and nothing written."""
    assert code in (0, 2), (code, err)
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert not out_dir.exists(), sorted(out_dir.rglob("*"))


@settings(FUZZ, max_examples=50)
@given(method=st.sampled_from(METHODS), extra=st.lists(SETTINGS, min_size=1, max_size=2))
def test_cm_train_with_random_settings_trains_or_refuses_in_one_line(method, extra, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "run"
    extra = [setting for setting in extra if not setting.startswith("train.method=")]
    code, _, err = run_in_process(["train", method, "--out", out, "--no-progress",
                                   *itertools.chain.from_iterable(("--set", s) for s in [*BASE, *extra])])  # fmt: skip
    assert_outcome(code, err, out)
    if code == 0:
        assert (out / "checkpoints").is_dir()


# ---- cm sample / eval / edit with random options -----------------------------------------------------------------

COUNT = st.one_of(st.integers(-2, 12), st.sampled_from([0, 1, 2])).map(str)  # no 10^9 steps: they only cost time
COUNTS = st.lists(st.integers(-2, 12), min_size=0, max_size=3).map(lambda v: ",".join(map(str, v)))
NUMBER = FLOATS.map(repr)  # repr gives nan and inf as a user types them
NUMBER_LISTS = st.lists(FLOATS, min_size=0, max_size=3).map(lambda v: ",".join(map(repr, v)))
OPTION_TYPES = {
    "--steps": st.one_of(COUNT, COUNTS), "--teacher-steps": st.one_of(COUNT, COUNTS), "--num": COUNT,
    "--grid-points": COUNT, "--batch-size": COUNT, "--factor": COUNT, "--label": COUNT,
    "--ts": COUNTS, "--timesteps": COUNTS, "--sigmas": st.one_of(NUMBER_LISTS, st.just("80,0.5")),
    "--alphas": NUMBER_LISTS, "--sigma": NUMBER, "--seed": INTS.map(str), "--seed2": INTS.map(str),
    "--weights": st.sampled_from(["online", "ema-0.999", "target", "ema-0.5"]),
    "--device": st.sampled_from(["cpu", "auto", "gpu", "cuda:9", "meta", "mps", "cpu:1"]),
    "--solver": st.sampled_from(["heun", "euler", "dpmpp-2m", "rk4"]),
    "--features": st.sampled_from(["classifier", "inception", "clip"]),
    "--inception-weights": st.sampled_from(["grey.png", "missing.pth", "."]),
    "--reference-stats": st.sampled_from(["grey.png", "missing.npz", "."]),
}  # fmt: skip
OPTIONS = {
    "sample": ["--steps", "--sigmas", "--ts", "--timesteps", "--grid-points", "--teacher-steps", "--num", "--seed",
               "--weights", "--device", "--solver"],
    "eval": ["--steps", "--teacher-steps", "--num", "--seed", "--weights", "--device", "--features",
             "--inception-weights", "--reference-stats"],
    "edit": ["--steps", "--sigmas", "--sigma", "--alphas", "--seed", "--seed2", "--num", "--label", "--batch-size",
             "--teacher-steps", "--factor", "--weights"],
}  # fmt: skip
OPTION_TEXT = st.one_of(TEXT, st.sampled_from(["", ",", "1,", "1e309", "abc", "-inf", "nan"]))


def option(name: str) -> st.SearchStrategy:
    """(name, value): mostly a value of the option's kind, sometimes any text."""
    values = st.sampled_from([OPTION_TYPES[name]] * 4 + [OPTION_TEXT]).flatmap(lambda strategy: strategy)
    return values.map(lambda value: (name, value))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-checkpoints")
    Image.fromarray(np.full((8, 8), 90, np.uint8)).save(root / "grey.png")
    return {
        "root": root,
        "ct": untrained_checkpoint(root / "ct", (2,), "train.method=ct"),
        "teacher": untrained_checkpoint(root / "teacher", (2,), "train.method=teacher"),
        "digits": untrained_checkpoint(root / "digits", (1, 8, 8), "train.method=ct", "data.name=digits"),
    }


@settings(FUZZ, max_examples=40)
@given(data=st.data())
def test_cm_sample_eval_edit_with_random_options_run_or_refuse_in_one_line(data, checkpoints, tmp_path_factory):
    command = data.draw(st.sampled_from(list(OPTIONS)))
    options = data.draw(st.lists(st.sampled_from(OPTIONS[command]).flatmap(option), max_size=3))
    options = [(name, str(checkpoints["root"] / value) if name.endswith(("weights", "stats")) and value.endswith(
        ("png", "pth", "npz")) else value) for name, value in options]  # fmt: skip
    out = tmp_path_factory.mktemp(command) / "out"
    if command == "edit":
        task = data.draw(st.sampled_from(["denoise", "stroke", "interpolate", "super-resolve"]))
        argv = ["edit", task, "--checkpoint", checkpoints["digits"], "--input", checkpoints["root"] / "grey.png",
                "--input2", checkpoints["root"] / "grey.png"][: 6 if task != "interpolate" else 8]  # fmt: skip
    else:
        argv = [command, "--checkpoint", checkpoints[data.draw(st.sampled_from(["ct", "teacher"]))]]
        if not any(name == "--num" for name, _ in options):
            argv += ["--num", "16"]
    argv += [*itertools.chain.from_iterable(options), "--out", out]
    code, _, err = run_in_process(argv)
    assert_outcome(code, err, out)


def test_a_few_random_settings_through_real_subprocesses(tmp_path):
    """The in-process runs above stand for the real command line; a few of the same kinds confirm it."""
    cases = [
        ["--set", "optim.beta1=1.5"],
        ["--set", "data.components=0", "--set", "data.name=gmm"],
        ["--set", "sampling.sigmas_2=[1, nan]"],
    ]
    for k, case in enumerate(cases):
        out = tmp_path / f"run-{k}"
        result = subprocess.run([sys.executable, "-m", "torch_consistency", "train", "ct", "--out", str(out), *case],
                                capture_output=True, text=True, timeout=300)  # fmt: skip
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr and not out.exists()


# ---- loaders fed random and mutated bytes ------------------------------------------------------------------------


def mutated(valid: bytes):
    """Random bytes, or `valid` cut short and with a few bytes changed."""
    edits = st.lists(st.tuples(st.integers(0, max(len(valid) - 1, 0)), st.integers(0, 255)), max_size=4)
    cut = st.integers(0, len(valid))

    def apply(args):
        length, changes = args
        data = bytearray(valid[:length])
        for index, value in changes:
            if index < len(data):
                data[index] = value
        return bytes(data)

    return st.one_of(st.binary(max_size=200), st.tuples(cut, edits).map(apply))


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


PNG = png_bytes(np.arange(64).reshape(8, 8) * 4)
MASK = png_bytes((np.arange(64).reshape(8, 8) % 2) * 255)
NPZ = npz_bytes(images=np.zeros((2, 8, 8), np.uint8), labels=np.array([0, 1]))
IDX = bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2]) + bytes(range(8))
CIFAR = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, protocol=2)


def refused_or_loaded(load, expect):
    """Either `load()` returns something `expect` accepts, or it raises a one-line DataError."""
    try:
        value = load()
    except DataError as error:
        assert one_line(error), str(error)
        return
    assert expect(value)


@FUZZ
@given(data=mutated(PNG))
def test_cm_edit_images_from_random_bytes(data, tmp_path):
    (tmp_path / "x.png").write_bytes(data)
    refused_or_loaded(lambda: read_image(tmp_path / "x.png", 1, (8, 8), "input"), lambda x: x.shape == (1, 8, 8))


@FUZZ
@given(data=mutated(MASK))
def test_cm_edit_masks_from_random_bytes(data, tmp_path):
    (tmp_path / "m.png").write_bytes(data)
    refused_or_loaded(lambda: read_mask(tmp_path / "m.png", (8, 8), "mask"), lambda m: m.shape == (8, 8))


@FUZZ
@given(data=mutated(PNG))
def test_image_folders_with_random_bytes(data, tmp_path):
    folder = tmp_path / "images"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "x.png").write_bytes(data)
    refused_or_loaded(lambda: load_image_folder(folder, channels=1), lambda d: d.images.dtype == torch.uint8)


@FUZZ
@given(data=mutated(NPZ))
def test_npz_files_with_random_bytes(data, tmp_path):
    (tmp_path / "x.npz").write_bytes(data)
    refused_or_loaded(lambda: load_npz(tmp_path / "x.npz"), lambda d: d.images.dtype == torch.uint8)


@FUZZ
@given(data=mutated(IDX), gz=st.booleans())
def test_idx_files_with_random_bytes(data, gz, tmp_path):
    import gzip

    path = tmp_path / ("train-images-idx3-ubyte.gz" if gz else "train-images-idx3-ubyte")
    path.write_bytes(gzip.compress(data) if gz and len(data) % 2 else data)  # half of the .gz files are not gzip
    refused_or_loaded(lambda: load_mnist(path), lambda d: d.images.ndim == 4)


@FUZZ
@given(data=mutated(CIFAR))
def test_cifar10_batches_with_random_bytes(data, tmp_path):
    for i in range(1, 6):
        (tmp_path / f"data_batch_{i}").write_bytes(data)
    refused_or_loaded(lambda: load_cifar10(tmp_path), lambda d: d.sample_shape == (3, 32, 32))


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), TEXT),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(TEXT, children, max_size=3)),
    max_leaves=6,
)


@FUZZ
@given(key=st.sampled_from(["format", "version", "step", "config", "sample_shape", "num_classes", "weights",
                            "extra"]), value=JSON_VALUES)  # fmt: skip
def test_meta_json_with_random_values_loads_or_is_refused_in_one_line(key, value, checkpoints, tmp_path):
    from torch_consistency.checkpoint import load_checkpoint

    folder = tmp_path / "checkpoint"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(checkpoints["ct"] / "checkpoints" / "step-00000001", folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta[key] = value
    (folder / "meta.json").write_text(json.dumps(meta))
    try:
        checkpoint = load_checkpoint(folder)
        checkpoint.build_model()
    except UserInputError as error:
        assert one_line(error), str(error)


def test_every_numeric_config_key_has_a_declared_range():
    """A new numeric config key cannot be forgotten by validate(): it needs an entry in config.RANGES."""
    from torch_consistency.config import RANGES

    numeric = {key for key, kind in HINTS.items() if kind in (int, float, list[float])}
    assert numeric == set(RANGES)
