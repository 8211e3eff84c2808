"""How a run finds its teacher and builds its method (training/methods.py): which config key names the teacher,
when it is loaded, what the student inherits, and the teacher loaded from 'exact' or from a teacher checkpoint."""

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from helpers import raises_exactly, tiny_config, untrained_checkpoint
from torch_consistency.checkpoint import load_checkpoint
from torch_consistency.data import build_dataset
from torch_consistency.errors import CheckpointError, ConfigError
from torch_consistency.nets.unet import UNET_PRESETS, UNet
from torch_consistency.parameterization import Preconditioned
from torch_consistency.training.build import (
    Teacher,
    build_method,
    check_network_overrides,
    load_teacher,
    needs_teacher,
    student_config,
    teacher_key,
)
from torch_consistency.training.improved import (
    ContinuousTimeConsistency,
    EasyConsistencyTuning,
    ImprovedConsistencyTraining,
)
from torch_consistency.training.loop import train
from torch_consistency.training.methods import ConsistencyDistillation, ConsistencyTraining, TeacherTraining

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A one-step teacher (width 24) and a one-step CT run on the eight Gaussians."""
    folder = tmp_path_factory.mktemp("runs")
    train(tiny_config("train.total_steps=1", "network.width=24"), folder / "teacher", progress=False)
    train(tiny_config("train.method=ct", "train.total_steps=1"), folder / "ct", progress=False)
    return folder


def test_teacher_keys():
    keys = {method: teacher_key(tiny_config(f"train.method={method}")) for method in ("teacher", "ct", "ict")}
    assert keys == {"teacher": "", "ct": "", "ict": ""}
    assert teacher_key(tiny_config("train.method=cd", "cd.teacher=exact")) == "cd.teacher"
    assert teacher_key(tiny_config("train.method=ect")) == "ect.teacher"
    assert teacher_key(tiny_config("train.method=scm")) == "scm.teacher"


@pytest.mark.parametrize(
    ("overrides", "fresh", "resuming"),
    [
        (["train.method=cd", "cd.teacher=exact"], True, True),  # CD's teacher takes every step
        (["train.method=scm", "scm.mode=scd", "scm.teacher=exact"], True, True),  # so does sCD's
        (["train.method=scm", "scm.teacher=some/run"], True, False),  # sCT: only the initial weights
        (["train.method=ect", "ect.teacher=some/run"], True, False),  # ECT: only the initial weights
        (["train.method=ect"], False, False),  # no teacher named
        (["train.method=ct", "cd.teacher=exact"], False, False),  # CT has no teacher key
    ],
)
def test_when_the_teacher_is_loaded(overrides, fresh, resuming):
    config = tiny_config(*overrides)
    assert needs_teacher(config, resuming=False) is fresh
    assert needs_teacher(config, resuming=True) is resuming


def test_the_student_inherits_the_teachers_network_and_conditioning():
    teacher_config = tiny_config("network.width=24", "network.dropout=0.3", "diffusion.sigma_data=0.6",
                                 "diffusion.noise_conditioning=edm")  # fmt: skip
    config = student_config(tiny_config("train.method=cd", "cd.teacher=exact", "optim.lr=0.05", "network.dropout=0.1"),
                            Teacher(lambda x, s: x, None, teacher_config, (2,)))  # fmt: skip
    assert config.network.width == 24 and config.diffusion.sigma_data == 0.6
    assert config.network.dropout == 0.1  # the student's own: it changes no weight
    assert config.diffusion.noise_conditioning == "edm" and config.optim.lr == 0.05
    unchanged = tiny_config("train.method=cd", "cd.teacher=exact")
    assert student_config(unchanged, Teacher(lambda x, s: x, None, None, None)) is unchanged
    assert unchanged.network.width == 32


@pytest.mark.parametrize(
    ("student", "key"),
    [
        (("train.method=cd", "cd.teacher=runs/t", "cd.guidance=input", "cd.guidance_min=0", "cd.guidance_max=4",
          "sampling.guidance=1"), "cd"),
        (("train.method=scm", "scm.mode=scd", "scm.teacher=runs/t", "scm.guidance=fixed", "scm.guidance_min=2",
          "scm.guidance_max=2"), "scm"),
    ],
)  # fmt: skip
def test_a_guided_student_takes_its_teachers_null_class_and_refuses_a_teacher_without_one(student, key):
    conditional = tiny_config("network.class_conditional=true")
    mode = "'input'" if key == "cd" else "'fixed'"
    with raises_exactly(ConfigError, f"{key}.guidance = {mode} needs D(x, σ, ∅): a class-conditional teacher trained "
                        f"with teacher.label_dropout > 0; {key}.teacher = runs/t has none"):  # fmt: skip
        student_config(tiny_config(*student), Teacher(lambda x, s: x, None, conditional, (2,)))
    dropped = tiny_config("network.class_conditional=true", "teacher.label_dropout=0.2", "teacher.p_std=0.9")
    config = student_config(tiny_config(*student), Teacher(lambda x, s: x, None, dropped, (2,)))
    assert config.network.class_conditional and config.teacher.label_dropout == 0.2 and config.teacher.p_std == 0.9
    unguided = tiny_config(*student, f"{key}.guidance=none")
    assert student_config(unguided, Teacher(lambda x, s: x, None, conditional, (2,))) is unguided


def test_exact_teacher_is_the_mixtures_denoiser():
    config = tiny_config("train.method=cd", "cd.teacher=exact")
    dataset = build_dataset(config.data)
    teacher = load_teacher(config, dataset, CPU)
    x, sigma = torch.randn(5, 2, dtype=torch.float64), torch.full((5,), 0.7, dtype=torch.float64)
    assert torch.equal(teacher.denoiser(x, sigma), dataset.mixture.denoiser(x, sigma))
    assert teacher.initial_weights is None and teacher.config is None and teacher.sample_shape is None
    config = tiny_config("train.method=cd", "cd.teacher=exact", "data.name=two_moons")
    with raises_exactly(ConfigError, "cd.teacher = 'exact' needs Gaussian-mixture data; two_moons has none"):
        load_teacher(config, build_dataset(config.data), CPU)


def test_teacher_from_a_checkpoint(runs):
    config = tiny_config("train.method=cd", f"cd.teacher={runs / 'teacher'}")
    teacher = load_teacher(config, build_dataset(config.data), CPU)
    checkpoint = load_checkpoint(runs / "teacher")
    expected = checkpoint.build_model("ema-0.999")
    x, sigma = torch.randn(5, 2), torch.full((5,), 0.7)
    assert torch.equal(teacher.denoiser(x, sigma), expected(x, sigma))
    assert not any(p.requires_grad for p in teacher.denoiser.parameters())
    assert teacher.initial_weights.keys() == checkpoint.weights["ema-0.999"].keys()
    assert all(torch.equal(v, checkpoint.weights["ema-0.999"][k]) for k, v in teacher.initial_weights.items())
    assert teacher.config.network.width == 24 and tuple(teacher.sample_shape) == (2,)


def test_teachers_that_do_not_fit_are_refused(runs):
    config = tiny_config("train.method=ect", f"ect.teacher={runs / 'ct'}")
    with raises_exactly(CheckpointError, f"ect.teacher {runs / 'ct'} is a ct checkpoint, not a teacher"):
        load_teacher(config, build_dataset(config.data), CPU)
    config = tiny_config("train.method=cd", f"cd.teacher={runs / 'teacher'}", "data.name=gmm", "data.dim=3")
    message = f"cd.teacher {runs / 'teacher'} was trained on samples of shape (2,), the data (gmm) has (3,)"
    with raises_exactly(CheckpointError, message):
        load_teacher(config, build_dataset(config.data), CPU)


def test_build_method_names_each_method():
    teacher = Teacher(lambda x, s: x, None, None, None)
    kinds = {
        "train.method=teacher": TeacherTraining,
        "train.method=ct": ConsistencyTraining,
        "train.method=ict": ImprovedConsistencyTraining,
        "train.method=ect": EasyConsistencyTuning,
        "train.method=scm": ContinuousTimeConsistency,
    }
    for override, kind in kinds.items():
        assert type(build_method(tiny_config(override), None)) is kind
    cd = build_method(tiny_config("train.method=cd", "cd.teacher=exact"), teacher)
    assert type(cd) is ConsistencyDistillation and cd.teacher is teacher.denoiser
    scd = build_method(tiny_config("train.method=scm", "scm.mode=scd", "scm.teacher=exact"), teacher)
    assert scd.teacher is teacher.denoiser
    assert build_method(tiny_config("train.method=scm"), teacher).teacher is None  # sCT takes no teacher
    with raises_exactly(AssertionError, "CD needs a teacher"):
        build_method(tiny_config("train.method=cd", "cd.teacher=exact"), None)
    with raises_exactly(AssertionError, "sCD needs a teacher"):
        build_method(tiny_config("train.method=scm", "scm.mode=scd", "scm.teacher=exact"), None)


def test_teacher_from_diffusers_folders(tmp_path):
    """A bare UNet2DModel is F_θ of an EDM denoiser with the config's σ_d; the student takes its preset and weights.
    A DDPM pipeline's ε-network has another parameterization: no student config, no initial weights."""
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, **UNET_PRESETS["tiny"]).eval()
    unet.save_pretrained(tmp_path / "unet")
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(tmp_path / "ddpm")
    images = ["data.name=digits", "network.kind=unet", "network.preset=small", "train.method=cd"]
    config = tiny_config(*images, f"cd.teacher={tmp_path / 'unet'}", "diffusion.sigma_data=0.6")
    teacher = load_teacher(config, build_dataset(config.data), CPU)
    reference = Preconditioned(UNet(unet), "denoiser", 0.6, 0.002, "openai")  # D = c_skip·x + c_out·F (§2)
    x, sigma = torch.randn(2, 1, 8, 8), torch.tensor([0.3, 20.0])
    with torch.no_grad():
        assert torch.allclose(teacher.denoiser(x, sigma), reference(x, sigma), rtol=1e-5, atol=1e-6)
    assert not any(p.requires_grad for p in teacher.denoiser.parameters())
    assert teacher.config.network.preset == "tiny" and teacher.config.diffusion.noise_conditioning == "openai"
    assert tuple(teacher.sample_shape) == (1, 8, 8)
    assert teacher.initial_weights.keys() == reference.state_dict().keys()
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in teacher.initial_weights.items())
    config = tiny_config(*images, f"cd.teacher={tmp_path / 'ddpm'}")
    teacher = load_teacher(config, build_dataset(config.data), CPU)
    assert teacher.config is None and teacher.initial_weights is None and tuple(teacher.sample_shape) == (1, 8, 8)


