"""How often the demo's 2-step σ search picks each σ: the search (`demo.two_step_sigmas`) run on the models of a
`cm demo` run with several sample seeds and sample counts. One run of the search reads its objective, the signed
MMD² of its samples against the exact law, once per σ; where two σ's differ by less than that noise, which one it
keeps depends on the seed. Prints, per model and sample count, each σ picked and how many seeds picked it, with
the search's time.

    python benchmarks/sigma_search_noise.py --demo runs/demo [--models cd] [--samples 5000 40000] [--seeds 12]
    python benchmarks/sigma_search_noise.py --demo runs/demo --samples 20000 40000 --seed 99 --show-scores

The seeds are 1000, 2000, ..., or those given by --seed (the demo's own search uses 99; --show-scores prints the
signed MMD² of every σ scored); each seed's samples are shared by the σ's it
compares (the same noise for every candidate), as in the demo. What it found and what the demo took from it
(`demo.search_samples`): docs/results/curves, "The demo's 2-step search and its own noise".
"""

import argparse
import collections
import time
from pathlib import Path

import torch

from torch_consistency.checkpoint import load_checkpoint
from torch_consistency.data import build_vectors
from torch_consistency.demo import two_step_sigmas

SEED_STEP = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, required=True, help="a `cm demo` output folder")
    parser.add_argument("--models", nargs="+", choices=("cd", "ct", "ict"), default=("cd",))
    parser.add_argument("--samples", nargs="+", type=int, default=(5000, 40_000), help="samples per search")
    parser.add_argument("--seeds", type=int, default=12, help="how many search seeds (default 12)")
    parser.add_argument("--seed", type=int, action="append", help="a search seed instead (repeatable)")
    parser.add_argument("--show-scores", action="store_true", help="print each σ's signed MMD²")
    args = parser.parse_args()
    seeds = args.seed or [SEED_STEP * (i + 1) for i in range(args.seeds)]
    log = print if args.show_scores else (lambda line: None)
    for name in args.models:
        checkpoint = load_checkpoint(args.demo / "toy" / name)
        dataset = build_vectors(checkpoint.config.data)
        for num in args.samples:
            start = time.perf_counter()
            picks = collections.Counter(two_step_sigmas(checkpoint, dataset, num, seed, log)[1] for seed in seeds)
            seconds = (time.perf_counter() - start) / len(seeds)
            counts = ", ".join(f"σ {sigma:.4g}: {count}" for sigma, count in sorted(picks.items(), reverse=True))
            print(f"{name}, {num} samples, {len(seeds)} seeds: {counts} ({seconds:.1f} s per search)", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
