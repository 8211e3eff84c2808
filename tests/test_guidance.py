"""Classifier-free guidance and its distillation: D_w, label dropout, w draws, guided CD/sCD steps, the w input."""

import math

import pytest
import torch

from helpers import tiny_config
from torch_consistency.config import DistillationConfig
from torch_consistency.configs import load_config
from torch_consistency.gaussian import GaussianMixture, gaussian_denoiser
from torch_consistency.guidance import guided_denoised, guided_denoiser, network_calls
from torch_consistency.nets import build_model
from torch_consistency.seeding import STREAM_NOISE, derive_seed, step_generator
from torch_consistency.training.improved import ContinuousTimeConsistency
from torch_consistency.training.methods import ConsistencyDistillation, TeacherTraining, draw_guidance

MEANS = torch.tensor([[0.6, -0.2, 0.1], [-0.4, 0.5, 0.0], [0.1, 0.1, -0.7]], dtype=torch.float64)
STD = 0.3
NULL = len(MEANS)  # the null class ∅ is the index after the real classes


def class_oracle(x, sigma, labels):
    """Exact D(x, σ, c) of class-conditional Gaussians N(μ_c, s²I), and D(x, σ, ∅) of their equal mixture."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype).expand(x.shape[0])
    mixture = GaussianMixture.isotropic(MEANS, STD)
    out = mixture.denoiser(x, sigma)
    real = labels < NULL
    out[real] = gaussian_denoiser(x[real], sigma[real], MEANS[labels[real]].to(x.dtype), STD)
    return out


def test_guided_denoiser_is_the_cfg_formula_on_an_exact_oracle():
    """D_w = D_∅ + w(D_c − D_∅) with D_c the class's Gaussian denoiser and D_∅ the mixture's, written out."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, generator=generator, dtype=torch.float64)
    sigma = torch.tensor([0.1, 0.5, 1.0, 2.0, 0.3, 5.0], dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    w = torch.tensor([0.0, 0.5, 1.0, 2.0, 3.5, 4.0], dtype=torch.float64)
    conditional = MEANS[labels] + STD**2 / (STD**2 + sigma[:, None] ** 2) * (x - MEANS[labels])
    unconditional = GaussianMixture.isotropic(MEANS, STD).denoiser(x, sigma)
    expected = unconditional + w[:, None] * (conditional - unconditional)
    got = guided_denoiser(class_oracle, labels, NULL, w)(x, sigma)
    assert torch.allclose(got, expected, rtol=0, atol=1e-12)
    # one w for the batch, as sampling uses it
    got = guided_denoiser(class_oracle, labels, NULL, 2.5)(x, sigma)
    assert torch.allclose(got, unconditional + 2.5 * (conditional - unconditional), rtol=0, atol=1e-12)


def test_w_zero_and_one_are_exactly_the_unconditional_and_conditional_denoisers():
    generator = torch.Generator().manual_seed(1)
    x, sigma = torch.randn(5, 3, generator=generator), torch.full((5,), 0.7)
    labels = torch.tensor([0, 1, 2, 1, 0])
    conditional = class_oracle(x, sigma, labels)
    unconditional = class_oracle(x, sigma, torch.full_like(labels, NULL))
    assert not torch.allclose(conditional, unconditional)
    assert torch.equal(guided_denoiser(class_oracle, labels, NULL, 0.0)(x, sigma), unconditional)
    assert torch.equal(guided_denoiser(class_oracle, labels, NULL, 1.0)(x, sigma), conditional)
    per_sample = guided_denoised(unconditional, conditional, torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0]))
    assert torch.equal(per_sample[[0, 2]], unconditional[[0, 2]])
    assert torch.equal(per_sample[[1, 3, 4]], conditional[[1, 3, 4]])
    assert [network_calls(w) for w in (None, 0.0, 1.0, 2.0, torch.ones(3))] == [1, 1, 1, 2, 2]


def teacher_config(*overrides):
    return load_config(None, ["data.name=digits", "network.class_conditional=true", *overrides])


