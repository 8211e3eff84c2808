"""Adversarial CD (cd.adversarial_weight): the hinge losses, the adaptive weight, the teacher-encoder discriminator
against a whole U-Net pass, the student's term, and training that resumes exactly."""

import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch

from helpers import TINY, UNET, raises_exactly, tiny_config, tiny_teacher, untrained_checkpoint
from torch_consistency.checkpoint import list_checkpoints, load_checkpoint
from torch_consistency.errors import ConfigError
from torch_consistency.nets.mlp import MLP
from torch_consistency.nets.teacher_discriminator import TeacherDiscriminator
from torch_consistency.nets.unet import build_unet
from torch_consistency.objectives import (
    adaptive_adversarial_weight,
    consistency_distillation_loss,
    discriminator_hinge_loss,
    generator_hinge_loss,
)
from torch_consistency.parameterization import Preconditioned
from torch_consistency.training.adversarial import Adversary
from torch_consistency.training.build import Teacher, build_method
from torch_consistency.training.loop import train

ADVERSARIAL_CD = [*UNET, "train.method=cd", "cd.teacher=t", "cd.adversarial_weight=0.5"]


def test_hinge_losses_at_worked_values():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 1.0])
    # real: max(0, 1 − 2), max(0, 0.5), max(0, 2) → 2.5/3; fake: max(0, −1), max(0, 1), max(0, 2) → 3/3
    assert discriminator_hinge_loss(real, fake).item() == pytest.approx(2.5 / 3 + 1.0)
    assert generator_hinge_loss(fake).item() == pytest.approx(1 / 3)


def test_adaptive_weight_is_the_ratio_of_the_gradient_norms_at_the_last_layer():
    torch.manual_seed(0)
    weight = torch.randn(2, 3, requires_grad=True)
    x, y = torch.randn(3), torch.randn(2)
    reconstruction = (weight @ x - y).square().sum()  # ∇ = 2(Wx − y)xᵀ, norm 2‖Wx − y‖‖x‖
    adversarial = 3 * weight.sum()  # ∇ = 3·1, norm 3√6
    expected = 2 * (weight @ x - y).norm() * x.norm() / (3 * math.sqrt(6))
    measured = adaptive_adversarial_weight(reconstruction, adversarial, weight)
    assert measured.item() == pytest.approx(expected.item(), rel=1e-5)
    assert not measured.requires_grad
    flat = 0 * weight.sum()  # no adversarial gradient: the weight is capped
    assert adaptive_adversarial_weight(reconstruction, flat, weight, max_weight=7.0).item() == 7.0


def written_out_logits(discriminator: TeacherDiscriminator, x_noisy, sigma, label: int | None = None):
    """Σ_l mean_hw h_l(a_l) with a_l the down blocks' and the middle block's outputs of the whole U-Net pass on
    c_in·x = x/√(σ² + σ_d²) at c_noise = ln(σ)/4 (EDM's), the up path included."""
    unet = discriminator.teacher.net.unet
    taps: list = []
    blocks = [*unet.down_blocks, unet.mid_block]
    hooks = [b.register_forward_hook(lambda m, a, o: taps.append(o[0] if isinstance(o, tuple) else o)) for b in blocks]
    labels = None if label is None else torch.full((x_noisy.shape[0],), label)
    c_in = 1 / (sigma**2 + 0.5**2).sqrt()
    unet(x_noisy * c_in[:, None, None, None], sigma.log() / 4, class_labels=labels)
    for hook in hooks:
        hook.remove()
    return sum(head(tap).mean(dim=(1, 2, 3)) for head, tap in zip(discriminator.heads, taps, strict=True))


def test_the_discriminator_is_heads_on_the_teachers_encoder():
    discriminator = TeacherDiscriminator(tiny_teacher())
    x, sigma = torch.randn(3, 1, 8, 8), torch.tensor([0.1, 1.0, 5.0])
    torch.testing.assert_close(discriminator(x, sigma), written_out_logits(discriminator, x, sigma))
    conditional = TeacherDiscriminator(tiny_teacher(num_classes=4), null_label=3)
    torch.testing.assert_close(conditional(x, sigma), written_out_logits(conditional, x, sigma, label=3))
    assert not torch.allclose(conditional(x, sigma), written_out_logits(conditional, x, sigma, label=0))


def test_only_the_heads_are_trained_and_saved_and_the_up_path_never_runs():
    teacher = tiny_teacher()
    discriminator = TeacherDiscriminator(teacher)
    assert discriminator.state_dict() and all(key.startswith("heads.") for key in discriminator.state_dict())
    assert {id(p) for p in discriminator.parameters()} == {id(p) for p in discriminator.heads.parameters()}
    calls = []
    teacher.net.unet.up_blocks[0].register_forward_hook(lambda *_: calls.append(1))
    x = torch.randn(2, 1, 8, 8, requires_grad=True)
    discriminator(x, torch.tensor([0.5, 2.0])).sum().backward()
    assert calls == []
    assert x.grad is not None and x.grad.abs().sum() > 0  # the student's outputs get the discriminator's gradient
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in discriminator.heads.parameters())


