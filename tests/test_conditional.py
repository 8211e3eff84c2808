"""Class-conditional models end to end (digits, a tiny MLP): every method trains on the labels, guided CD and sCD
train, resume exactly and sample with guidance, `cm sample --label/--guidance`, and the requested-label rate."""

import copy
import json
import shutil

import numpy as np
import pytest
import torch

from torch_consistency.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from torch_consistency.cli import main as cm
from torch_consistency.configs import load_config
from torch_consistency.data import build_dataset
from torch_consistency.evaluation.classifier import ImageClassifier
from torch_consistency.evaluation.evaluate import sample_checkpoint
from torch_consistency.evaluation.features import classifier_extractor
from torch_consistency.evaluation.images import evaluate_image_checkpoint, label_rate, prepare_reference
from torch_consistency.generate import requested_labels
from torch_consistency.nets import build_model
from torch_consistency.seeding import STREAM_NOISE, step_generator
from torch_consistency.training.build import build_method
from torch_consistency.training.loop import train

DIGITS = [
    "data.name=digits", "network.class_conditional=true", "network.width=32", "network.depth=1",
    "network.embedding_dim=16", "optim.batch_size=16", "optim.lr=1e-3", "train.total_steps=4",
    "train.checkpoint_every=2", "train.keep_checkpoints=5",
]  # fmt: skip
GUIDED = ["guidance=input", "guidance_min=0", "guidance_max=4"]


def digits_config(*overrides):
    return load_config(None, [*DIGITS, *overrides])


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """A class-conditional digits teacher trained with label dropout: it has the null class."""
    folder = tmp_path_factory.mktemp("teacher") / "run"
    train(digits_config("train.method=teacher", "teacher.label_dropout=0.2", "train.total_steps=6"), folder,
          progress=False)  # fmt: skip
    return folder


def method_overrides(name, teacher):
    return {
        "teacher": ["train.method=teacher", "teacher.label_dropout=0.2"],
        "cd": ["train.method=cd", f"cd.teacher={teacher}"],
        "ct": ["train.method=ct"],
        "ict": ["train.method=ict"],
        "ect": ["train.method=ect", f"ect.teacher={teacher}", "ect.stage_steps=2"],
        "sct": ["train.method=scm", "diffusion.noise_conditioning=edm", "scm.tangent_warmup_steps=2"],
        "scd": ["train.method=scm", "scm.mode=scd", f"scm.teacher={teacher}", "scm.tangent_warmup_steps=2"],
        "cd-guided": ["train.method=cd", f"cd.teacher={teacher}", *(f"cd.{g}" for g in GUIDED)],
        "scd-guided": ["train.method=scm", "scm.mode=scd", f"scm.teacher={teacher}", *(f"scm.{g}" for g in GUIDED)],
    }[name]


def losses(run):
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", ["teacher", "cd", "ct", "ict", "ect", "sct", "scd"])
def test_every_method_trains_class_conditionally_and_its_loss_depends_on_the_labels(tmp_path, teacher_run, name):
    config = digits_config(*method_overrides(name, teacher_run), "train.total_steps=2")
    train(config, tmp_path / "run", progress=False)
    checkpoint = load_checkpoint(tmp_path / "run")
    assert checkpoint.num_classes == 10 and np.isfinite(losses(tmp_path / "run")).all()
    null_class = name in ("teacher", "cd", "ect", "scd")  # those with the dropout teacher's weights carry ∅ too
    embedding = next(t for k, t in checkpoint.weights["online"].items() if k.endswith("embed_class.weight"))
    assert embedding.shape[0] == 10 + null_class
    generated = sample_checkpoint(checkpoint, 6, labels=[3], steps=1, teacher_levels=2)
    assert torch.equal(generated.labels, torch.full((6,), 3)) and torch.isfinite(generated.x).all()

    # the labels reach the networks (and the teacher) in each method's loss
    dataset = build_dataset(checkpoint.config.data)
    teacher = None
    if name in ("cd", "scd"):
        from torch_consistency.training.build import load_teacher

        teacher = load_teacher(checkpoint.config, dataset, torch.device("cpu"))
    method = build_method(checkpoint.config, teacher, 10)
    model = checkpoint.build_model("online")
    with torch.no_grad():
        model.net.embed_class.weight.normal_(0, 1.0)  # make the classes differ a lot
    x0, _ = dataset.training_batch(0, 16, 0)
    draws = method.draw(0, 16, dataset.sample_shape, step_generator(0, 0, STREAM_NOISE))
    first = method.loss(model, model, x0, draws, 1, labels=torch.zeros(16, dtype=torch.long))
    second = method.loss(model, model, x0, draws, 1, labels=torch.full((16,), 7))
    assert (first - second).abs().max() > 1e-6