def test_label_dropout_drops_the_expected_fraction_from_the_steps_noise_stream():
    """u ~ U[0, 1) is drawn from the (seed, step) noise stream after σ's normal and z; c → ∅ exactly where u < p."""
    config = teacher_config("teacher.label_dropout=0.25", "train.seed=7")
    method = TeacherTraining(config, num_classes=10)
    batch, shape, step = 20_000, (1, 2, 2), 13
    draws = method.draw(step, batch, shape, step_generator(7, step, STREAM_NOISE))
    generator = torch.Generator().manual_seed(derive_seed(7, step, STREAM_NOISE))  # the stream, replayed by hand
    torch.randn(batch, generator=generator), torch.randn(batch, *shape, generator=generator)
    uniform = torch.rand(batch, generator=generator)
    assert torch.equal(draws["label_uniform"], uniform)
    assert not torch.equal(
        method.draw(step + 1, batch, shape, step_generator(7, step + 1, STREAM_NOISE))["label_uniform"], uniform
    )

    seen = {}

    def spy(x, sigma, labels):
        seen["labels"] = labels
        return x

    labels = torch.arange(batch) % 10
    x0 = torch.zeros(batch, *shape)
    method.loss(spy, spy, x0, draws, step, labels=labels)
    expected = torch.where(uniform < 0.25, torch.tensor(10), labels)
    assert torch.equal(seen["labels"], expected)
    dropped = (seen["labels"] == 10).float().mean().item()
    assert abs(dropped - 0.25) < 4 * math.sqrt(0.25 * 0.75 / batch)
    # without dropout nothing extra is drawn, so the streams of existing teacher runs are unchanged
    plain = TeacherTraining(teacher_config(), num_classes=10).draw(
        step, 8, shape, step_generator(7, step, STREAM_NOISE)
    )
    assert set(plain) == {"normal", "noise"}


def cd_config(*overrides):
    return teacher_config(
        "train.method=cd", "cd.teacher=exact", "teacher.label_dropout=0.1", "cd.num_points=6", *overrides
    )


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_a_guided_cd_step_follows_the_guided_teacher(solver):
    """The target pass sees x̂ = one Euler/Heun step of D_w from x_σ (EDM's formulas written out), with the drawn w
    and labels; the student gets the same w as its input."""
    config = cd_config(f"cd.solver={solver}", "cd.guidance=input", "cd.guidance_min=0.5", "cd.guidance_max=4")
    method = ConsistencyDistillation(config, class_oracle, num_classes=NULL)
    batch = 64
    draws = method.draw(3, batch, (3,), torch.Generator().manual_seed(5))
    w = draws["guidance"]
    assert w.min() >= 0.5 and w.max() < 4 and w.std() > 0.5  # U[0.5, 4) per sample
    x0 = MEANS[torch.arange(batch) % NULL].float()
    labels = torch.arange(batch) % NULL
    calls = []

    def network(x, sigma, labels, guidance=None):
        calls.append((x.clone(), sigma.clone(), labels, guidance))
        return x

    method.loss(network, network, x0, draws, 3, labels=labels)
    (x_sigma, sigma, online_labels, online_w), (x_next, sigma_next, target_labels, target_w) = calls
    assert torch.equal(online_labels, labels) and torch.equal(target_labels, labels)
    assert torch.equal(online_w, w) and torch.equal(target_w, w)

    def d_w(x, s):  # D_∅ + w(D_c − D_∅) with the oracle's two denoisers
        unconditional = class_oracle(x.double(), s.double(), torch.full_like(labels, NULL))
        conditional = class_oracle(x.double(), s.double(), labels)
        return unconditional + w.double()[:, None] * (conditional - unconditional)

    x, s, s_next = x_sigma.double(), sigma.double(), sigma_next.double()
    slope = (x - d_w(x, s)) / s[:, None]
    euler = x + (s_next - s)[:, None] * slope
    if solver == "euler":
        expected = euler
    else:
        slope_next = (euler - d_w(euler, s_next)) / s_next[:, None]
        expected = x + (s_next - s)[:, None] * (slope + slope_next) / 2
    assert torch.allclose(x_next.double(), expected, rtol=1e-5, atol=1e-5)  # the step runs in float32
    # the unguided target differs (the test can tell the two apart)
    conditional_step = x + (s_next - s)[:, None] * (x - class_oracle(x, s, labels)) / s[:, None]
    assert (x_next.double() - conditional_step).abs().max() > 1e-2


