import sys
from pathlib import Path

import pytest
import torch

from helpers import tiny_config
from torch_consistency.checkpoint import load_checkpoint
from torch_consistency.errors import CheckpointError
from torch_consistency.nets.lpips import LPIPS, installed_lpips_heads, load_lpips
from torch_consistency.training.loop import train


def files_in_original_layouts(tmp_path):
    """A torchvision-style VGG16 state dict and an lpips-style heads file, with random weights."""
    model = LPIPS()
    torch.nn.init.uniform_(model.lins[0].weight)
    vgg = {f"features.{k.split('.', 1)[1]}": v for k, v in model.state_dict().items() if k.startswith("features.")}
    vgg["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision's head, ignored
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(vgg, tmp_path / "vgg16.pth")
    torch.save(heads, tmp_path / "vgg.pth")
    return model, heads


def test_loads_torchvision_and_lpips_files(tmp_path):
    model, heads = files_in_original_layouts(tmp_path)
    loaded = load_lpips(tmp_path / "vgg16.pth", tmp_path / "vgg.pth")
    assert torch.equal(loaded.features[0].weight, model.features[0].weight)
    assert torch.equal(loaded.lins[3].weight, heads["lin3.model.1.weight"])


def test_distance_is_zero_for_equal_images_symmetric_and_positive(tmp_path):
    files_in_original_layouts(tmp_path)
    lpips = load_lpips(tmp_path / "vgg16.pth", tmp_path / "vgg.pth")
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1  # at their size (forward: 224 px)
    d_xy = lpips.distance(x, y)
    assert torch.allclose(lpips.distance(x, x), torch.zeros(2))
    assert torch.allclose(d_xy, lpips.distance(y, x)) and torch.all(d_xy > 0) and d_xy.shape == (2,)


def test_missing_or_incomplete_weights_are_refused(tmp_path, monkeypatch):
    files_in_original_layouts(tmp_path)
    with pytest.raises(CheckpointError, match=r"download\.pytorch\.org"):
        load_lpips(tmp_path / "nothing.pth")
    with pytest.raises(CheckpointError, match="incomplete: missing 26 tensors"):
        load_lpips(tmp_path / "vgg.pth")  # heads without VGG16
    monkeypatch.setitem(sys.modules, "lpips", None)  # as if the lpips package were not installed
    assert installed_lpips_heads() is None
    with pytest.raises(CheckpointError, match=r"incomplete.*used by itself when the lpips package is installed"):
        load_lpips(tmp_path / "vgg16.pth")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(CheckpointError, match="not a PyTorch state dict"):
        load_lpips(tmp_path / "text.pth")


def test_heads_come_from_the_installed_lpips_package_when_not_given(tmp_path):
    from reference_libraries import lpips  # puts the lpips package on the path where it is installed apart

    files_in_original_layouts(tmp_path)
    shipped = torch.load(
        Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth", map_location="cpu", weights_only=True
    )
    loaded = load_lpips(tmp_path / "vgg16.pth")
    for i in range(5):
        assert torch.equal(loaded.lins[i].weight, shipped[f"lin{i}.model.1.weight"])


def test_cd_trains_with_lpips_from_user_weights(tmp_path):
    files_in_original_layouts(tmp_path)
    weights = f"{tmp_path / 'vgg16.pth'},{tmp_path / 'vgg.pth'}"
    base = ["network.kind=unet", "network.preset=tiny", "data.name=digits", "optim.batch_size=2", "train.total_steps=1"]
    train(tiny_config(*base), tmp_path / "teacher", progress=False)
    config = tiny_config(*base, "train.method=cd", f"cd.teacher={tmp_path / 'teacher'}", "cd.distance=lpips",
                         f"cd.lpips_weights={weights}")  # fmt: skip
    train(config, tmp_path / "cd", progress=False)
    assert load_checkpoint(tmp_path / "cd").config.cd.distance == "lpips"