def test_a_student_refuses_network_overrides_that_differ_from_its_teachers(tmp_path):
    """`--set network.KEY=VALUE` for a student that takes its teacher's network: refused when VALUE differs from the
    teacher checkpoint's, accepted when equal; network.dropout is the student's own; an exact or absent teacher has
    no network to differ from."""
    teacher = untrained_checkpoint(tmp_path / "teacher", (2,), "train.method=teacher")  # width 32, as TINY
    for method, key in (("cd", "cd.teacher"), ("ect", "ect.teacher")):
        wide = [f"train.method={method}", f"{key}={teacher}", "network.width=64"]
        with raises_exactly(ConfigError, f"network.width = 64 cannot be set for a {method} student: it starts from "
                            f"its teacher's weights and has the teacher's network (network.width = 32 in {key} = "
                            f"{teacher}); only network.dropout is its own"):  # fmt: skip
            check_network_overrides(tiny_config(*wide), wide)
    for overrides in (
        ["train.method=cd", f"cd.teacher={teacher}", "network.width=32"],  # the teacher's own value
        ["train.method=cd", f"cd.teacher={teacher}", "network.dropout=0.3"],
        ["train.method=cd", "cd.teacher=exact", "network.width=64"],
        ["train.method=ct", "network.width=64"],
    ):
        check_network_overrides(tiny_config(*overrides), overrides)
    # only what was set on the command line is checked, not the config's other network values
    check_network_overrides(tiny_config("train.method=cd", f"cd.teacher={teacher}", "network.width=64"),
                            ["train.method=cd", f"cd.teacher={teacher}"])  # fmt: skip