def test_a_fixed_guidance_student_takes_no_w_and_its_teacher_uses_the_fixed_w():
    config = cd_config("cd.solver=euler", "cd.guidance=fixed", "cd.guidance_min=3", "cd.guidance_max=3")
    method = ConsistencyDistillation(config, class_oracle, num_classes=NULL)
    draws = method.draw(0, 16, (3,), torch.Generator().manual_seed(2))
    assert "guidance" not in draws
    labels = torch.arange(16) % NULL
    calls = []

    def network(x, sigma, labels, **options):
        calls.append((x.clone(), sigma.clone(), options))
        return x

    method.loss(network, network, torch.zeros(16, 3), draws, 0, labels=labels)
    (x, sigma, online_options), (x_next, sigma_next, _) = calls
    assert online_options == {}
    x, s, s_next = x.double(), sigma.double(), sigma_next.double()
    unconditional = class_oracle(x, s, torch.full_like(labels, NULL))
    d_w = unconditional + 3 * (class_oracle(x, s, labels) - unconditional)
    assert torch.allclose(x_next.double(), x + (s_next - s)[:, None] * (x - d_w) / s[:, None], atol=1e-5)


def conditional_mlp(config, parameterization, num_classes=NULL):
    torch.manual_seed(0)
    model = build_model(config, parameterization, (3,), num_classes)
    with torch.no_grad():  # distinct class embeddings and a w embedding that is not zero
        for module in model.modules():
            if isinstance(module, torch.nn.Embedding):
                module.weight.normal_(0, 2.0)
        for name, parameter in model.named_parameters():
            if "guidance_embedding" in name:
                parameter.normal_(0, 1.0)
    return model


def test_the_cd_teacher_receives_the_labels():
    """With a student that ignores labels, the CD loss changes when only the labels change: the teacher sees them."""
    config = cd_config("cd.solver=heun")
    teacher = conditional_mlp(teacher_config("teacher.label_dropout=0.1"), "denoiser")
    method = ConsistencyDistillation(config, teacher, num_classes=NULL)
    draws = method.draw(0, 32, (3,), torch.Generator().manual_seed(0))
    x0 = torch.randn(32, 3, generator=torch.Generator().manual_seed(1))

    def student(x, sigma, labels=None):  # label-blind
        return x * 0.5

    first = method.loss(student, student, x0, draws, 0, labels=torch.zeros(32, dtype=torch.long))
    second = method.loss(student, student, x0, draws, 0, labels=torch.full((32,), 2))
    assert (first - second).abs().max() > 1e-4


