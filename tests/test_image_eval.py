"""cm sample and cm eval on an image checkpoint (a tiny digits U-Net, untrained: the pipeline is what is tested)."""

import copy
import json
import subprocess
import sys

import numpy as np
import pytest

from torch_consistency.checkpoint import save_checkpoint
from torch_consistency.configs import load_config
from torch_consistency.nets import build_model

OVERRIDES = ["network.kind=unet", "network.preset=tiny", "data.name=digits", "data.holdout_fraction=0.2",
             "train.method=ct", "sampling.clip_denoised=true"]  # fmt: skip


def cm(*args):
    return subprocess.run([sys.executable, "-m", "torch_consistency", *map(str, args)], capture_output=True, text=True)


def digits_checkpoint(folder):
    config = load_config(None, OVERRIDES)
    model = build_model(config, "consistency", (1, 8, 8))
    modules = {"online": model, "ema-0.999": copy.deepcopy(model)}
    save_checkpoint(folder, 1, config, (1, 8, 8), 0, modules, {"optimizer": {}}, keep=1)
    return folder


@pytest.fixture
def cache(digits_cache):
    """The session's classifier cache: the digits classifier is trained once."""
    return digits_cache


def test_sample_writes_openai_layout_and_eval_reports_image_metrics(tmp_path, cache):
    run = digits_checkpoint(tmp_path / "run")
    result = cm("sample", "--checkpoint", run, "--steps", "2", "--num", "10", "--out", tmp_path / "s")
    assert result.returncode == 0, result.stderr
    arrays = np.load(tmp_path / "s" / "samples.npz")
    assert arrays["arr_0"].shape == (10, 8, 8, 1) and arrays["arr_0"].dtype == np.uint8 and int(arrays["nfe"]) == 2
    result = cm("eval", "--checkpoint", run, "--steps", "1,2", "--num", "300", "--cache", cache,
                "--out", tmp_path / "e")  # fmt: skip
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "e" / "results.json").read_text())
    assert results["metric"] == "FD_classifier" and "held-out accuracy" in results["features"]
    assert [s["nfe"] for s in results["scores"]] == [1, 2]
    untrained, floor = results["scores"][0]["fd"], results["data_floor"]["fd"]
    assert untrained > 10 * floor  # an untrained network is far from the data; two real sets are close
    assert (tmp_path / "e" / "metric_vs_nfe.png").exists() and (tmp_path / "e" / "results.md").exists()


def test_eval_refuses_inception_without_weights(tmp_path):
    run = digits_checkpoint(tmp_path / "run")
    result = cm("eval", "--checkpoint", run, "--features", "inception", "--out", tmp_path / "e")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "--inception-weights" in result.stderr and not (tmp_path / "e").exists()


def test_eval_against_user_statistics_checks_their_dimension(tmp_path, cache):
    run = digits_checkpoint(tmp_path / "run")
    np.savez(tmp_path / "edm-style.npz", mu=np.zeros(7), sigma=np.eye(7))  # EDM/pytorch-fid layout, wrong size
    result = cm("eval", "--checkpoint", run, "--steps", "1", "--num", "50", "--cache", cache,
                "--reference-stats", tmp_path / "edm-style.npz", "--out", tmp_path / "e")  # fmt: skip
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "7-d statistics" in result.stderr and not (tmp_path / "e").exists()