def test_refuses_a_teacher_without_a_unet():
    mlp_teacher = Preconditioned(MLP(2, width=16, depth=1), "denoiser", 0.5, 0.002)
    with raises_exactly(
        ConfigError, "cd.adversarial_weight > 0 needs a U-Net teacher (a teacher checkpoint or a UNet2DModel)"
    ):
        TeacherDiscriminator(mlp_teacher)


def student_outputs():
    torch.manual_seed(1)
    student = Preconditioned(build_unet("tiny", (1, 8, 8)), "consistency", 0.5, 0.002, "edm")
    x_sigma, sigma = torch.randn(4, 1, 8, 8), torch.tensor([0.5, 1.0, 2.0, 4.0])
    fake = student(x_sigma, sigma)
    cd_loss = (fake - torch.randn_like(fake)).square().mean()
    return student, fake, cd_loss


def test_the_term_steps_the_discriminator_then_pulls_the_student_by_weight_times_the_cd_gradient():
    adversary = Adversary.create(tiny_teacher(), None, lr=1e-2)
    student, fake, cd_loss = student_outputs()
    real = torch.randn(4, 1, 8, 8)
    sigma_d, real_noise, fake_noise = torch.tensor([0.3, 0.3, 1.0, 1.0]), torch.randn_like(real), torch.randn_like(real)
    before = {k: v.clone() for k, v in adversary.discriminator.state_dict().items()}
    expected_d_loss = discriminator_hinge_loss(
        adversary.discriminator(real + sigma_d[:, None, None, None] * real_noise, sigma_d),
        adversary.discriminator(fake.detach() + sigma_d[:, None, None, None] * fake_noise, sigma_d),
    )
    last = student.net.unet.conv_out.weight
    term = adversary.term(cd_loss, real, fake, sigma_d, real_noise, fake_noise, last, weight=0.5)
    assert adversary.last.discriminator_loss.item() == pytest.approx(expected_d_loss.item())
    assert any(not torch.equal(before[k], v) for k, v in adversary.discriminator.state_dict().items())
    heads_grads = [p.grad.clone() for p in adversary.discriminator.parameters()]
    # by the adaptive weight a: ‖∇_L (λ·a·ℒ_G)‖ = λ‖∇_L ℒ_CD‖ at the last layer L
    term_grad = torch.autograd.grad(term, last, retain_graph=True)[0]
    cd_grad = torch.autograd.grad(cd_loss, last, retain_graph=True)[0]
    assert term_grad.norm().item() == pytest.approx(0.5 * cd_grad.norm().item(), rel=1e-4)
    # the term's value is λ·a·(−E[D(f_θ + σ_d n)]) with the discriminator after its step
    with torch.no_grad():
        logits = adversary.discriminator(fake + sigma_d[:, None, None, None] * fake_noise, sigma_d)
    assert term.item() == pytest.approx(0.5 * adversary.last.adaptive_weight.item() * -logits.mean().item(), rel=1e-5)
    term.backward()
    assert all(torch.equal(p.grad, g) for p, g in zip(adversary.discriminator.parameters(), heads_grads, strict=True))


def method_loss_and_cd_loss(method, teacher, draws):
    """A tiny student, the method's loss on its draws and the CD loss written out on the same draws."""
    torch.manual_seed(2)
    student = Preconditioned(build_unet("tiny", (1, 8, 8)), "consistency", 0.5, 0.002, "edm")
    x0 = torch.randn(4, 1, 8, 8)
    loss = method.loss(student, student, x0, draws, step=0)
    sigma, sigma_next, weight = method.pair(0, draws, "uniform")
    cd = consistency_distillation_loss(
        student, student, teacher, method.teacher_step, x0, draws["noise"], sigma, sigma_next, method.distance, weight
    )
    return student, loss, cd


def test_cd_with_the_term_adds_draws_after_the_others_and_its_term_to_the_cd_loss():
    teacher = tiny_teacher()
    plain = build_method(tiny_config(*ADVERSARIAL_CD[:-1]), Teacher(teacher, None, None, (1, 8, 8)))
    method = build_method(tiny_config(*ADVERSARIAL_CD), Teacher(teacher, None, None, (1, 8, 8)))
    assert plain.adversary is None and method.adversary is not None
    draws = method.draw(0, 4, (1, 8, 8), torch.Generator().manual_seed(3))
    plain_draws = plain.draw(0, 4, (1, 8, 8), torch.Generator().manual_seed(3))
    assert set(draws) - set(plain_draws) == {"adversarial_normal", "real_noise", "fake_noise"}
    assert all(torch.equal(draws[k], v) for k, v in plain_draws.items())  # the other draws keep their streams
    student, loss, cd = method_loss_and_cd_loss(method, teacher, draws)
    term = loss - cd  # a scalar added to every sample's CD loss
    assert torch.allclose(term, term[0].expand(4)) and term[0].abs() > 0
    last = student.net.unet.conv_out.weight
    term_grad = torch.autograd.grad(term[0], last, retain_graph=True)[0]
    cd_grad = torch.autograd.grad(cd.mean(), last)[0]
    assert term_grad.norm().item() == pytest.approx(0.5 * cd_grad.norm().item(), rel=1e-4)
    assert set(method.log_values(0)) == {"N", "mu", "discriminator_loss", "adversarial_a"}


