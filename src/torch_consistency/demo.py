"""The main job: teacher → CD → CT on the default 2-D data and on 8×8 digits, scored, with one report."""

import dataclasses
import time
from pathlib import Path

from .config import load_config
from .configs import config_path
from .data import build_dataset
from .errors import ConfigError
from .evaluation.evaluate import consistency_error_of, data_floor, evaluate_checkpoint, held_out
from .evaluation.plots import save_image_rows, save_scatter_grid
from .evaluation.report import scores_table
from .files import write_json_atomic, write_text_atomic
from .training.checkpoint import Checkpoint, list_checkpoints, load_checkpoint
from .training.loop import holds_run, train

TEACHER_LEVELS = (18, 40)  # Heun: 35 and 79 NFE
STEPS = (1, 2, 4)
TARGETS = {"CD 1-step": 1.5, "CD 2-step": 1.25, "CT 1-step": 2.5}  # W2 / teacher's, issue acceptance
QUICK = ["train.total_steps=30", "train.checkpoint_every=30"]


def train_runs(prefix: str, out: Path, quick: bool) -> tuple[dict[str, Checkpoint], dict[str, float]]:
    """Teacher, CD (from that teacher) and CT with the bundled configs `{prefix}_{method}`; finished runs are reused."""
    runs, seconds = {}, {}
    for method in ("teacher", "cd", "ct"):
        overrides = [*(QUICK if quick else []), *([f'cd.teacher="{out / "teacher"}"'] if method == "cd" else [])]
        config = load_config(config_path(f"{prefix}_{method}"), overrides)
        tic = time.perf_counter()
        folder = out / method
        if not holds_run(folder):
            train(config, folder)
        else:  # a run from an earlier demo: continue it if it is the same run, refuse if it is another
            if not list_checkpoints(folder):  # it stopped before its first checkpoint: start it again
                train(None, folder, resume=True)
            saved = load_checkpoint(folder)
            if saved.config.train.total_steps != config.train.total_steps or saved.config.data != config.data:
                raise ConfigError(f"{folder} holds a different run (e.g. from --quick); remove {out} first")
            if saved.step < config.train.total_steps:
                train(None, folder, resume=True)
        seconds[method] = time.perf_counter() - tic
        runs[method] = load_checkpoint(folder)
    return runs, seconds


def toy_section(out: Path, quick: bool) -> tuple[list[str], dict]:
    """2-D eight Gaussians: W2 and MMD² per method and NFE, ratios to the teacher, consistency errors, scatter plots."""
    runs, seconds = train_runs("toy", out, quick)
    dataset = build_dataset(runs["teacher"].config.data)
    num = 200 if quick else 2000
    floor = data_floor(dataset, num, seed=0)
    scores, samples = evaluate_checkpoint(
        runs["teacher"], dataset, label="teacher (Heun)", teacher_levels=TEACHER_LEVELS, num_samples=num
    )
    reference = max(scores, key=lambda s: s.nfe)
    panels = {"data (held out)": held_out(dataset, num, seed=0), **samples}
    errors = {}
    for method in ("cd", "ct"):
        method_scores, method_samples = evaluate_checkpoint(
            runs[method], dataset, label=method.upper(), steps=STEPS, num_samples=num
        )
        scores += method_scores
        panels.update(method_samples)
        errors[method] = consistency_error_of(runs[method], dataset, num_samples=200 if quick else 500)
    picture = save_scatter_grid(panels, out / "samples.png")
    ratios = {f"{s.label} {s.nfe}-step": s.w2 / reference.w2 for s in scores if s.label in ("CD", "CT") and s.nfe <= 2}
    scale = float(dataset.mixture.stds().mean())
    lines = [
        "## 2-D: eight Gaussians",
        "",
        f"Each score uses {num} samples against {num} held-out points; W2 is the exact earth mover's distance, "
        "MMD² the unbiased estimate with Gaussian kernels; the data floor compares two independent real sets.",
        "",
        scores_table(scores, floor, reference),
        "",
        f"Ratios to the teacher (Heun, {reference.nfe} NFE):",
        "",
        "| | W2 ratio | target |",
        "|---|---:|---:|",
        *[
            f"| {name} | {ratio:.2f} | {f'≤ {TARGETS[name]:g}' if name in TARGETS else '–'} |"
            for name, ratio in ratios.items()
        ],
        "",
        "Mean consistency error ‖f(x_σ, σ) − ODE(x_σ → σ_min)‖ against the exact ODE (the data is a Gaussian "
        "mixture), over the training grid, relative to the data's standard deviation: "
        + ", ".join(f"{m.upper()} {e.mean / scale:.3f}" for m, e in errors.items() if e is not None),
        "",
        "Training time: " + ", ".join(f"{m} {s:.0f} s" for m, s in seconds.items()),
        "",
        f"![2-D samples](toy/{picture.name})",
        "",
    ]
    results = {
        "data_floor": floor.to_dict(),
        "scores": [s.to_dict() for s in scores],
        "ratios": ratios,
        "consistency_error": {m: e.mean / scale for m, e in errors.items() if e is not None},
        "seconds": seconds,
    }
    return lines, results


