"""diffusers interop with real components: export to ConsistencyModelPipeline, DDPM and bare U-Net teachers."""

import copy
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from diffusers import ConsistencyModelPipeline, DDPMPipeline, DDPMScheduler, UNet2DModel

from torch_consistency.checkpoint import load_checkpoint, load_weights, save_checkpoint
from torch_consistency.cli import main
from torch_consistency.configs import load_config
from torch_consistency.data import build_dataset
from torch_consistency.errors import CheckpointError
from torch_consistency.interop import is_diffusers_folder
from torch_consistency.interop.diffusers import (
    DiscreteVPDenoiser,
    denoised_from_epsilon,
    denoised_from_sample,
    denoised_from_v,
    export_diffusers,
    load_diffusers_teacher,
)
from torch_consistency.nets import build_model
from torch_consistency.nets.unet import UNET_PRESETS, UNet
from torch_consistency.parameterization import Preconditioned
from torch_consistency.samplers import sample_multistep
from torch_consistency.sigmas import sigmas_from_diffusers_timesteps
from torch_consistency.training.build import load_teacher, student_config
from torch_consistency.training.loop import train

IMAGES = ["network.kind=unet", "network.preset=tiny", "data.name=digits", "optim.batch_size=8"]
SHAPE = (1, 8, 8)