def test_the_scd_teacher_receives_the_labels_and_guidance():
    config = teacher_config(
        "train.method=scm", "scm.mode=scd", "scm.teacher=exact", "teacher.label_dropout=0.1",
        "scm.guidance=input", "scm.guidance_min=0", "scm.guidance_max=4", "diffusion.noise_conditioning=edm",
    )  # fmt: skip
    method = ContinuousTimeConsistency(config, class_oracle, num_classes=NULL)
    draws = method.draw(0, 32, (3,), torch.Generator().manual_seed(0))
    assert draws["guidance"].shape == (32,)
    x0 = MEANS[torch.arange(32) % NULL].float()
    student_calls = []

    def student(x, t, labels, guidance=None, with_log_weight=False):  # F = 0: the tangent carries the teacher
        student_calls.append((labels, guidance))
        velocity = torch.zeros_like(x) + 0 * t[:, None]
        return (velocity, torch.zeros_like(t)) if with_log_weight else velocity

    labels = torch.arange(32) % NULL
    first = method.loss(student, student, x0, draws, 10_000, labels=labels)
    second = method.loss(student, student, x0, draws, 10_000, labels=(labels + 1) % NULL)
    assert (first - second).abs().max() > 1e-4
    assert all(torch.equal(w, draws["guidance"]) for _, w in student_calls)
    draws_w1 = {**draws, "guidance": torch.ones(32)}  # at w = 1 the teacher is D_c itself
    config_plain = teacher_config(
        "train.method=scm", "scm.mode=scd", "scm.teacher=exact", "diffusion.noise_conditioning=edm"
    )
    plain = ContinuousTimeConsistency(config_plain, class_oracle, num_classes=NULL)
    guided_at_one = method.loss(student, student, x0, draws_w1, 10_000, labels=labels)
    assert torch.allclose(guided_at_one, plain.loss(student, student, x0, draws, 10_000, labels=labels), atol=1e-6)


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_the_students_w_input_changes_its_output_and_starts_at_zero(kind):
    network = ["network.kind=unet", "network.preset=tiny"] if kind == "unet" else []
    config = teacher_config(
        "train.method=cd", "cd.teacher=exact", "teacher.label_dropout=0.1", "cd.guidance=input",
        "cd.guidance_min=0", "cd.guidance_max=4", *network,
    )  # fmt: skip
    shape = (1, 8, 8)
    torch.manual_seed(0)
    model = build_model(config, "consistency", shape, 10)
    x, sigma, labels = torch.randn(4, *shape), torch.full((4,), 2.0), torch.tensor([0, 3, 10, 9])

    def at(w):
        return model(x, sigma, labels, guidance=torch.full((4,), w))

    assert torch.equal(at(0.0), at(3.0))  # a fresh w embedding is zero: the student starts as its teacher
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "guidance_embedding" in name:
                parameter.normal_(0, 1.0)
    assert (at(0.0) - at(3.0)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="guidance"):
        model(x, sigma, labels)
    if kind == "unet":  # the UNet2DModel is untouched: its state dict is diffusers' own, and no hook is left behind
        from diffusers import UNet2DModel

        unet = model.net.unet
        assert set(unet.state_dict()) == set(UNet2DModel(**unet.config).state_dict())
        assert not unet.time_embedding._forward_pre_hooks


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_the_w_embedding_learns_at_its_multiple_of_the_learning_rate(scale):
    """Adam's first step moves each weight by lr·|g|/(|g| + ε), within 1 % of lr where |g| > 1e-6: by
    optim.guidance_lr_scale × the schedule's lr (here the warm-up's lr/3) for the w embedding, by lr for the rest."""
    from torch_consistency.training.trainer import Trainer

    lr = 1e-3
    config = cd_config(
        "cd.guidance=input", "cd.guidance_min=0", "cd.guidance_max=4", "optim.optimizer=adam", f"optim.lr={lr}",
        "optim.warmup_steps=3", f"optim.guidance_lr_scale={scale}", "network.embedding_dim=16",
    )  # fmt: skip
    method = ConsistencyDistillation(config, class_oracle, num_classes=NULL)
    torch.manual_seed(0)
    trainer = Trainer.create(config, method, (3,), NULL, torch.device("cpu"))
    assert len(trainer.optimizer.param_groups) == (1 if scale == 1 else 2)  # unscaled runs resume as before
    x0, labels = MEANS[torch.arange(64) % NULL].float(), torch.arange(64) % NULL
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.step(0, x0, labels, method.draw(0, 64, (3,), torch.Generator().manual_seed(0)))
    moves: dict[bool, list[torch.Tensor]] = {True: [], False: []}
    for name, p in trainer.model.named_parameters():
        delta = (p.detach() - before[name]).abs()
        moves["guidance_embedding." in name].append(delta[delta > 1e-9])
    w_moves, rest_moves = torch.cat(moves[True]), torch.cat(moves[False])
    assert w_moves.numel() > 100 and rest_moves.numel() > 100
    assert torch.median(w_moves).item() == pytest.approx(scale * lr / 3, rel=1e-2)
    assert torch.median(rest_moves).item() == pytest.approx(lr / 3, rel=1e-2)