@pytest.mark.parametrize(("preset", "factor"), [("small-half", 0.5), ("small-twice", 2)])
def test_the_scaled_small_presets_keep_its_layout_channels_per_group_and_heads(preset, factor):
    """small-half and small-twice (the network-size row of docs/results/curves): every block's width times the
    factor, the rest of small's layout kept, the same channels per norm group and the same number of heads."""
    small, scaled = UNET_PRESETS["small"], UNET_PRESETS[preset]
    assert scaled["block_out_channels"] == tuple(int(c * factor) for c in small["block_out_channels"])
    scaled_keys = ("block_out_channels", "norm_num_groups", "attention_head_dim")
    assert {k: v for k, v in scaled.items() if k not in scaled_keys} == {
        k: v for k, v in small.items() if k not in scaled_keys
    }
    for width, small_width in zip(scaled["block_out_channels"], small["block_out_channels"], strict=True):
        assert width / scaled["norm_num_groups"] == small_width / small["norm_num_groups"]
        assert width / scaled["attention_head_dim"] == small_width / small["attention_head_dim"]

    def parameters(name):
        unet = UNet2DModel(sample_size=28, in_channels=1, out_channels=1, **UNET_PRESETS[name])
        return sum(p.numel() for p in unet.parameters())

    assert parameters(preset) / parameters("small") == pytest.approx(factor**2, rel=0.02)  # convolutions dominate