def perturb(module: torch.nn.Module) -> torch.nn.Module:
    """Random weights everywhere (diffusers zero-initialises nothing important, but be sure outputs vary)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return module


def make_checkpoint(run_dir, *overrides):
    """A checkpoint of an untrained 8×8 U-Net (consistency model by default), read back by load_checkpoint."""
    config = load_config(None, [*IMAGES, "train.method=cd", "cd.teacher=unused", "cd.num_points=18", *overrides])
    parameterization = "denoiser" if config.train.method == "teacher" else "consistency"
    online = build_model(config, parameterization, SHAPE)
    ema = perturb(copy.deepcopy(online))  # distinct weight sets, so that exporting the default (the EMA) is checked
    save_checkpoint(run_dir, 5, config, SHAPE, 0, {"online": online, "ema-0.999": ema}, {"optimizer": {}}, keep=1)
    checkpoint = load_checkpoint(run_dir)
    assert checkpoint.step == 5 and checkpoint.parameterization == parameterization
    assert torch.equal(checkpoint.weights["ema-0.999"]["net.unet.conv_in.weight"], ema.net.unet.conv_in.weight)
    return checkpoint


def tiny_unet() -> UNet2DModel:
    return perturb(UNet2DModel(sample_size=8, in_channels=1, out_channels=1, **UNET_PRESETS["tiny"])).eval()


@pytest.mark.parametrize("clip_denoised", [False, True])
def test_exported_pipeline_samples_as_we_do(tmp_path, capsys, clip_denoised):
    checkpoint = make_checkpoint(tmp_path / "run", f"sampling.clip_denoised={str(clip_denoised).lower()}")
    out = tmp_path / "exported"
    assert main(["export", "--checkpoint", str(tmp_path / "run"), "--format", "diffusers", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} >= {"model_index.json", "unet", "scheduler"}
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(tmp_path.glob(".exported.tmp-*"))
    pipe = ConsistencyModelPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    scheduler = pipe.scheduler.config
    assert scheduler.num_train_timesteps == 18 and scheduler.clip_denoised == clip_denoised
    model, d = checkpoint.build_model(), checkpoint.config.diffusion
    for timesteps in ([0], [11, 0]):  # [0] is what num_inference_steps=1 gives: σ_max
        sigmas = sigmas_from_diffusers_timesteps(timesteps, 18, d.sigma_min, d.sigma_max, d.rho)
        generator = torch.Generator().manual_seed(3)
        noise = torch.randn((4, *SHAPE), generator=generator)
        with torch.no_grad():
            ours = sample_multistep(model, sigmas, noise, d.sigma_min, generator, clip_denoised).x
        raw = []
        kwargs = {"num_inference_steps": 1} if timesteps == [0] else {"timesteps": timesteps}
        theirs = pipe(
            batch_size=4, generator=torch.Generator().manual_seed(3), output_type="pt",
            callback=lambda i, t, sample, raw=raw: raw.append(sample), **kwargs,
        ).images  # fmt: skip
        assert len(raw) == len(timesteps) and ours.abs().max() > 0.1
        torch.testing.assert_close(raw[-1], ours, atol=1e-4, rtol=0)  # before the pipeline's [0, 1] mapping
        torch.testing.assert_close(theirs, (ours / 2 + 0.5).clamp(0, 1), atol=1e-4, rtol=0)


def test_export_refuses_what_diffusers_cannot_run(tmp_path):
    teacher = make_checkpoint(tmp_path / "teacher", "train.method=teacher")
    with pytest.raises(CheckpointError, match="teacher"):
        export_diffusers(teacher, tmp_path / "a")
    with pytest.raises(CheckpointError, match="noise_conditioning"):
        export_diffusers(make_checkpoint(tmp_path / "edm", "diffusion.noise_conditioning=edm"), tmp_path / "b")
    config = load_config(None, ["train.method=ct", "network.width=8", "network.depth=1", "network.embedding_dim=8"])
    save_checkpoint(tmp_path / "mlp", 1, config, (2,), 0, {"online": build_model(config, "consistency", (2,))}, {}, 1)
    with pytest.raises(CheckpointError, match="mlp"):
        export_diffusers(tmp_path / "mlp", tmp_path / "c")
    assert not any((tmp_path / name).exists() for name in "abc")
    (tmp_path / "empty").mkdir()  # an existing empty folder is fine; an unknown weight set is not
    make_checkpoint(tmp_path / "cd")
    with pytest.raises(CheckpointError, match=r"no weights 'ema-0\.5'"):
        export_diffusers(tmp_path / "cd", tmp_path / "empty", weights="ema-0.5")
    assert export_diffusers(tmp_path / "cd", tmp_path / "empty", weights="online") == tmp_path / "empty"
    assert json.loads((tmp_path / "empty" / "export.json").read_text())["weights"] == "online"


def cm_error(*args):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "torch_consistency", "export", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cm export: error:"), result.stderr
    return lines[0]


def test_cli_export_errors_are_one_line(tmp_path):
    make_checkpoint(tmp_path / "teacher", "train.method=teacher")
    assert "teacher" in cm_error("--checkpoint", tmp_path / "teacher", "--format", "diffusers", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    make_checkpoint(tmp_path / "cd")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    assert "not empty" in cm_error("--checkpoint", tmp_path / "cd", tmp_path / "full")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]


@pytest.fixture(scope="module")
def ddpm_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddpm")
    DDPMPipeline(unet=tiny_unet(), scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(folder)
    return folder


def test_ddpm_teacher_is_the_vp_ve_mapped_epsilon_network(ddpm_folder):
    assert is_diffusers_folder(ddpm_folder)
    denoiser, info = load_diffusers_teacher(ddpm_folder)
    assert isinstance(denoiser, DiscreteVPDenoiser) and info.kind == "ddpm" and info.prediction_type == "epsilon"
    assert info.sample_shape == SHAPE and info.num_class_embeds is None
    alphas = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod.double()
    torch.testing.assert_close(denoiser.sigmas, ((1 - alphas) / alphas).sqrt())
    unet = UNet2DModel.from_pretrained(ddpm_folder / "unet").eval().double()
    denoiser.double()  # float64, so that D = x − σ·ε̂ holds to 1e-5 even at σ_999 ≈ 157
    x = torch.randn(3, *SHAPE, dtype=torch.float64)
    with torch.no_grad():
        for t in (0, 500, 999):  # σ on the table: t is the integer step
            sigma = denoiser.sigmas[t]
            assert denoiser.sigma_to_t(sigma).item() == t
            expected = x - sigma * unet(x / (1 + sigma**2).sqrt(), t).sample
            torch.testing.assert_close(denoiser(x, sigma), expected, atol=1e-5, rtol=0)
        between = (denoiser.sigmas[500] * denoiser.sigmas[501]).sqrt()  # halfway in ln σ
        t = denoiser.sigma_to_t(between)
        torch.testing.assert_close(t.item(), 500.5, atol=1e-9, rtol=0)
        expected = x - between * unet(x / (1 + between**2).sqrt(), t).sample
        torch.testing.assert_close(denoiser(x, between), expected, atol=1e-5, rtol=0)
        assert not torch.allclose(expected, x - between * unet(x / (1 + between**2).sqrt(), 500).sample)
    ends = denoiser.sigma_to_t(torch.tensor([1e-4, 1e4]))  # σ outside the table is clamped to its ends
    assert ends.tolist() == [0.0, 999.0]


def test_cd_from_a_ddpm_teacher(tmp_path, ddpm_folder):
    config = load_config(None, [*IMAGES, "train.method=cd", f"cd.teacher={ddpm_folder}", "train.total_steps=2"])
    teacher = load_teacher(config, build_dataset(config.data), torch.device("cpu"))
    assert teacher.initial_weights is None and teacher.config is None and teacher.sample_shape == SHAPE
    train(config, tmp_path / "cd", progress=False)
    checkpoint = load_checkpoint(tmp_path / "cd")
    assert checkpoint.step == 2 and checkpoint.parameterization == "consistency"


def test_bare_unet_teacher_is_an_edm_denoiser_and_the_students_start(tmp_path):
    unet = tiny_unet()
    unet.save_pretrained(tmp_path / "unet")
    denoiser, info = load_diffusers_teacher(tmp_path / "unet", sigma_data=0.5)
    assert info.kind == "unet" and info.sample_shape == SHAPE
    reference = Preconditioned(UNet(unet), "denoiser", 0.5, 0.002, "openai")
    x, sigma = torch.randn(2, *SHAPE), torch.tensor([0.3, 20.0])
    with torch.no_grad():
        torch.testing.assert_close(denoiser(x, sigma), reference(x, sigma))
    # A CD config asking for another preset gets the teacher's architecture and starts from its weights.
    overrides = [*IMAGES, "network.preset=small", "train.method=cd", f"cd.teacher={tmp_path / 'unet'}"]
    config = load_config(None, [*overrides, "diffusion.noise_conditioning=edm"])
    teacher = load_teacher(config, build_dataset(config.data), torch.device("cpu"))
    config = student_config(config, teacher)
    assert config.network.preset == "tiny" and config.diffusion.noise_conditioning == "openai"
    student = build_model(config, "consistency", SHAPE)
    load_weights(student, teacher.initial_weights, "teacher")
    assert torch.equal(student.net.unet.conv_out.weight, unet.conv_out.weight)


def test_folders_that_are_no_diffusers_teacher(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"model_index\.json .* or config\.json of a UNet2DModel"):
        load_diffusers_teacher(tmp_path / "empty")
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(CheckpointError, match="'AutoencoderKL'; expected a UNet2DModel"):
        load_diffusers_teacher(tmp_path / "vae")
    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(CheckpointError, match="DDPMPipeline or DDIMPipeline"):
        load_diffusers_teacher(tmp_path / "sd")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(CheckpointError, match="cannot load the UNet2DModel"):
        load_diffusers_teacher(tmp_path / "broken")
    (tmp_path / "run").mkdir()  # our own run folders hold a config.json too, without _class_name
    (tmp_path / "run" / "config.json").write_text(json.dumps({"train": {}}))
    assert not is_diffusers_folder(tmp_path / "run")


def test_teacher_must_fit_the_data(tmp_path):
    UNet2DModel(sample_size=16, in_channels=1, out_channels=1, **UNET_PRESETS["tiny"]).save_pretrained(tmp_path / "u")
    config = load_config(None, [*IMAGES, "train.method=cd", f"cd.teacher={tmp_path / 'u'}"])
    with pytest.raises(CheckpointError, match=r"makes \(1, 16, 16\) images; the data has \(1, 8, 8\)"):
        load_teacher(config, build_dataset(config.data), torch.device("cpu"))


def test_prediction_types_recover_the_clean_sample():
    x0, noise = torch.randn(4, *SHAPE, dtype=torch.float64), torch.randn(4, *SHAPE, dtype=torch.float64)
    sigma = torch.tensor([0.01, 0.5, 3.0, 150.0], dtype=torch.float64).reshape(4, 1, 1, 1)
    x = x0 + sigma * noise  # VE sample; VP: x_t = √ᾱ·x0 + √(1−ᾱ)·ε with √ᾱ = 1/√(1+σ²)
    root_alpha, root_one_minus_alpha = (1 + sigma**2).rsqrt(), sigma * (1 + sigma**2).rsqrt()
    v = root_alpha * noise - root_one_minus_alpha * x0
    torch.testing.assert_close(denoised_from_epsilon(x, sigma, noise), x0)
    torch.testing.assert_close(denoised_from_v(x, sigma, v), x0)
    torch.testing.assert_close(denoised_from_sample(x, sigma, x0), x0)


def test_export_help_names_exactly_the_methods_that_export(tmp_path):
    from torch_consistency.config import METHODS

    exported = set()
    for method in METHODS:
        config = load_config(None, [*IMAGES, f"train.method={method}", "cd.teacher=unused", "scm.mode=sct"])
        kind = {"teacher": "denoiser", "scm": "trigflow"}.get(method, "consistency")
        save_checkpoint(tmp_path / method, 1, config, SHAPE, 0, {"online": build_model(config, kind, SHAPE)}, {}, 1)
        try:
            export_diffusers(tmp_path / method, tmp_path / f"out-{method}")
            exported.add(method)
        except CheckpointError:
            pass
    result = subprocess.run([sys.executable, "-m", "torch_consistency", "export", "--help"], capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    help_text = " ".join(result.stdout.split())
    named = re.search(r"Methods that export: ([a-z, ]+) \(", help_text)
    assert named is not None and set(named.group(1).split(", ")) == exported == {"cd", "ct", "ict", "ect"}
