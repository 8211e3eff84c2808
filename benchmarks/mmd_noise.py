"""How much of the demo's 2-D MMD is the measure's own noise: each model of a `cm demo` run sampled with several
seeds, its unbiased MMD² against 10,000 held-out points (a fresh set per seed) and against the data's exact law (10,000
samples, and 40,000 with their pairs in blocks of 10,000). Prints the mean and spread over the seeds, in units of the
teacher's MMD² (Heun, 79 NFE) under the same measure, and the ratios of MMD the demo reports.

    python benchmarks/mmd_noise.py --demo runs/demo [--measures held-out law blocks] [--seeds 4]

With more seeds it also estimates each model's MMD over the teacher's from the means of all seeds, with its standard
error: what the demo's one seed estimates.
"""

import argparse
import statistics
from pathlib import Path

import torch

from torch_consistency.checkpoint import load_checkpoint
from torch_consistency.data import build_vectors
from torch_consistency.demo import TEACHER_LEVELS
from torch_consistency.evaluation.evaluate import held_out, mmd_bandwidths, sample_checkpoint
from torch_consistency.evaluation.lowdim import mmd_squared
from torch_consistency.sigmas import karras_sigmas

SEED_STEP = 1000  # seeds 1000, 2000, ...: any distinct seeds draw independent noise (seeding.batch_generator)
TEACHER = "teacher, Heun 79 NFE"


def ratio_of_means(model: list[float], teacher: list[float]) -> tuple[float, float]:
    """√(mean MMD² / the teacher's mean MMD²) and its standard error by the delta method (the two sampled apart)."""
    m, t = statistics.mean(model), statistics.mean(teacher)
    relative_variance = statistics.variance(model) / (len(model) * m**2) + statistics.variance(teacher) / (
        len(teacher) * t**2
    )
    ratio = (m / t) ** 0.5
    return ratio, 0.5 * ratio * relative_variance**0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, required=True, help="a `cm demo` output folder")
    parser.add_argument(
        "--measures", nargs="+", choices=("held-out", "law", "blocks"), default=("held-out", "law", "blocks")
    )
    parser.add_argument("--seeds", type=int, default=4, help="how many sample seeds (default 4)")
    args = parser.parse_args()
    seeds = tuple(SEED_STEP * (i + 1) for i in range(args.seeds))
    teacher, cd, ct = (load_checkpoint(args.demo / "toy" / name) for name in ("teacher", "cd", "ct"))
    dataset = build_vectors(cd.config.data)
    d = cd.config.diffusion
    grid = karras_sigmas(cd.grid_points(), d.sigma_min, d.sigma_max, d.rho).tolist()
    models = {
        TEACHER: (teacher, {"teacher_levels": TEACHER_LEVELS[-1], "solver": "heun"}),
        "CD 1 step": (cd, {"sigmas": [grid[0]]}),
        **{f"CD 2 steps at σ {s:.4g}": (cd, {"sigmas": [grid[0], s]}) for s in grid[1:-1]},
        "CT 1 step": (ct, {"sigmas": [grid[0]]}),
    }
    bandwidths = mmd_bandwidths(dataset, held_out(dataset, 100, 0))  # a mixture's: from its components' std
    measures = {  # samples per seed, and whether the MMD takes the law instead of a fresh held-out set
        "held-out": ("10,000 held-out points", 10_000, False),
        "law": ("the exact law, 10,000 samples", 10_000, True),
        "blocks": ("the exact law, 40,000 samples in blocks of 10,000 (the demo's)", 40_000, True),
    }
    for measure, num, law in (measures[key] for key in args.measures):
        values = {
            name: [mmd_squared(sample_checkpoint(run, num, seed=seed, **kw).x,
                               dataset.mixture if law else held_out(dataset, num, 0, part=seed), bandwidths)
                   for seed in seeds]
            for name, (run, kw) in models.items()
        }  # fmt: skip
        unit = statistics.mean(values[TEACHER])
        print(f"\nMMD² against {measure}, in units of the teacher's mean {unit:.3g} (seeds {seeds}):")
        for name, v in values.items():
            pairs = zip(v, values[TEACHER], strict=True)
            ratios = [(a / t) ** 0.5 if a > 0 and t > 0 else float("nan") for a, t in pairs]
            pooled = (
                ""
                if name == TEACHER
                else "; from the means: {:.3f} ± {:.3f}".format(*ratio_of_means(v, values[TEACHER]))
            )
            print(
                f"  {name}: {' '.join(f'{a / unit:.2f}' for a in v)}; mean {statistics.mean(v) / unit:.2f}, "
                f"sd {statistics.stdev(v) / unit:.2f}; MMD / teacher's, seed by seed: "
                + " ".join(f"{r:.2f}" for r in ratios)
                + pooled,
                flush=True,
            )


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
