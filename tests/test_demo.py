"""The demo's 2-D verdicts follow its measure; its calibration sets are what their names say; a run finished by an
earlier call is reused and reported as reused."""

import math

import torch

from helpers import untrained_checkpoint
from torch_consistency.checkpoint import load_checkpoint
from torch_consistency.configs import config_path, load_config
from torch_consistency.demo import (
    TARGETS,
    TOY_SAMPLES,
    forms_the_clusters,
    search_samples,
    squashed_onto_segments,
    targets_table,
    train_runs,
    training_time,
    uniform_disc,
    verdict,
)
from torch_consistency.evaluation.evaluate import Score


def test_verdicts_say_met_or_by_how_much_a_target_is_missed():
    assert verdict(1.5, 1.5) == "met" and verdict(0.4, 1.25) == "met"
    assert verdict(3.3, 1.5) == "missed (2.20× the target)"
    rows = targets_table({"CD 1-step": 3.3, "CD 2-step": 1.0, "CT 1-step": 2.6, "iCT 1-step": 9.0})
    cells = {row.split("|")[1].strip(): [c.strip() for c in row.split("|")[2:5]] for row in rows[2:]}
    assert cells["CD 1-step"] == ["3.30", f"≤ {TARGETS['CD 1-step']:g}", "missed (2.20× the target)"]
    assert cells["CD 2-step"] == ["1.00", "≤ 1.25", "met"]
    assert cells["CT 1-step"][2] == "missed (1.04× the target)"  # 2.6 > 2.5, however slightly
    assert cells["iCT 1-step"] == ["9.00", "–", "–"]  # no target: no verdict


def test_forming_the_clusters_needs_every_component_and_most_samples_inside_one():
    def scored(precision: float, covered: int) -> Score:
        return Score("x", 1, 0.1, 0.1, precision, covered)

    assert forms_the_clusters(scored(0.95, 8), 8)
    assert not forms_the_clusters(scored(0.95, 7), 8)  # a cluster missing
    assert not forms_the_clusters(scored(0.5, 8), 8)  # clusters there, but half the samples between them


def test_calibration_sets_are_a_uniform_disc_and_segments_through_each_mean():
    disc = uniform_disc(20000, 0.85)
    radius = disc.norm(dim=1)
    assert radius.max() <= 0.85 and abs(float((radius <= 0.85 / math.sqrt(2)).double().mean()) - 0.5) < 0.02
    means = torch.tensor([[0.7, 0.0], [0.0, -0.7]], dtype=torch.float64)
    points = torch.tensor([[0.75, 0.02], [0.66, -0.03], [0.04, -0.72]], dtype=torch.float64)
    expected = torch.tensor([[0.7, 0.02], [0.7, -0.03], [0.04, -0.7]], dtype=torch.float64)  # along ⟂ to the mean
    torch.testing.assert_close(squashed_onto_segments(points, means), expected)


def test_a_run_finished_by_an_earlier_call_is_reused_and_its_time_not_reported_as_training(tmp_path):
    config = load_config(config_path("toy_teacher"), ["train.total_steps=2", "train.checkpoint_every=2"])
    runs, seconds = train_runs({"teacher": config}, tmp_path)
    assert runs["teacher"].step == 2 and seconds["teacher"] > 0
    assert training_time(seconds) == f"Training time: teacher {seconds['teacher']:.0f} s"
    log = (tmp_path / "teacher" / "log.jsonl").read_text()
    runs, seconds = train_runs({"teacher": config}, tmp_path)
    assert runs["teacher"].step == 2 and seconds == {"teacher": None}
    assert (tmp_path / "teacher" / "log.jsonl").read_text() == log  # not trained again
    assert training_time({"teacher": None, "cd": 12.4}) == (
        "Training time: teacher reused, cd 12 s (reused: trained by an earlier call into the same folder)"
    )


def test_the_search_scores_a_coarse_grids_sigmas_on_as_many_samples_as_the_report_and_a_fine_ones_on_fewer(tmp_path):
    coarse = load_checkpoint(
        untrained_checkpoint(tmp_path / "cd", (2,), "train.method=cd", "cd.teacher=exact", "cd.num_points=5")
    )
    fine = load_checkpoint(untrained_checkpoint(tmp_path / "ct", (2,), "train.method=ct", "ct.s0=10", "ct.s1=150"))
    assert coarse.grid_points() == 5 and fine.grid_points() > 100
    assert search_samples(coarse) == TOY_SAMPLES and search_samples(fine) < TOY_SAMPLES