@pytest.mark.parametrize("name", ["cd-guided", "scd-guided"])
def test_guided_students_train_resume_exactly_and_sample_with_guidance(tmp_path, teacher_run, name):
    config = digits_config(*method_overrides(name, teacher_run))
    train(config, tmp_path / "straight", progress=False)
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    shutil.rmtree(list_checkpoints(tmp_path / "resumed")[-1])
    train(None, tmp_path / "resumed", resume=True, progress=False)
    straight, resumed = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "resumed")
    assert straight.step == resumed.step == 4
    for weight_set, tensors in straight.weights.items():
        for key, tensor in tensors.items():
            assert torch.equal(tensor, resumed.weights[weight_set][key]), (weight_set, key)
    assert losses(tmp_path / "straight") == losses(tmp_path / "resumed")
    # the w embedding trained (it starts at zero), and the checkpoint knows the guidance settings
    w_weights = [t for k, t in straight.weights["online"].items() if "guidance_embedding.linear" in k]
    assert w_weights and all(t.abs().max() > 0 for t in w_weights)
    section = straight.config.cd if name == "cd-guided" else straight.config.scm
    assert (section.guidance, section.guidance_min, section.guidance_max) == ("input", 0.0, 4.0)
    # `cm sample --guidance` needs no other flag
    out = tmp_path / "w4"
    assert cm(["sample", "--checkpoint", str(tmp_path / "straight"), "--label", "all", "--guidance", "4",
               "--steps", "2", "--num", "20", "--out", str(out)]) == 0  # fmt: skip
    arrays = np.load(out / "samples.npz")
    assert arrays["arr_1"].tolist() == [c for c in range(10) for _ in range(2)] and float(arrays["guidance"]) == 4
    # w changes the samples (by little after four steps); without --guidance, the config's default w
    at = {w: sample_checkpoint(straight, 8, weights="online", labels="all", steps=2, guidance=w).x for w in (0, 4)}
    assert not torch.equal(at[0], at[4])
    default = sample_checkpoint(straight, 4, labels=[1], steps=1)
    assert default.guidance == straight.config.sampling.guidance == 1.0


def test_a_cfg_teacher_samples_with_two_calls_per_step_and_w_changes_it(teacher_run):
    checkpoint = load_checkpoint(teacher_run)
    plain = sample_checkpoint(checkpoint, 8, labels="all", teacher_levels=3, solver="heun")
    conditional = sample_checkpoint(checkpoint, 8, labels="all", teacher_levels=3, solver="heun", guidance=1.0)
    guided = sample_checkpoint(checkpoint, 8, labels="all", teacher_levels=3, solver="heun", guidance=3.0)
    assert plain.nfe == conditional.nfe == 5 and guided.nfe == 10  # Heun: 2K−1 evaluations, twice under CFG
    assert torch.equal(plain.x, conditional.x) and not torch.allclose(plain.x, guided.x)


def run_cm(capsys, *args):
    """`cm ARGS` in this process: (exit code, stderr lines); argparse's own errors exit by SystemExit."""
    try:
        code = cm([str(a) for a in args])
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err.strip().splitlines()