@pytest.mark.parametrize(("unconditional", "conditional"), [(0.3, 0.0), (0.3, 0.2), (0.0, 0.25)])
def test_the_anchor_fractions_set_w_to_zero_then_one_where_a_last_drawn_uniform_falls(unconditional, conditional):
    """w ~ U[0, 4) from the stream as without the fractions, then w = 0 exactly where u < p_∅ and w = 1 exactly where
    p_∅ ≤ u < p_∅ + p_c, for u ~ U[0, 1) drawn after everything else; the teacher step at those samples follows D_∅
    and D_c."""
    batch, seed = 4000, 11
    fractions = (f"cd.unconditional_fraction={unconditional}", f"cd.conditional_fraction={conditional}")
    config = cd_config("cd.guidance=input", "cd.guidance_min=0", "cd.guidance_max=4", *fractions)
    plain = ConsistencyDistillation(cd_config("cd.guidance=input", "cd.guidance_min=0", "cd.guidance_max=4"),
                                    class_oracle, num_classes=NULL)  # fmt: skip
    method = ConsistencyDistillation(config, class_oracle, num_classes=NULL)
    draws = method.draw(2, batch, (3,), torch.Generator().manual_seed(seed))
    stream = torch.Generator().manual_seed(seed)  # replayed: the draws without the fractions, then one uniform
    before = plain.draw(2, batch, (3,), stream)
    uniform = torch.rand(batch, generator=stream)
    assert torch.equal(draws["index"], before["index"]) and torch.equal(draws["noise"], before["noise"])
    zero = uniform < unconditional
    one = (uniform >= unconditional) & (uniform < unconditional + conditional)
    rest = ~zero & ~one
    assert torch.equal(draws["guidance"][zero], torch.zeros(int(zero.sum())))
    assert torch.equal(draws["guidance"][one], torch.ones(int(one.sum())))
    assert torch.equal(draws["guidance"][rest], before["guidance"][rest])
    for share, fraction in ((zero, unconditional), (one, conditional)):
        assert abs(share.double().mean().item() - fraction) <= 4 * math.sqrt(fraction * (1 - fraction) / batch)

    seen = []

    def network(x, sigma, labels, guidance=None):
        seen.append((x.clone(), sigma.clone()))
        return x

    labels, x0 = torch.arange(batch) % NULL, MEANS[torch.arange(batch) % NULL].float()
    method.loss(network, network, x0, draws, 2, labels=labels)
    (x_sigma, sigma), (x_next, sigma_next) = seen
    anchors = ((zero, torch.full((batch,), NULL)), (one, labels))  # D_∅ (the equal mixture's denoiser), D_c
    for anchor, label in (pair for pair in anchors if pair[0].any()):
        x, s, s_next, c = x_sigma[anchor].double(), sigma[anchor].double(), sigma_next[anchor].double(), label[anchor]
        euler = x + (s_next - s)[:, None] * (x - class_oracle(x, s, c)) / s[:, None]
        slope_next = (euler - class_oracle(euler, s_next, c)) / s_next[:, None]
        heun = x + (s_next - s)[:, None] * ((x - class_oracle(x, s, c)) / s[:, None] + slope_next) / 2
        assert torch.allclose(x_next[anchor].double(), heun, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_with_an_unconditional_fraction_the_student_sees_the_null_class_exactly_where_w_is_zero(kind):
    network = ["network.kind=unet", "network.preset=tiny"] if kind == "unet" else []
    guided = ["train.method=cd", "cd.teacher=exact", "teacher.label_dropout=0.1", "cd.guidance=input",
              "cd.guidance_min=0", "cd.guidance_max=4", *network]  # fmt: skip
    shape, null = (1, 8, 8), 10
    torch.manual_seed(0)
    with_null = build_model(teacher_config(*guided, "cd.unconditional_fraction=0.2"), "consistency", shape, 10)
    without = build_model(teacher_config(*guided), "consistency", shape, 10)
    without.load_state_dict(with_null.state_dict())  # the same weights: only the label at w = 0 differs
    with torch.no_grad():
        for name, parameter in with_null.named_parameters():
            if "guidance_embedding" in name:
                parameter.normal_(0, 1.0)
    without.load_state_dict(with_null.state_dict())
    x, sigma = torch.randn(4, *shape), torch.full((4,), 2.0)
    labels, nulls = torch.tensor([0, 3, 7, 9]), torch.full((4,), null)
    w = torch.tensor([0.0, 2.0, 0.0, 1.0])
    mixed = with_null(x, sigma, labels, guidance=w)
    zero = w == 0
    assert torch.allclose(mixed[zero], without(x, sigma, nulls, guidance=w)[zero], atol=1e-6)
    assert torch.allclose(mixed[~zero], without(x, sigma, labels, guidance=w)[~zero], atol=1e-6)
    assert (mixed[zero] - without(x, sigma, labels, guidance=w)[zero]).abs().max() > 1e-3  # the label mattered


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["teacher.label_dropout=1.0"], "teacher.label_dropout must lie in [0, 1)"),
        (["cd.unconditional_fraction=0.2"], "needs cd.guidance = 'input' and cd.guidance_min = 0"),
        (["cd.guidance=input", "cd.guidance_min=1", "cd.guidance_max=4", "cd.unconditional_fraction=0.2"],
         "needs cd.guidance = 'input' and cd.guidance_min = 0"),
        (["cd.guidance=input", "cd.guidance_min=0", "cd.guidance_max=4", "cd.unconditional_fraction=1"],
         "cd.unconditional_fraction must lie in [0, 1)"),
        (["cd.guidance=input", "cd.guidance_min=1.5", "cd.guidance_max=4", "cd.conditional_fraction=0.2"],
         "needs cd.guidance = 'input' and cd.guidance_min ≤ 1 ≤ cd.guidance_max"),
        (["cd.conditional_fraction=0.2"], "needs cd.guidance = 'input'"),
        (["cd.guidance=input", "cd.guidance_min=0", "cd.guidance_max=4", "cd.unconditional_fraction=0.5",
          "cd.conditional_fraction=0.5"], "must stay below 1, got 1"),
        (["network.class_conditional=false", "teacher.label_dropout=0.2"], "needs network.class_conditional"),
        (["cd.guidance=cfg"], "cd.guidance = 'cfg' is unknown"),
        (["cd.guidance=input", "cd.guidance_min=2", "cd.guidance_max=2"], "give a range"),
        (["cd.guidance=fixed", "cd.guidance_min=2", "cd.guidance_max=3"], "uses one w"),
        (["cd.guidance_min=3", "cd.guidance_max=2"], "need 0 ≤ cd.guidance_min ≤ cd.guidance_max"),
        (["train.method=scm", "scm.guidance=input", "scm.guidance_max=4"], "needs scm.mode = 'scd'"),
        (["train.method=cd", "cd.teacher=x", "cd.guidance=input", "cd.guidance_min=2", "cd.guidance_max=4"],
         "outside the trained range"),
        (["sampling.guidance=-1"], "sampling.guidance must lie in [0, inf)"),
        (["train.method=cd", "cd.teacher=x", "optim.guidance_lr_scale=10"], "guidance_lr_scale scales the learning"),
        (["optim.guidance_lr_scale=0"], "optim.guidance_lr_scale must lie in (0, inf)"),
    ],
)  # fmt: skip
def test_bad_guidance_settings_are_one_line_config_errors(overrides, message):
    from torch_consistency.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        teacher_config(*overrides)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_teacher_training_drops_labels_to_the_null_class_with_uniforms_drawn_after_the_others(dropout):
    """TeacherTraining: u ~ U[0, 1) drawn after σ's normal and the noise (runs without dropout keep their streams);
    the network sees c = ∅ (index num_classes) where u < p, its label elsewhere; the loss is EDM's with those."""
    config = tiny_config("train.method=teacher", "network.class_conditional=true", f"teacher.label_dropout={dropout}")
    method, batch = TeacherTraining(config, num_classes=3), 256
    draws = method.draw(0, batch, (2,), torch.Generator().manual_seed(0))
    stream = torch.Generator().manual_seed(0)
    normal, noise = torch.randn(batch, generator=stream), torch.randn(batch, 2, generator=stream)
    assert torch.equal(draws["normal"], normal) and torch.equal(draws["noise"], noise)
    labels, x0 = torch.arange(batch) % 3, torch.randn(batch, 2, generator=torch.Generator().manual_seed(1))
    if dropout > 0:
        uniform = torch.rand(batch, generator=stream)
        assert torch.equal(draws["label_uniform"], uniform)
        expected = torch.where(uniform < dropout, 3, labels)
        assert 0.3 < float((expected == 3).double().mean()) < 0.7
    else:
        assert "label_uniform" not in draws
        expected = labels
    seen = []

    def network(x, sigma, labels=None):
        seen.append(labels)
        return 0.5 * x + labels[:, None].to(x.dtype)

    loss = method.loss(network, network, x0, draws, 0, labels=labels)
    assert torch.equal(seen[0], expected)
    sigma = (normal * config.teacher.p_std + config.teacher.p_mean).exp()
    sigma_data = config.diffusion.sigma_data
    weight = (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
    x = x0 + sigma[:, None] * noise
    written_out = weight[:, None] * (0.5 * x + expected[:, None].float() - x0) ** 2
    torch.testing.assert_close(loss.reshape(batch), written_out.mean(1), rtol=1e-5, atol=1e-6)


def test_a_guided_students_w_comes_from_the_callers_generator_written_out():
    """w = w_min + (w_max − w_min)·u₁, then 0 where u₂ < p_∅ and 1 where p_∅ ≤ u₂ < p_∅ + p_c: u₁ and u₂ drawn in that
    order from the training step's generator, so a run repeats exactly (LCM §4.2)."""
    section = DistillationConfig(guidance="input", guidance_min=1.0, guidance_max=5.0, unconditional_fraction=0.2,
                                 conditional_fraction=0.3)  # fmt: skip
    torch.manual_seed(123)  # the global stream differs from the caller's: a draw from it would not match
    drawn = draw_guidance(section, 400, torch.Generator().manual_seed(7))["guidance"]
    generator = torch.Generator().manual_seed(7)
    first, second = torch.rand(400, generator=generator), torch.rand(400, generator=generator)
    expected = 1.0 + 4.0 * first
    expected[second < 0.2] = 0.0
    expected[(second >= 0.2) & (second < 0.5)] = 1.0
    assert torch.equal(drawn, expected)
    assert 0.1 < (drawn == 0).float().mean() < 0.3 and 0.2 < (drawn == 1).float().mean() < 0.4
