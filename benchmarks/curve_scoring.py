"""Scoring for `learning_curves.py`: the classifier features and references built once, each run's checkpoints at
1, 2 and 4 steps, the 2-step σ search, the teacher by Heun, and the CPU-minutes a run's log records. Every score is
cached in a JSON file beside the run, so a phase can stop and start again."""

import dataclasses
import functools
import json
from pathlib import Path

from curve_arms import SEARCHED
from torch_consistency.checkpoint import PREFIX, list_checkpoints, load_checkpoint
from torch_consistency.data import build_dataset
from torch_consistency.evaluation.classifier import load_or_train_classifier
from torch_consistency.evaluation.evaluate import sample_checkpoint
from torch_consistency.evaluation.features import classifier_extractor
from torch_consistency.evaluation.images import prepare_reference, score_images
from torch_consistency.evaluation.timepoints import search_checkpoint_sigmas
from torch_consistency.files import write_json_atomic

STEPS_EVERY_CHECKPOINT = (1, 2)
STEPS_LAST = (1, 2, 4)


def cpu_minutes(folder: Path, up_to_step: int | None = None) -> float:
    """CPU-minutes of a run's training steps up to `up_to_step`, from log.jsonl (`cpu_seconds` per step)."""
    seconds = 0.0
    for line in (folder / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if up_to_step is None or record["step"] <= up_to_step:
            seconds += record["cpu_seconds"]
    return seconds / 60


class Scorer:
    """The classifier features and the held-out reference, built once."""

    def __init__(self, teacher: Path, runs: Path, num: int, batch: int, points: int) -> None:
        data = load_checkpoint(teacher).config.data
        self.train_split = build_dataset(data)
        self.holdout = build_dataset(dataclasses.replace(data, split="holdout"))
        labelled = build_dataset(dataclasses.replace(data, holdout_fraction=0.0))
        self.extractor = classifier_extractor(load_or_train_classifier(labelled, runs / "cache"))
        images = self.holdout.to_float(self.holdout.images)
        self.cache = runs / "cache"
        self.reference = prepare_reference(self.extractor, images, self.cache, self.holdout.name)
        self.num, self.batch, self.points = num, batch, points

    def score(self, label: str, samples, nfe: int) -> dict:
        return score_images(label, samples, nfe, self.reference, self.extractor).to_dict()

    @functools.cached_property
    def train_reference(self):
        """The training half as a reference, for choosing σ's without looking at the held-out half."""
        images = self.train_split.to_float(self.train_split.images)
        return prepare_reference(self.extractor, images, self.cache, self.train_split.name)

    def floor(self) -> dict:
        """The metric between the training half and the held-out half: the bias of the estimate at this count."""
        count = min(self.num, len(self.train_split))
        return self.score("data floor", self.train_split.to_float(self.train_split.images[:count]), 0)


def score_run(folder: Path, cache_path: Path, scorer: Scorer, label: str, weights: str | None) -> dict[str, dict]:
    """Scores of a run's checkpoints (weight set `weights`), cached in `cache_path`: {step: {steps: score}}."""
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    checkpoints = list_checkpoints(folder)
    # at most `points` checkpoints, evenly spaced and ending at the newest
    last_index, count = len(checkpoints) - 1, min(scorer.points, len(checkpoints))
    spacing = last_index / max(count - 1, 1)
    for index in sorted({last_index - round(j * spacing) for j in range(count)}):
        checkpoint = load_checkpoint(checkpoints[index])
        last = index == len(checkpoints) - 1 and checkpoint.step == checkpoint.config.train.total_steps
        wanted = STEPS_LAST if last else STEPS_EVERY_CHECKPOINT
        entry = cache.setdefault(str(checkpoint.step), {})
        for steps in wanted:
            if str(steps) in entry:
                continue
            generated = sample_checkpoint(
                checkpoint, scorer.num, weights=weights, steps=steps, seed=1, batch_size=scorer.batch
            )
            entry[str(steps)] = scorer.score(label, generated.x, generated.nfe)
            write_json_atomic(cache_path, cache)
            print(f"{label} step {checkpoint.step}, {steps} step(s): FD {entry[str(steps)]['fd']:.3f}", flush=True)
    return cache


def search_run(folder: Path, cache_path: Path, scorer: Scorer, label: str, within_minutes: float) -> None:
    """2-step sampling at the σ's of the paper's greedy search (reference.md §6) at the newest scored checkpoint
    within `within_minutes` of training: the σ chosen on the FD of 2000 samples (seed 2) against the *training*
    half, then scored against the held-out half as every other point (seed 1); cached under SEARCHED with its σ's."""
    cache = json.loads(cache_path.read_text())
    steps = [int(step) for step in cache if cpu_minutes(folder, int(step)) <= within_minutes]
    path = folder / "checkpoints" / f"{PREFIX}{max(steps, default=0):08d}"
    if not steps or not path.is_dir():
        print(f"{label}: no checkpoint to search within {within_minutes:.1f} CPU-minutes")
        return
    entry = cache[str(max(steps))]
    if SEARCHED in entry:
        return
    checkpoint = load_checkpoint(path)

    def fd(samples) -> float:
        return score_images("search", samples, 0, scorer.train_reference, scorer.extractor).fd

    sigmas = search_checkpoint_sigmas(checkpoint, fd, 2000, seed=1, max_steps=2)[2]
    generated = sample_checkpoint(checkpoint, scorer.num, sigmas=sigmas, seed=1, batch_size=scorer.batch)
    entry[SEARCHED] = {**scorer.score(label, generated.x, generated.nfe), "sigmas": sigmas}
    write_json_atomic(cache_path, cache)
    print(f"{label} step {checkpoint.step}, 2 steps at σ's {sigmas}: FD {entry[SEARCHED]['fd']:.3f}", flush=True)


def score_teacher(teacher: Path, scorer: Scorer, cache_path: Path, levels: list[int]) -> dict[str, dict]:
    """A teacher with Heun at each number of Karras levels (2K − 1 NFE), cached in `cache_path` with the data floor
    (RUNS/teacher_scores-NUM.json for --teacher, the arm's scores file for a teacher arm)."""
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    checkpoint = load_checkpoint(teacher)
    for count in levels:
        key = f"heun-{count}"
        if key not in cache:
            generated = sample_checkpoint(
                checkpoint, scorer.num, teacher_levels=count, solver="heun", seed=1, batch_size=scorer.batch
            )
            cache[key] = scorer.score("teacher (heun)", generated.x, generated.nfe)
            write_json_atomic(cache_path, cache)
    if "floor" not in cache:
        cache["floor"] = scorer.floor()
        write_json_atomic(cache_path, cache)
    return cache