def digits_section(out: Path, quick: bool) -> tuple[list[str], dict]:
    """8×8 digits: FD on classifier features per method and NFE, and rows of samples beside the teacher's."""
    from .evaluation.classifier import load_or_train_classifier
    from .evaluation.features import classifier_extractor
    from .evaluation.images import evaluate_image_checkpoint, prepare_reference, score_images

    runs, seconds = train_runs("digits", out, quick)
    data = runs["teacher"].config.data
    train_split = build_dataset(data)
    holdout = build_dataset(dataclasses.replace(data, split="holdout"))
    labelled = build_dataset(dataclasses.replace(data, holdout_fraction=0.0))
    extractor = classifier_extractor(load_or_train_classifier(labelled, out / "cache"))
    reference = prepare_reference(extractor, holdout.to_float(holdout.images), out / "cache", holdout.name)
    num = 200 if quick else 1000
    scores, rows = [], {"real (held out)": holdout.to_float(holdout.images[:12])}
    for method, label, options in (
        ("teacher", "teacher (Heun)", {"teacher_levels": (18,)}),
        ("cd", "CD", {"steps": (1, 2)}),
        ("ct", "CT", {"steps": (1, 2)}),
    ):
        method_scores, samples = evaluate_image_checkpoint(
            runs[method], reference, extractor, label=label, num_samples=num, **options
        )
        scores += method_scores
        rows.update({name: images[:12] for name, images in samples.items()})
    floor = score_images(
        "data floor", train_split.to_float(train_split.images[: len(holdout)]), 0, reference, extractor
    )
    picture = save_image_rows(rows, out / "samples.png")
    metric = extractor.metric_name
    lines = [
        "## Images: scikit-learn digits (8×8)",
        "",
        f"{metric}: Fréchet distance on the features of a classifier trained on the digits ({extractor.description}); "
        f"not comparable with Inception FID. {num} samples against the {len(holdout)} held-out digits.",
        "",
        f"| method | NFE | {metric} | precision | recall |",
        "|---|---:|---:|---:|---:|",
        *[f"| {s.label} | {s.nfe} | {s.fd:.2f} | {s.precision:.3f} | {s.recall:.3f} |" for s in scores],
        f"| data floor (train vs held-out) | – | {floor.fd:.2f} | {floor.precision:.3f} | {floor.recall:.3f} |",
        "",
        "Training time: " + ", ".join(f"{m} {s:.0f} s" for m, s in seconds.items()),
        "",
        f"![digit samples](digits/{picture.name})",
        "",
    ]
    return lines, {"metric": metric, "scores": [s.to_dict() for s in scores], "data_floor": floor.to_dict()}


def run_demo(out: str | Path, quick: bool = False) -> Path:
    """Train and score everything in `out`; return the path of the markdown report."""
    out = Path(out)
    tic = time.perf_counter()
    toy_lines, toy_results = toy_section(out / "toy", quick)
    digits_lines, digits_results = digits_section(out / "digits", quick)
    minutes = (time.perf_counter() - tic) / 60
    header = ["# torch-consistency demo", "", f"Whole job: {minutes:.1f} minutes on this machine.", ""]
    write_json_atomic(out / "results.json", {"toy": toy_results, "digits": digits_results, "minutes": minutes})
    return write_text_atomic(out / "report.md", "\n".join([*header, *toy_lines, *digits_lines]))
