"""Every mistake a user can make ends in one line on stderr and exit code 2, before anything is written or lost.

The cases of issue 12 and more of the same kinds, across cm train, sample, eval, edit, export and resume. Most go
through the CLI in-process (`cli.main`, the same code as `cm` without the interpreter start-up); a few through
real `python -m torch_consistency` subprocesses. Each checks that no file under the test's folders changed.
"""

import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from helpers import TINY, tiny_config, untrained_checkpoint
from torch_consistency.cli import main
from torch_consistency.training.loop import train


def snapshot(*roots):
    """Every file and folder under `roots` with its size and modification time."""
    state = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                path = os.path.join(folder, name)
                info = os.stat(path)
                state[path] = (info.st_size, info.st_mtime_ns)
    return state


def sets(*overrides):
    return [item for override in overrides for item in ("--set", override)]


def write_png(path, pixels):
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Runs, checkpoints and data files the cases point at; none of them may change."""
    root = tmp_path_factory.mktemp("world")
    runs = {
        "ct": untrained_checkpoint(root / "ct", (2,), "train.method=ct"),
        "teacher": untrained_checkpoint(root / "teacher", (2,), "train.method=teacher"),
        "digits": untrained_checkpoint(
            root / "digits", (1, 8, 8), "train.method=ct", "data.name=digits", "data.holdout_fraction=0.2"
        ),
    }
    (root / "a_file").write_text("not a folder\n")
    write_png(root / "grey.png", np.full((8, 8), 100))
    (root / "mnist").mkdir()
    (root / "mnist" / "train-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3, 0, 0, 0]))  # header cut
    np.savez(root / "strings.npz", images=np.array(["a", "b"]))
    np.savez(root / "string-labels.npz", images=np.zeros((2, 8, 8), np.uint8), labels=np.array(["3", "4"]))
    np.savez(root / "float-labels.npz", images=np.zeros((2, 8, 8), np.uint8), labels=np.array([0.5, 1.0]))
    np.savez(root / "nan-images.npz", images=np.full((2, 8, 8), np.nan))
    np.savez(root / "odd-u-net.npz", images=np.zeros((4, 7, 7), np.uint8))
    (root / "cifar").mkdir()
    for i in range(1, 6):
        (root / "cifar" / f"data_batch_{i}").write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    np.savez(root / "stats-7d.npz", mu=np.zeros(7), sigma=np.eye(7))
    for name, change in META_CHANGES.items():
        folder = root / "meta" / name
        shutil.copytree(runs["ct"] / "checkpoints" / "step-00000001", folder)
        meta = json.loads((folder / "meta.json").read_text())
        change(meta)
        (folder / "meta.json").write_text(json.dumps(meta))
    for name, depth in (("mixed", 1), ("other", 2)):  # real runs; "mixed" gets the optimizer state of "other"
        train(
            tiny_config("train.method=ct", "train.total_steps=2", f"network.depth={depth}"), root / name, progress=False
        )
    state = "checkpoints/step-00000002/training_state.pt"
    shutil.copy(root / "other" / state, root / "mixed" / state)
    run = root / "partial"  # a run folder holding only a config: a new run may not reuse it
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"train": {"method": "teacher"}}))
    return {"root": root, **runs}


META_CHANGES = {
    "no-weights": lambda meta: meta.pop("weights"),
    "no-step": lambda meta: meta.pop("step"),
    "text-step": lambda meta: meta.update(step="10"),
    "negative-classes": lambda meta: meta.update(num_classes=-1),
    "empty-shape": lambda meta: meta.update(sample_shape=[]),
    "config-list": lambda meta: meta.update(config=[1]),
    "future-version": lambda meta: meta.update(version=2),
    "text-version": lambda meta: meta.update(version="1"),
}

TRAIN = ["train", "teacher", "--out", "{tmp}/run", "--no-progress", *sets(*TINY)]
SAMPLE = ["sample", "--checkpoint", "{ct}", "--num", "4", "--out", "{tmp}/out"]
EVAL = ["eval", "--checkpoint", "{digits}", "--num", "20", "--cache", "{tmp}/cache", "--out", "{tmp}/out"]
EDIT = ["edit", "denoise", "--checkpoint", "{digits}", "--input", "{root}/grey.png", "--sigma", "0.5"]

# id: (argv with {placeholders}, a fragment of the one error line)
CASES = {
    # devices
    "train.device unknown": ([*TRAIN, *sets("train.device=gpu")], "train.device = 'gpu' is not a device"),
    "train.device absent": ([*TRAIN, *sets("train.device=cuda:99")], "CUDA device"),
    "--device unknown": ([*SAMPLE, "--device", "gpu"], "--device = 'gpu' is not a device"),
    "--device absent": ([*SAMPLE, "--device", "cuda:99"], "CUDA device"),
    "--device meta": ([*SAMPLE, "--device", "meta"], "not a device"),
    # numeric ranges of the config
    "optim.beta1 = 2": ([*TRAIN, *sets("optim.beta1=2")], "optim.beta1 must lie in [0, 1), got 2"),
    "optim.beta2 = 1": ([*TRAIN, *sets("optim.beta2=1")], "optim.beta2 must lie in [0, 1)"),
    "optim.weight_decay < 0": ([*TRAIN, *sets("optim.weight_decay=-0.1")], "optim.weight_decay"),
    "optim.lr = 0": ([*TRAIN, *sets("optim.lr=0")], "optim.lr must lie in (0, inf)"),
    "optim.lr = nan": ([*TRAIN, *sets("optim.lr=nan")], "optim.lr must be a number"),
    "negative seed": ([*TRAIN, *sets("train.seed=-1")], "train.seed must lie in [0, inf)"),
    "seed beyond 64 bits": ([*TRAIN, *sets("train.seed=99999999999999999999")], "64-bit"),
    "network.width = 0": ([*TRAIN, *sets("network.width=0")], "network.width must lie in [1, inf)"),
    "network.depth = -1": ([*TRAIN, *sets("network.depth=-1")], "network.depth"),
    "network.embedding_dim = 0": ([*TRAIN, *sets("network.embedding_dim=0")], "network.embedding_dim"),
    "network.embedding_dim odd": ([*TRAIN, *sets("network.embedding_dim=15")], "must be even"),
    "network.fourier_scale = 0": ([*TRAIN, *sets("network.fourier_scale=0")], "network.fourier_scale"),
    "sampling.teacher_steps = 1": ([*TRAIN, *sets("sampling.teacher_steps=1")], "sampling.teacher_steps"),
    "train.ema_rates repeated": ([*TRAIN, *sets("train.ema_rates=[0.9, 0.9]")], "twice"),
    "train.sample_every < 0": ([*TRAIN, *sets("train.sample_every=-1")], "train.sample_every"),
    "ect.stage_steps = 0": ([*TRAIN, *sets("ect.stage_steps=0")], "ect.stage_steps"),
    "diffusion.rho = 0.001": ([*TRAIN, *sets("diffusion.rho=0.001")], "σ^(1/ρ) over- or underflows"),
    "iCT's lognormal off the grid": (
        ["train", "ict", "--out", "{tmp}/run", *sets(*TINY, "ict.p_mean=10", "ict.p_std=0.1")],
        "put no probability on the noise levels",
    ),
    "sampling.sigmas_2 below sigma_min": ([*TRAIN, *sets("sampling.sigmas_2=[1, 0.001]")], "sampling.sigmas_2"),
    "LPIPS on 2-D data": (
        [*TRAIN, *sets("cd.distance=lpips", "cd.lpips_weights={root}/a_file")],
        "cd.distance = 'lpips' needs images",
    ),
    # settings that conflict with each other or with the data
    "U-Net on 2-D data": ([*TRAIN, *sets("network.kind=unet")], "needs image data"),
    "U-Net on 7×7 images": (
        [*TRAIN, *sets("network.kind=unet", "network.preset=tiny", "data.name=npz", "data.path={root}/odd-u-net.npz")],
        "divisible by 2",
    ),
    "gmm with 0 components": ([*TRAIN, *sets("data.name=gmm", "data.components=0")], "data.components"),
    "gmm with 0 dimensions": ([*TRAIN, *sets("data.name=gmm", "data.dim=0")], "data.dim"),
    "hflip on 2-D data": ([*TRAIN, *sets("data.hflip=true")], "data.hflip applies to image data"),
    "holdout split of nothing": ([*TRAIN, *sets("data.name=digits", "data.split=holdout")], "holdout_fraction > 0"),
    "--set train.method": ([*TRAIN, *sets("train.method=ct")], "train.method is the METHOD argument"),
    "NUL in a path": ([*TRAIN, *sets('data.path="a\\u0000b"')], "NUL"),
    # missing packages
    "tensorboard missing": ([*TRAIN, *sets("train.tensorboard=true")], "needs the tensorboard package"),
    # data files
    "IDX header cut": ([*TRAIN, *sets("data.name=mnist", "data.path={root}/mnist")], "header is cut"),
    "npz of strings": ([*TRAIN, *sets("data.name=npz", "data.path={root}/strings.npz")], "uint8 or floats"),
    "npz with string labels": (
        [*TRAIN, *sets("data.name=npz", "data.path={root}/string-labels.npz")],
        "labels must be 2 integers",
    ),
    "npz with float labels": (
        [*TRAIN, *sets("data.name=npz", "data.path={root}/float-labels.npz")],
        "labels must be 2 integers",
    ),
    "npz of NaN images": ([*TRAIN, *sets("data.name=npz", "data.path={root}/nan-images.npz")], "NaN"),
    "CIFAR batch not a dict": ([*TRAIN, *sets("data.name=cifar10", "data.path={root}/cifar")], "not a dict"),
    "data path missing": ([*TRAIN, *sets("data.name=mnist")], "data.path must name"),
    # run folders
    "--out is a file": (["train", "teacher", "--out", "{root}/a_file", *sets(*TINY)], "is a file"),
    "--out under a file": (["train", "teacher", "--out", "{root}/a_file/run", *sets(*TINY)], "is a file"),
    "--out holds a run's config": (["train", "teacher", "--out", "{root}/partial"], "already holds a run"),
    "resume a folder that is no run": (["train", "--resume", "{root}/mnist"], "not a run to resume"),
    "resume with another run's optimizer state": (["train", "--resume", "{root}/mixed"], "does not fit this run's"),
    "--data-path without --resume": ([*TRAIN, "--data-path", "{root}"], "--data-path goes with --resume"),
    "--data-path for 2-D data": (["train", "--resume", "{ct}", "--data-path", "{root}"], "applies to mnist"),
    # meta.json
    "meta.json without weights": (["sample", "--checkpoint", "{root}/meta/no-weights", "--out", "{tmp}/o"], "weights"),
    "meta.json without step": (["sample", "--checkpoint", "{root}/meta/no-step", "--out", "{tmp}/o"], "step"),
    "meta.json step as text": (["sample", "--checkpoint", "{root}/meta/text-step", "--out", "{tmp}/o"], "step"),
    "meta.json negative classes": (
        ["sample", "--checkpoint", "{root}/meta/negative-classes", "--out", "{tmp}/o"],
        "num_classes",
    ),
    "meta.json empty shape": (["sample", "--checkpoint", "{root}/meta/empty-shape", "--out", "{tmp}/o"], "shape"),
    "meta.json config a list": (["sample", "--checkpoint", "{root}/meta/config-list", "--out", "{tmp}/o"], "config"),
    "meta.json future version": (
        ["sample", "--checkpoint", "{root}/meta/future-version", "--out", "{tmp}/o"],
        "newer torch-consistency",
    ),
    "meta.json version as text": (
        ["sample", "--checkpoint", "{root}/meta/text-version", "--out", "{tmp}/o"],
        "format version",
    ),
    # cm sample
    "--steps 0": ([*SAMPLE, "--steps", "0"], "--steps: must be at least 1, got 0"),
    "--steps -2": ([*SAMPLE, "--steps", "-2"], "--steps: must be at least 1"),
    "--num 0": ([*SAMPLE, "--num", "0"], "--num: must be at least 1"),
    "--seed -1": ([*SAMPLE, "--seed", "-1"], "--seed: must be at least 0"),
    "--sigmas nan": ([*SAMPLE, "--sigmas", "nan"], "finite numbers"),
    "--sigmas inf": ([*SAMPLE, "--sigmas", "inf,1"], "finite numbers"),
    "--sigmas empty": ([*SAMPLE, "--sigmas", ","], "finite numbers"),
    "--sigmas below sigma_min": ([*SAMPLE, "--sigmas", "80,0.001"], "at least σ_min"),
    "--sigmas increasing": ([*SAMPLE, "--sigmas", "1,80"], "strictly decreasing"),
    "--ts out of the grid": ([*SAMPLE, "--ts", "0,30"], "steps-1"),
    "--grid-points 0": ([*SAMPLE, "--ts", "0,9", "--grid-points", "0"], "--grid-points: must be at least 2"),
    "--grid-points without --ts": ([*SAMPLE, "--grid-points", "10"], "--grid-points applies only"),
    "--teacher-steps 1": (
        ["sample", "--checkpoint", "{teacher}", "--teacher-steps", "1", "--out", "{tmp}/o"],
        "--teacher-steps: must be at least 2, got 1",
    ),
    "--teacher-steps 0": (
        ["sample", "--checkpoint", "{teacher}", "--teacher-steps", "0", "--out", "{tmp}/o"],
        "--teacher-steps: must be at least 2, got 0",
    ),
    "--teacher-steps on a consistency model": ([*SAMPLE, "--teacher-steps", "5"], "--teacher-steps does not apply"),
    "--steps on a teacher": (
        ["sample", "--checkpoint", "{teacher}", "--steps", "2", "--out", "{tmp}/o"],
        "--steps does not apply",
    ),
    "--weights unknown": ([*SAMPLE, "--weights", "ema-0.5"], "no weights 'ema-0.5'"),
    "sample --out is a file": (["sample", "--checkpoint", "{ct}", "--out", "{root}/a_file"], "is a file"),
    # cm eval
    "eval --steps 0": ([*EVAL, "--steps", "1,0"], "--steps: each must be at least 1"),
    "eval --steps empty": ([*EVAL, "--steps", ","], "at least one integer"),
    "eval --teacher-steps 1": ([*EVAL, "--teacher-steps", "1"], "--teacher-steps: each must be at least 2"),
    "eval --num 1": ([*EVAL, "--num", "1"], "--num: must be at least 2"),
    "eval --num 3 on images": ([*EVAL, "--num", "3"], "--num must be at least 4 for images"),
    "eval --reference-stats of another dimension": (
        [*EVAL, "--reference-stats", "{root}/stats-7d.npz"],
        "7-d statistics; --features classifier gives 128-d",
    ),
    "eval --inception-weights without --features inception": (
        [*EVAL, "--inception-weights", "{root}/a_file"],
        "go with --features inception",
    ),
    "eval inception features on 2-D data": (
        ["eval", "--checkpoint", "{ct}", "--features", "inception", "--out", "{tmp}/out"],
        "applies to image checkpoints",
    ),
    "eval --search-sigmas on a teacher": (
        ["eval", "--checkpoint", "{teacher}", "--search-sigmas", "--out", "{tmp}/out"],
        "--search-sigmas applies to consistency models",
    ),
    "eval --cache is a file": ([*EVAL[:-4], "--cache", "{root}/a_file", "--out", "{tmp}/out"], "--cache"),
    "eval --out is a file": ([*EVAL[:-2], "--out", "{root}/a_file"], "is a file"),
    # cm edit
    "edit --label on an unconditional model": ([*EDIT, "--label", "3", "--out", "{tmp}/o"], "is unconditional"),
    "edit --out is the input folder": ([*EDIT, "--out", "{root}"], "would overwrite"),
    "edit --out is a file": ([*EDIT, "--out", "{root}/a_file"], "is a file"),
    "edit --sigma nan": (
        [
            "edit",
            "denoise",
            "--checkpoint",
            "{digits}",
            "--input",
            "{root}/grey.png",
            "--sigma",
            "nan",
            "--out",
            "{tmp}/o",
        ],
        "finite",
    ),
    "edit --alphas nan": (
        ["edit", "interpolate", "--checkpoint", "{digits}", "--seed2", "1", "--alphas", "0,nan", "--out", "{tmp}/o"],
        "finite numbers",
    ),
    "edit --teacher-steps 1": ([*EDIT, "--teacher-steps", "1", "--out", "{tmp}/o"], "at least 2"),
    "edit --seed2 -1": (
        ["edit", "interpolate", "--checkpoint", "{digits}", "--seed2", "-1", "--out", "{tmp}/o"],
        "at least 0",
    ),
    # cm export
    "export OUT under a file": (["export", "--checkpoint", "{digits}", "{root}/a_file/x"], "is a file"),
    "export --weights unknown": (["export", "--checkpoint", "{digits}", "--weights", "x", "{tmp}/x"], "no weights"),
}


def argv(template, world, tmp_path):
    names = {k: v for k, v in world.items()}
    return [part.format(tmp=tmp_path, **names) for part in template]


def skip_where_tensorboard_is_installed(case):
    if case == "tensorboard missing":
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError:
            return
        pytest.skip("tensorboard is installed here")


def assert_refused(code, stderr, fragment):
    lines = stderr.strip().splitlines()
    assert code == 2, (code, stderr)
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("case", CASES)
def test_each_mistake_ends_in_one_line_and_changes_nothing(case, world, tmp_path, capsys):
    skip_where_tensorboard_is_installed(case)
    template, fragment = CASES[case]
    before = snapshot(world["root"], tmp_path)
    try:
        code = main(argv(template, world, tmp_path))
    except SystemExit as exit:  # argparse's errors
        code = exit.code
    assert_refused(code, capsys.readouterr().err, fragment)
    assert snapshot(world["root"], tmp_path) == before


SUBPROCESS_CASES = [
    "train.device unknown",
    "tensorboard missing",
    "--sigmas nan",
    "meta.json future version",
    "eval --reference-stats of another dimension",
    "edit --label on an unconditional model",
]


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_the_same_from_a_real_command_line(case, world, tmp_path):
    skip_where_tensorboard_is_installed(case)
    template, fragment = CASES[case]
    before = snapshot(world["root"], tmp_path)
    command = [sys.executable, "-m", "torch_consistency", *argv(template, world, tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert_refused(result.returncode, result.stderr, fragment)
    assert snapshot(world["root"], tmp_path) == before


def test_resume_reads_past_a_damaged_log(tmp_path, capsys):
    """A log.jsonl with bytes that are not text (a damaged disk block) loses those lines on resume, not the run."""
    run = tmp_path / "run"
    train(tiny_config("train.method=ct", "train.total_steps=4", "train.checkpoint_every=2"), run, progress=False)
    lines = (run / "log.jsonl").read_bytes().splitlines(keepends=True)
    (run / "log.jsonl").write_bytes(b"".join(lines[:3]) + b"\xff\xfe garbage\n")
    shutil.rmtree(run / "checkpoints" / "step-00000004")
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0, capsys.readouterr().err
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_device_auto_means_this_machines_device(world, tmp_path, capsys):
    """Found by the fuzzer: --device auto passed validation, then torch.device("auto") raised."""
    assert main(["sample", "--checkpoint", str(world["ct"]), "--device", "auto", "--num", "4", "--out",
                 str(tmp_path / "o")]) == 0, capsys.readouterr().err  # fmt: skip
    assert (tmp_path / "o" / "samples.npz").is_file()