def test_label_and_guidance_mistakes_are_one_line_errors(tmp_path, capsys, teacher_run):
    unconditional = tmp_path / "plain"
    train(digits_config("train.method=teacher", "network.class_conditional=false", "train.total_steps=1"),
          unconditional, progress=False)  # fmt: skip
    cases = [
        ((unconditional, "--label", "3"), "unconditional"),
        ((teacher_run, "--label", "10"), "label 10 is out of range"),
        ((teacher_run, "--label", "2,-1"), "label -1 is out of range"),
        ((teacher_run, "--label", "two"), "'all'"),
        ((unconditional, "--guidance", "2"), "takes no guidance"),
    ]
    for (checkpoint, *options), fragment in cases:
        out = tmp_path / "never"
        code, lines = run_cm(capsys, "sample", "--checkpoint", checkpoint, *options, "--num", "4", "--out", out)
        assert code == 2 and len(lines) == 1 and fragment in lines[0], (options, lines)
        assert not out.exists()


def test_a_fixed_w_student_refuses_guidance_and_a_teacher_without_null_class_cannot_be_guided(tmp_path, capsys):
    teacher = tmp_path / "teacher"
    train(digits_config("train.method=teacher", "train.total_steps=1"), teacher, progress=False)
    code, lines = run_cm(capsys, "sample", "--checkpoint", teacher, "--guidance", "2", "--out", tmp_path / "x")
    assert code == 2 and "null class" in lines[0]
    overrides = [*DIGITS, f"cd.teacher={teacher}", "cd.guidance=fixed", "cd.guidance_min=2", "cd.guidance_max=2"]
    sets = [a for o in overrides for a in ("--set", o)]
    code, lines = run_cm(capsys, "train", "cd", "--out", tmp_path / "cd", "--no-progress", *sets)
    assert code == 2 and len(lines) == 1 and "label_dropout" in lines[0] and not (tmp_path / "cd").exists()


def test_requested_labels_are_equal_blocks():
    assert requested_labels("all", 10, 5).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert requested_labels([7, 1, 3], 7, 10).tolist() == [7, 7, 7, 1, 1, 3, 3]
    assert requested_labels(4, 3, 10).tolist() == [4, 4, 4]


def decile_classifier(images, num_classes=10):
    """A tiny classifier whose head sorts images into `num_classes` equal bins of their summed features: every class
    is predicted for some of `images` (a random network alone predicts one class for nearly everything)."""
    torch.manual_seed(0)
    classifier = ImageClassifier(1, num_classes, width=4).eval()
    with torch.no_grad():  # logit_k = k·s − Σ_{j≤k} t_j: arg-max k is the bin of s between the quantiles t_k, t_{k+1}
        score = classifier.features(images).sum(1)
        edges = score.quantile(torch.linspace(0, 1, num_classes + 1)[1:-1])
        classifier.head.weight.copy_(torch.arange(num_classes)[:, None].float().expand(-1, classifier.feature_dim))
        classifier.head.bias.copy_(-torch.cat([torch.zeros(1), edges.cumsum(0)]))
    return classifier


