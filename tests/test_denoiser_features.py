"""CD's teacher-features distance (nets/denoiser_features.py) against the formula written out on a full U-Net pass."""

import math

import pytest
import torch

from helpers import UNET, raises_exactly, tiny_config, tiny_teacher
from torch_consistency.errors import ConfigError
from torch_consistency.nets.denoiser_features import DenoiserFeatureDistance
from torch_consistency.nets.mlp import MLP
from torch_consistency.parameterization import Preconditioned
from torch_consistency.training.build import Teacher, build_method
from torch_consistency.training.loop import train

SIGMA_DATA = 0.5


def written_out(teacher: Preconditioned, x, y, sigma: float, label: int | None = None):
    """Σ_l mean_hw Σ_c (a/‖a‖ − b/‖b‖)² over the down blocks' and the middle block's outputs of the whole U-Net
    pass on c_in·x = x/√(σ² + σ_d²) at c_noise = ln(σ)/4 (EDM's), the up path included."""
    unet = teacher.net.unet
    outputs: list = []
    blocks = [*unet.down_blocks, unet.mid_block]
    hooks = [
        b.register_forward_hook(lambda m, a, o: outputs.append(o[0] if isinstance(o, tuple) else o)) for b in blocks
    ]
    labels = None if label is None else torch.full((x.shape[0],), label)
    with torch.no_grad():
        for images in (x, y):
            unet(images / math.sqrt(sigma**2 + SIGMA_DATA**2), torch.full((x.shape[0],), math.log(sigma) / 4),
                 class_labels=labels)  # fmt: skip
    for hook in hooks:
        hook.remove()
    layers = len(blocks)
    total = torch.zeros(x.shape[0])
    for a, b in zip(outputs[:layers], outputs[layers:], strict=True):
        a = a / (a.square().sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.square().sum(1, keepdim=True).sqrt() + 1e-10)
        total += (a - b).square().sum(1).mean((1, 2))
    return total


@pytest.mark.parametrize("sigma", [0.1, 2.0])
def test_equals_the_formula_on_the_teachers_encoder(sigma):
    teacher = tiny_teacher()
    x, y = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)
    distance = DenoiserFeatureDistance(teacher, sigma)
    torch.testing.assert_close(distance(x, y), written_out(teacher, x, y, sigma))


def test_a_class_conditional_teacher_sees_its_null_class():
    teacher = tiny_teacher(num_classes=4)  # 4 embeddings: classes 0–2 and the null class 3
    x, y = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    measured = DenoiserFeatureDistance(teacher, 0.5, null_label=3)(x, y)
    torch.testing.assert_close(measured, written_out(teacher, x, y, 0.5, label=3))
    assert not torch.allclose(measured, written_out(teacher, x, y, 0.5, label=0))


def test_zero_at_equal_images_symmetric_and_differentiable_in_x_only():
    teacher = tiny_teacher()
    distance = DenoiserFeatureDistance(teacher, 0.5)
    x, y = torch.randn(2, 1, 8, 8, requires_grad=True), torch.randn(2, 1, 8, 8)
    assert torch.equal(distance(y, y), torch.zeros(2))
    torch.testing.assert_close(distance(x, y), distance(y, x))
    distance(x, y).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_stops_before_the_up_path_and_leaves_the_teacher_as_it_was():
    teacher = tiny_teacher()
    x = torch.randn(2, 1, 8, 8)
    before = teacher(x, 0.7)
    calls = []
    teacher.net.unet.up_blocks[0].register_forward_hook(lambda *_: calls.append(1))
    DenoiserFeatureDistance(teacher, 0.5)(x, torch.zeros_like(x))
    assert calls == []
    torch.testing.assert_close(teacher(x, 0.7), before)  # no hook left behind to stop the teacher's own calls


def test_refuses_a_teacher_without_a_unet_and_a_sigma_of_zero():
    mlp_teacher = Preconditioned(MLP(2, width=16, depth=1), "denoiser", SIGMA_DATA, 0.002)
    with raises_exactly(
        ConfigError, "cd.distance = 'teacher-features' needs a U-Net teacher (a teacher checkpoint or a UNet2DModel)"
    ):
        DenoiserFeatureDistance(mlp_teacher, 0.5)
    with pytest.raises(ConfigError, match=r"cd\.feature_sigma must be > 0"):
        DenoiserFeatureDistance(tiny_teacher(), 0.0)


def test_cd_builds_its_distance_from_the_teacher_at_the_configured_sigma():
    teacher = tiny_teacher()
    config = tiny_config(*UNET, "train.method=cd", "cd.teacher=t", "cd.distance=teacher-features",
                         "cd.feature_sigma=1.5")  # fmt: skip
    method = build_method(config, Teacher(teacher, None, None, (1, 8, 8)))
    assert method.distance.denoiser is teacher and method.distance.sigma == 1.5 and method.distance.null_label is None


def test_class_conditional_cd_needs_a_teacher_with_a_null_class():
    conditional = [*UNET, "network.class_conditional=true", "train.method=cd", "cd.teacher=t"]
    config = tiny_config(*conditional, "cd.distance=teacher-features")
    with pytest.raises(ConfigError, match="need a teacher with a null class"):
        build_method(config, Teacher(tiny_teacher(num_classes=10), None, None, (1, 8, 8)), num_classes=10)
    config = tiny_config(*conditional, "cd.distance=teacher-features", "teacher.label_dropout=0.1")
    method = build_method(config, Teacher(tiny_teacher(num_classes=11), None, None, (1, 8, 8)), num_classes=10)
    assert method.distance.null_label == 10


def test_cd_trains_with_the_teacher_features_distance(tmp_path):
    train(tiny_config(*UNET), tmp_path / "teacher", progress=False)
    config = tiny_config(*UNET, "train.method=cd", f"cd.teacher={tmp_path / 'teacher'}",
                         "cd.distance=teacher-features", "train.total_steps=2")  # fmt: skip
    train(config, tmp_path / "cd", progress=False)
    losses = [line for line in (tmp_path / "cd" / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    assert len(losses) == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["cd.feature_sigma=0"], r"cd\.feature_sigma must lie in \(0, inf\)"),
        (
            ["cd.distance=teacher-features", "data.name=eight_gaussians"],
            "cd.distance = 'teacher-features' needs images",
        ),
    ],
)
def test_config_refuses(overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(*overrides)
