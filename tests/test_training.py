import json
import shutil

import pytest
import torch

from helpers import tiny_config
from torch_consistency.checkpoint import list_checkpoints, load_checkpoint, load_weights
from torch_consistency.data import build_dataset
from torch_consistency.errors import CheckpointError, ConfigError
from torch_consistency.evaluation.lowdim import consistency_error
from torch_consistency.nets import build_model
from torch_consistency.training.build import build_method, load_teacher
from torch_consistency.training.loop import train


def losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "overrides",
    [["train.method=teacher"], ["train.method=cd", "cd.teacher=exact", "cd.num_points=10"]],
    ids=["teacher", "cd"],
)
def test_losses_fall_on_a_short_run(tmp_path, overrides):
    """The loss on one fixed batch (fixed σ's and noise) is lower after 300 steps than for a fresh network."""
    config = tiny_config("train.total_steps=300", "train.checkpoint_every=300", *overrides)
    train(config, tmp_path / "run", progress=False)
    assert len(losses(tmp_path / "run")) == 300
    dataset = build_dataset(config.data)
    teacher = load_teacher(config, dataset, torch.device("cpu")) if config.train.method == "cd" else None
    method = build_method(config, teacher)
    x0 = dataset.sample(4096, torch.Generator().manual_seed(0))
    draws = method.draw(0, 4096, dataset.sample_shape, torch.Generator().manual_seed(1))

    def fixed_batch_loss(model):
        return method.loss(model, model, x0, draws, 0).mean().item()

    trained = load_checkpoint(tmp_path / "run").build_model("online")
    fresh = build_model(config, method.parameterization, dataset.sample_shape)
    # the teacher's loss has an irreducible part: compare the excess over the exact denoiser's loss
    floor = fixed_batch_loss(dataset.mixture.denoiser) if config.train.method == "teacher" else 0.0
    assert fixed_batch_loss(trained) - floor < 0.6 * (fixed_batch_loss(fresh) - floor)


def test_ct_learns_the_consistency_function_without_a_teacher(tmp_path):
    """CT's own loss is small for any smooth network; what must fall is the error against the exact ODE."""
    config = tiny_config("train.method=ct", "ct.s0=10", "ct.s1=10", "train.total_steps=300")
    train(config, tmp_path / "run", progress=False)
    dataset = build_dataset(config.data)
    x0 = dataset.sample(200, torch.Generator().manual_seed(0)).double()

    def error(model):
        model = model.double()
        return consistency_error(model, dataset.mixture.denoiser, x0, [0.5, 2.0, 10.0], 0.002, num_steps=128).mean

    trained = load_checkpoint(tmp_path / "run").build_model("online")
    assert error(trained) < 0.7 * error(build_model(config, "consistency", dataset.sample_shape))


def test_cd_student_starts_from_the_teacher_and_inherits_its_network(tmp_path):
    teacher_config = tiny_config("train.method=teacher", "network.width=24", "train.total_steps=20")
    train(teacher_config, tmp_path / "teacher", progress=False)
    config = tiny_config("train.method=cd", f"cd.teacher={tmp_path / 'teacher'}", "train.total_steps=1")
    config.optim.lr = 1e-12
    train(config, tmp_path / "cd", progress=False)
    teacher, student = load_checkpoint(tmp_path / "teacher"), load_checkpoint(tmp_path / "cd")
    assert student.config.network.width == 24
    for name, tensor in teacher.weights["ema-0.999"].items():
        assert torch.allclose(student.weights["online"][name], tensor, atol=1e-8)


@pytest.mark.parametrize(
    "overrides",
    [
        ["train.method=teacher"],
        ["train.method=ct", "network.dropout=0.2", "train.ema_rates=[0.9, 0.99]"],
        ["train.method=cd", "cd.teacher=exact", "cd.target_ema=0.9", "optim.warmup_steps=10", "optim.grad_clip=1.0"],
    ],
    ids=["teacher", "ct-dropout", "cd-target-ema"],
)
def test_resume_continues_exactly(tmp_path, overrides):
    config = tiny_config(*overrides)
    train(config, tmp_path / "straight", progress=False)
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    shutil.rmtree(list_checkpoints(tmp_path / "resumed")[-1])  # as if killed between steps 20 and 40
    train(None, tmp_path / "resumed", resume=True, progress=False)
    straight, resumed = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "resumed")
    assert resumed.step == straight.step == 40
    for weight_set, tensors in straight.weights.items():
        for name, tensor in tensors.items():
            assert torch.equal(tensor, resumed.weights[weight_set][name]), (weight_set, name)
    assert losses(tmp_path / "straight") == losses(tmp_path / "resumed")


def test_a_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path):
    train(tiny_config(), tmp_path / "run", progress=False)
    newest = list_checkpoints(tmp_path / "run")[-1] / "weights.safetensors"
    newest.write_bytes(newest.read_bytes()[:1000])
    assert load_checkpoint(tmp_path / "run").step == 20
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(newest.parent)


def test_foreign_and_missing_checkpoints(tmp_path):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "meta.json").write_text('{"format": "something-else"}')
    with pytest.raises(CheckpointError, match="not a torch-consistency checkpoint"):
        load_checkpoint(tmp_path / "foreign")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither"):
        load_checkpoint(tmp_path / "empty")


def test_weights_of_another_shape_are_refused(tmp_path):
    train(tiny_config("train.total_steps=1"), tmp_path / "run", progress=False)
    checkpoint = load_checkpoint(tmp_path / "run")
    other = tiny_config("network.width=16")
    model = build_model(other, "denoiser", checkpoint.sample_shape)
    with pytest.raises(CheckpointError, match="has shape"):
        load_weights(model, checkpoint.weights["online"], "test")


def test_an_existing_run_is_not_overwritten(tmp_path):
    train(tiny_config("train.total_steps=1"), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(tiny_config("train.total_steps=1"), tmp_path / "run", progress=False)


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    train(tiny_config("train.keep_checkpoints=1", "train.checkpoint_every=10"), tmp_path / "run", progress=False)
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-00000040"]


def test_a_teacher_for_other_data_is_refused(tmp_path):
    train(tiny_config("train.total_steps=1"), tmp_path / "teacher", progress=False)  # 2-D eight Gaussians
    config = tiny_config("train.method=cd", f"cd.teacher={tmp_path / 'teacher'}", "data.name=gmm", "data.dim=3")
    with pytest.raises(CheckpointError, match="trained on samples of shape"):
        train(config, tmp_path / "cd", progress=False)
    assert not (tmp_path / "cd").exists()


def test_preview_pictures_show_one_step_samples_of_the_first_ema(tmp_path):
    """train.sample_every writes RUN/samples/step-N.png: 1000 one-step samples (seed 0) of the first EMA at step N."""
    from torch_consistency.generate import sample_model
    from torch_consistency.plots import save_samples_picture

    config = tiny_config("train.method=ct", "train.total_steps=4", "train.checkpoint_every=2", "train.sample_every=2")
    train(config, tmp_path / "run", progress=False)
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == [
        "step-00000002.png",
        "step-00000004.png",
    ]
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoints" / "step-00000002")
    samples = sample_model(checkpoint.build_model("ema-0.999"), checkpoint.config, (2,), 0, 1000, steps=1, seed=0)
    expected = save_samples_picture(samples.x, tmp_path / "expected.png", title="step 2")
    assert (tmp_path / "run" / "samples" / "step-00000002.png").read_bytes() == expected.read_bytes()