def test_label_rate_is_the_share_classified_as_requested():
    """Against a hand count of the arg-max of a tiny classifier's logits."""
    images = torch.rand(50, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    classifier = decile_classifier(images, 3)
    requested = torch.randint(0, 3, (50,), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = classifier(images).tolist()
    predicted = [row.index(max(row)) for row in logits]
    hits = sum(1 for guess, want in zip(predicted, requested.tolist(), strict=True) if guess == want)
    assert set(predicted) == {0, 1, 2} and 0 < hits < 50
    assert label_rate(classifier, images, requested) == hits / 50


def test_old_checkpoints_without_the_new_keys_still_load(tmp_path):
    run = tmp_path / "run"
    train(digits_config("train.method=ct", "train.total_steps=1"), run, progress=False)
    meta_path = list_checkpoints(run)[-1] / "meta.json"
    meta = json.loads(meta_path.read_text())
    for section, key in [("teacher", "label_dropout"), ("sampling", "guidance"), *(
            (s, k) for s in ("cd", "scm") for k in ("guidance", "guidance_min", "guidance_max"))]:  # fmt: skip
        del meta["config"][section][key]
    meta_path.write_text(json.dumps(meta))
    checkpoint = load_checkpoint(run)
    assert checkpoint.config.teacher.label_dropout == 0 and checkpoint.config.cd.guidance == "none"
    assert sample_checkpoint(checkpoint, 3, steps=1).x.shape == (3, 1, 8, 8)


def conditional_checkpoint(folder):
    """An untrained class-conditional digits CT model whose classes give very different samples."""
    config = digits_config("train.method=ct")
    torch.manual_seed(0)
    model = build_model(config, "consistency", (1, 8, 8), 10)
    with torch.no_grad():
        model.net.embed_class.weight.normal_(0, 5.0)
    save_checkpoint(folder, 1, config, (1, 8, 8), 10, {"online": model, "ema-0.999": copy.deepcopy(model)},
                    {"optimizer": {}}, keep=1)  # fmt: skip
    return folder


def test_eval_reports_the_label_rate_per_step_count(tmp_path, digits_cache):
    run = conditional_checkpoint(tmp_path / "run")
    out = tmp_path / "eval"
    assert cm(["eval", "--checkpoint", str(run), "--steps", "1,2", "--num", "150", "--cache", str(digits_cache),
               "--out", str(out)]) == 0  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    rates = [s["label_rate"] for s in results["scores"]]
    assert [s["nfe"] for s in results["scores"]] == [1, 2] and all(0 <= r <= 1 for r in rates)
    assert results["data_floor"]["label_rate"] is None
    assert "label rate" in (out / "results.md").read_text()
    # the rate pairs each sample with the label it was drawn for: with a classifier that predicts every class
    checkpoint = load_checkpoint(run)
    generated = sample_checkpoint(checkpoint, 150, steps=1)
    classifier = decile_classifier(generated.x)
    extractor = classifier_extractor(classifier)
    reference = prepare_reference(extractor, generated.x, tmp_path / "stats", "samples")
    scores, _ = evaluate_image_checkpoint(
        checkpoint, reference, extractor, label="ct", steps=[1], num_samples=150, classifier=classifier
    )
    predicted = classifier(generated.x).argmax(1)
    assert len(predicted.unique()) == 10
    assert scores[0].label_rate == pytest.approx((predicted == generated.labels).float().mean().item())


def test_a_guided_unet_student_builds_from_the_teachers_state_dict(tmp_path):
    """The U-Net wrapper keeps diffusers' keys: a guided student loads a U-Net teacher and adds only its w embedding."""
    config = digits_config("network.kind=unet", "network.preset=tiny", "teacher.label_dropout=0.2")
    teacher = build_model(config, "denoiser", (1, 8, 8), 10)
    student_config = digits_config(
        "network.kind=unet", "network.preset=tiny", "teacher.label_dropout=0.2", "train.method=cd",
        "cd.teacher=x", *(f"cd.{g}" for g in GUIDED),
    )  # fmt: skip
    student = build_model(student_config, "consistency", (1, 8, 8), 10)
    extra = set(student.state_dict()) - set(teacher.state_dict())
    assert extra and all(k.startswith("net.guidance_embedding.") for k in extra)
    assert set(teacher.state_dict()) <= set(student.state_dict())


def test_a_guided_unet_student_refuses_diffusers_export(tmp_path):
    """The w embedding lives outside UNet2DModel: exporting would silently drop it, so export refuses."""
    from torch_consistency.errors import CheckpointError
    from torch_consistency.interop.diffusers import export_diffusers

    config = digits_config(
        "network.kind=unet", "network.preset=tiny", "teacher.label_dropout=0.2", "train.method=cd",
        "cd.teacher=x", *(f"cd.{g}" for g in GUIDED),
    )  # fmt: skip
    model = build_model(config, "consistency", (1, 8, 8), 10)
    save_checkpoint(tmp_path / "run", 1, config, (1, 8, 8), 10, {"online": model}, {"optimizer": {}}, keep=1)
    with pytest.raises(CheckpointError, match="guidance scale w"):
        export_diffusers(tmp_path / "run", tmp_path / "exported")
    assert not (tmp_path / "exported").exists()
