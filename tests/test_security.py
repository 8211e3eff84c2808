"""Nothing a user receives runs code (docs/security.md).

Every loader is fed a payload that touches a marker file when it is executed: pickles whose __reduce__ calls
os.system, NumPy object arrays, torch.save'd objects, a diffusers .bin, an EPS picture (PIL runs Ghostscript on
it) and TorchScript. Each is refused in one line (exit code 2 on the command line) and the marker never appears.
`test_the_payloads_are_live` shows that each payload does run where it is read the ordinary way.
"""

import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from helpers import TINY, untrained_checkpoint
from torch_consistency.cli import main
from torch_consistency.data.images import load_cifar10


class Payload:
    """Unpickled, it runs `touch MARKER`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n%%EOF\n"


def fake_ghostscript(folder, marker):
    """A `gs` program that touches the marker: PIL runs `gs` to decode EPS pictures."""
    folder.mkdir(exist_ok=True)
    (folder / "gs").write_text(f"#!/bin/sh\ntouch {marker}\n")
    (folder / "gs").chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def sets(*overrides):
    return [item for override in overrides for item in ("--set", override)]


def run_cli(capsys, *args):
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit:
        code = exit.code
    return code, capsys.readouterr().err


def test_the_payloads_are_live(tmp_path):
    """Read the ordinary way, each payload touches its marker: the refusals below are not vacuous."""
    markers = [tmp_path / f"marker-{i}" for i in range(4)]
    pickle.loads(pickle.dumps(Payload(markers[0]), protocol=2))
    np.save(tmp_path / "object.npy", np.array([Payload(markers[1])], dtype=object), allow_pickle=True)
    np.load(tmp_path / "object.npy", allow_pickle=True)
    torch.save(Payload(markers[2]), tmp_path / "state.pt")
    torch.load(tmp_path / "state.pt", weights_only=False)
    (tmp_path / "picture.png").write_bytes(EPS)
    env = {**os.environ, "PATH": fake_ghostscript(tmp_path / "bin", markers[3])}
    code = (
        f"from PIL import Image\ntry:\n    Image.open({str(tmp_path / 'picture.png')!r}).load()\nexcept Exception: pass"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    assert all(marker.exists() for marker in markers)


def payload_files(root, marker):
    """Every kind of file a loader reads, each carrying a payload."""
    root.mkdir(parents=True, exist_ok=True)
    pickled = pickle.dumps(Payload(marker), protocol=2)
    (root / "cifar").mkdir()
    for i in range(1, 6):
        (root / "cifar" / f"data_batch_{i}").write_bytes(pickled)
    (root / "cifar-nested").mkdir()
    nested = pickle.dumps({b"data": Payload(marker), b"labels": [0]}, protocol=4)
    for i in range(1, 6):
        (root / "cifar-nested" / f"data_batch_{i}").write_bytes(nested)
    (root / "mnist").mkdir()
    (root / "mnist" / "train-images-idx3-ubyte").write_bytes(pickled)
    (root / "pictures").mkdir()
    (root / "pictures" / "pickle.png").write_bytes(pickled)
    (root / "pictures" / "eps.png").write_bytes(EPS)
    (root / "eps.png").write_bytes(EPS)
    np.savez(root / "objects.npz", images=np.array([Payload(marker)], dtype=object))
    torch.save(Payload(marker), root / "state.pt")
    np.savez(root / "stats.npz", mu=np.array([Payload(marker)], dtype=object), sigma=np.eye(1))
    return root


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("payloads")
    marker = root / "MARKER"
    payload_files(root / "files", marker)
    digits = untrained_checkpoint(root / "digits", (1, 8, 8), "train.method=ct", "data.name=digits")
    untrained_checkpoint(root / "digits-teacher", (1, 8, 8), "train.method=teacher", "data.name=digits")
    for name in ("meta.json", "weights.safetensors", "training_state.pt"):
        folder = root / f"bad-{name}"
        shutil.copytree(digits, folder)
        (folder / "checkpoints" / "step-00000001" / name).write_bytes(pickle.dumps(Payload(marker), protocol=2))
    scripted = torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(2, 2)))
    torch.jit.save(scripted, str(root / "files" / "script.pt"))
    return {"root": root, "marker": marker, "files": root / "files", "digits": digits}


TRAIN = ["train", "teacher", "--out", "{out}", *sets(*TINY)]
EVAL = ["eval", "--checkpoint", "{digits}", "--num", "20", "--cache", "{out}/cache", "--out", "{out}/eval"]

# loader: (argv, fragment of the one error line)
LOADERS = {
    "CIFAR-10 batch": ([*TRAIN, *sets("data.name=cifar10", "data.path={files}/cifar")], "posix.system"),
    "CIFAR-10 batch, payload inside": (
        [*TRAIN, *sets("data.name=cifar10", "data.path={files}/cifar-nested")],
        "posix.system",
    ),
    "MNIST IDX file": ([*TRAIN, *sets("data.name=mnist", "data.path={files}/mnist")], "not an IDX file"),
    "image folder (pickle and EPS as .png)": (
        [*TRAIN, *sets("data.name=folder", "data.path={files}/pictures")],
        "none of the 2 image files",
    ),
    "npz images": ([*TRAIN, *sets("data.name=npz", "data.path={files}/objects.npz")], "allow_pickle=False"),
    "checkpoint meta.json": (["sample", "--checkpoint", "{root}/bad-meta.json", "--out", "{out}"], "not JSON"),
    "checkpoint weights.safetensors": (
        ["sample", "--checkpoint", "{root}/bad-weights.safetensors", "--out", "{out}"],
        "corrupt or truncated",
    ),
    "checkpoint training_state.pt": (["train", "--resume", "{root}/bad-training_state.pt"], "training_state.pt"),
    "LPIPS weights": (
        [
            *TRAIN[:1],
            "cd",
            *TRAIN[2:],
            *sets("data.name=digits", "cd.teacher={root}/digits-teacher", "cd.distance=lpips"),
            *sets("cd.lpips_weights={files}/state.pt"),
        ],
        "not a PyTorch state dict",
    ),
    "Inception weights": (
        [*EVAL, "--features", "inception", "--inception-weights", "{files}/state.pt"],
        "not a PyTorch weights file",
    ),
    "Inception TorchScript": (
        [*EVAL, "--features", "inception", "--inception-weights", "{files}/script.pt"],
        "runs only with --allow-torchscript",
    ),
    "feature statistics": ([*EVAL, "--reference-stats", "{files}/stats.npz"], "allow_pickle=False"),
    "cm edit input (EPS as .png)": (
        [
            "edit",
            "denoise",
            "--checkpoint",
            "{digits}",
            "--input",
            "{files}/eps.png",
            "--sigma",
            "0.5",
            "--out",
            "{out}",
        ],
        "not a readable image",
    ),
}


@pytest.mark.parametrize("loader", LOADERS)
def test_each_loader_refuses_its_payload_in_one_line(loader, files, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", fake_ghostscript(tmp_path / "bin", files["marker"]))
    template, fragment = LOADERS[loader]
    names = {"files": files["files"], "root": files["root"], "digits": files["digits"], "out": tmp_path / "out"}
    code, err = run_cli(capsys, *[part.format(**names) for part in template])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and fragment in lines[0], (code, err)
    assert not files["marker"].exists()
    assert not (tmp_path / "out").exists()


def test_a_diffusers_teacher_is_read_from_safetensors_only(tmp_path, capsys):
    """diffusers would read diffusion_pytorch_model.bin with torch.load; a folder with only a .bin is refused."""
    from diffusers import UNet2DModel

    from torch_consistency.nets.unet import UNET_PRESETS

    marker, folder = tmp_path / "MARKER", tmp_path / "teacher"
    UNet2DModel(sample_size=8, in_channels=1, out_channels=1, **UNET_PRESETS["tiny"]).save_pretrained(folder)
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    torch.save(Payload(marker), folder / "diffusion_pytorch_model.bin")
    code, err = run_cli(capsys, "train", "cd", "--out", tmp_path / "run", *sets(*TINY, "data.name=digits",
                        f"cd.teacher={folder}"))  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "safetensors only" in err, err
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_a_cached_classifier_that_is_no_safetensors_file_is_retrained_not_read(tmp_path):
    from torch_consistency.data.images import ImageDataset
    from torch_consistency.evaluation.classifier import (
        CACHE_FORMAT,
        ClassifierSettings,
        classifier_cache_key,
        load_or_train_classifier,
    )

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 1, 8, 8), generator=generator, dtype=torch.uint8)
    dataset = ImageDataset("tiny", images, torch.arange(40) % 2)
    settings = ClassifierSettings(epochs=1, width=4)
    key = classifier_cache_key(dataset, settings)
    stem = tmp_path / f"classifier-{key[:16]}"
    marker = tmp_path / "MARKER"
    stem.with_suffix(".safetensors").write_bytes(pickle.dumps(Payload(marker), protocol=2))
    meta = {
        "format": CACHE_FORMAT,
        "key": key,
        "channels": 1,
        "num_classes": 2,
        "settings": {"width": 4},
        "accuracy": 1,
    }
    stem.with_suffix(".json").write_text(json.dumps(meta))
    result = load_or_train_classifier(dataset, tmp_path, settings)
    assert result.trained and not marker.exists()


def test_a_malicious_training_state_makes_resume_fall_back_and_say_so(tmp_path, capsys):
    """Resume skips a checkpoint whose training_state.pt does not load (one stderr line says so) and continues from
    the one before, exactly: the redone steps give the same weights."""
    run, marker = tmp_path / "run", tmp_path / "MARKER"
    assert main(["train", "ct", "--out", str(run), "--no-progress", *sets(*TINY, "train.total_steps=4",
                 "train.checkpoint_every=2")]) == 0  # fmt: skip
    newest = run / "checkpoints" / "step-00000004"
    expected = (newest / "weights.safetensors").read_bytes()
    torch.save(Payload(marker), newest / "training_state.pt")
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "step-00000004/training_state.pt" in err[0] and "using step-00000002" in err[0], err
    assert not marker.exists()
    assert (newest / "weights.safetensors").read_bytes() == expected


def python2_pickle(value):
    """The bytes Python 2's cPickle wrote for CIFAR-10 (protocol 2): str and bytes as 8-bit strings (opcodes U, T),
    numpy arrays by numpy.core.multiarray._reconstruct."""

    class Python2Pickler(pickle._Pickler):
        dispatch: ClassVar = dict(pickle._Pickler.dispatch)

        def save_string(self, text):
            data = text.encode("latin-1") if isinstance(text, str) else text
            if len(data) < 256:
                self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
            else:
                self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
            self.memoize(text)

        dispatch[str] = dispatch[bytes] = save_string

    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(value)
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def test_real_cifar10_batches_still_load(tmp_path):
    """The layout of cifar-10-python.tar.gz: a dict with data (uint8, N×3072) and labels (a list of ints)."""
    rng = np.random.default_rng(0)
    expected_images, expected_labels = [], []
    for i in range(1, 6):
        data, labels = rng.integers(0, 256, (4, 3072), dtype=np.uint8), [int(v) for v in rng.integers(0, 10, 4)]
        batch = {b"batch_label": b"training batch %d of 5" % i, b"labels": labels, b"data": data,
                 b"filenames": [b"img_%d.png" % k for k in range(4)]}  # fmt: skip
        raw = python2_pickle(batch)
        assert b"cnumpy.core.multiarray\n_reconstruct" in raw and b"U\x04data" in raw  # as in the real files
        (tmp_path / f"data_batch_{i}").write_bytes(raw)
        expected_images.append(data.reshape(4, 3, 32, 32))
        expected_labels += labels
    dataset = load_cifar10(tmp_path)
    assert np.array_equal(dataset.images.numpy(), np.concatenate(expected_images))
    assert dataset.labels.tolist() == expected_labels


def test_a_received_runs_data_path_is_announced_and_refused_inside_the_run(tmp_path, capsys, monkeypatch):
    """A run folder that names data inside itself (here data.path = received/cifar, relative) is not read unless the
    user names the data with --data-path; a data.path elsewhere is read and named on stdout."""
    run, marker = tmp_path / "received", tmp_path / "MARKER"
    untrained_checkpoint(run, (3, 32, 32), "train.method=ct", "data.name=cifar10", "data.path=received/cifar")
    payload_files(tmp_path / "payloads", marker)
    shutil.move(tmp_path / "payloads" / "cifar", run / "cifar")
    monkeypatch.chdir(tmp_path)  # the relative data.path resolves from here, into the run folder
    evaluate = ["eval", "--checkpoint", "received", "--num", "20", "--cache", "cache", "--out", "e"]
    for args in (["train", "--resume", "received"], evaluate):
        code, err = run_cli(capsys, *args)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"points inside the run folder itself ({run / 'cifar'}); " in err and "--data-path" in err, err
    code, err = run_cli(capsys, *evaluate, "--data-path", "received/cifar")  # named by the user: read, safely
    assert code == 2 and "posix.system, which is not data" in err and len(err.strip().splitlines()) == 1, err
    untrained_checkpoint(tmp_path / "other", (3, 32, 32), "train.method=ct", "data.name=cifar10",
                         f"data.path={run / 'cifar'}")  # fmt: skip
    assert main([*evaluate[:2], "other", *evaluate[3:]]) == 2
    assert f"reading cifar10 data from {run / 'cifar'} (data.path in the config of other" in capsys.readouterr().out
    assert not marker.exists() and not (tmp_path / "e").exists() and not (tmp_path / "cache").exists()