def test_one_step_fakes_are_the_students_one_step_samples():
    teacher = tiny_teacher()
    method = build_method(tiny_config(*ADVERSARIAL_CD, "cd.adversarial_fakes=one-step"),
                          Teacher(teacher, None, None, (1, 8, 8)))  # fmt: skip
    draws = method.draw(0, 4, (1, 8, 8), torch.Generator().manual_seed(3))
    assert "generator_noise" in draws
    student, loss, cd = method_loss_and_cd_loss(method, teacher, draws)
    # the term is λ·a·(−E[D(f_θ(80·g, 80) + σ_d·n)]) with the discriminator after its step
    sigma_d = torch.exp(-1.2 + 1.2 * draws["adversarial_normal"])
    with torch.no_grad():
        one_step = student(80.0 * draws["generator_noise"], torch.full((4,), 80.0))
        logits = method.adversary.discriminator(one_step + sigma_d[:, None, None, None] * draws["fake_noise"], sigma_d)
    expected = 0.5 * method.adversary.last.adaptive_weight * -logits.mean()
    torch.testing.assert_close((loss - cd)[0], expected, rtol=1e-5, atol=1e-7)


def losses(run):
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]


def test_adversarial_cd_trains_and_resumes_exactly(tmp_path):
    train(tiny_config(*UNET), tmp_path / "teacher", progress=False)
    config = tiny_config(*ADVERSARIAL_CD, f"cd.teacher={tmp_path / 'teacher'}", "train.total_steps=4",
                         "train.checkpoint_every=2")  # fmt: skip
    train(config, tmp_path / "straight", progress=False)
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    shutil.rmtree(list_checkpoints(tmp_path / "resumed")[-1])
    train(None, tmp_path / "resumed", resume=True, progress=False)
    straight = load_checkpoint(tmp_path / "straight", with_training_state=True)
    resumed = load_checkpoint(tmp_path / "resumed", with_training_state=True)
    for weight_set, tensors in straight.weights.items():
        for name, tensor in tensors.items():
            assert torch.equal(tensor, resumed.weights[weight_set][name]), (weight_set, name)
    heads = straight.extra["training_state"]["adversary"]["discriminator"]
    assert heads and all(
        torch.equal(t, resumed.extra["training_state"]["adversary"]["discriminator"][k]) for k, t in heads.items()
    )
    assert losses(tmp_path / "straight") == losses(tmp_path / "resumed")
    logged = json.loads((tmp_path / "straight" / "log.jsonl").read_text().splitlines()[-1])
    assert 0 <= logged["discriminator_loss"] and logged["adversarial_a"] > 0


def test_class_conditional_data_needs_a_teacher_with_a_null_class():
    conditional = [*ADVERSARIAL_CD, "network.class_conditional=true"]
    with pytest.raises(ConfigError, match="need a teacher with a null class"):
        build_method(tiny_config(*conditional), Teacher(tiny_teacher(num_classes=10), None, None, (1, 8, 8)), 10)
    config = tiny_config(*conditional, "teacher.label_dropout=0.1")
    method = build_method(config, Teacher(tiny_teacher(num_classes=11), None, None, (1, 8, 8)), num_classes=10)
    assert method.adversary.discriminator.null_label == 10


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["cd.adversarial_weight=-1"], r"cd\.adversarial_weight must lie in \[0, inf\)"),
        (["cd.discriminator_lr=0"], r"cd\.discriminator_lr must lie in \(0, inf\)"),
        (["cd.adversarial_weight=1", "data.name=eight_gaussians"], "cd.adversarial_weight > 0 needs images"),
        (["cd.adversarial_fakes=samples"], "cd.adversarial_fakes"),
    ],
)
def test_config_refuses(overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(*overrides)


def test_two_ranks_are_refused_before_any_work(tmp_path):
    untrained_checkpoint(tmp_path / "teacher", (1, 8, 8), *UNET, "train.method=teacher")
    overrides = (*TINY, *UNET, f"cd.teacher={tmp_path / 'teacher'}", "cd.adversarial_weight=0.5")
    sets = [item for o in overrides for item in ("--set", o)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "torch_consistency", "train", "cd", "--out", str(tmp_path / "run"), "--no-progress", *sets]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode != 0
    assert "cd.adversarial_weight > 0 trains on one process" in result.stderr
    assert not (tmp_path / "run").exists()
