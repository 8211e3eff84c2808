"""Which average of a run's weights samples best (issue 13, deliverable 2's "EMA rate" row), measured post hoc.

    python benchmarks/weight_averaging.py --run runs/curves/cd-n-6-18--600-steps --teacher runs/mnist-teacher \
        --runs runs/curves --out docs/results/curves/averaging.md

A run checkpointed every few steps keeps its online weights θ_k at each checkpoint. Weighted averages of these
snapshots stand in for evaluation EMAs of other lengths without training again (the post-hoc EMA of EDM2, Karras
et al. 2024, §3.1): a power-function EMA with exponent γ, read at step t, averages θ_τ with weights ∝ τ^γ for
τ ≤ t. The trainer's evaluation EMA with train.ema_power = γ has the rate (1 + k)/(γ + 2 + k) ≈ 1 − (γ + 1)/k and
weights ∝ Γ(j + γ + 1)/Γ(j + 1) ≈ j^γ (trainer.evaluation_ema_rate); the default γ = 8 averages about the last
t/(γ + 2) steps. Scoring the γ = 8 snapshot average beside the run's own EMA checks that snapshots are dense
enough to stand in for every step. Each average is scored at 1 and 2 steps with
FD_classifier against the held-out half, like benchmarks/learning_curves.py, whose cached teacher score it quotes.
"""

import argparse
import json
from pathlib import Path

import torch

from learning_curves import Scorer, best_teacher_score, teacher_scores_path
from torch_consistency.checkpoint import list_checkpoints, load_checkpoint
from torch_consistency.evaluation.evaluate import sample_model
from torch_consistency.files import write_json_atomic, write_text_atomic

GAMMAS = (8.0, 4.0, 2.0, 1.0, 0.0)


def power_weights(steps: list[int], gamma: float) -> list[float]:
    """Weights ∝ k^γ of snapshots taken at steps k, summing to 1: a power-function EMA (EDM2 eq. 2) at the last."""
    raw = [float(k) ** gamma for k in steps]
    return [w / sum(raw) for w in raw]


def window_weights(steps: list[int], width: int) -> list[float]:
    """Equal weights on the snapshots of the last `width` steps, none before."""
    inside = [k > steps[-1] - width for k in steps]
    return [float(flag) / sum(inside) for flag in inside]


def average_states(states: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    """Σ_i w_i θ_i per floating-point tensor (in float64); other tensors are taken from the last state."""
    averaged = {}
    for name, last in states[-1].items():
        if not last.is_floating_point():
            averaged[name] = last
            continue
        total = sum(w * state[name].double() for w, state in zip(weights, states, strict=True) if w > 0)
        averaged[name] = total.to(last.dtype)
    return averaged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a run checkpointed every few steps")
    parser.add_argument("--teacher", type=Path, required=True, help="the MNIST teacher run (its data and scores)")
    parser.add_argument("--runs", type=Path, default=Path("runs/curves"), help="learning_curves.py's runs folder")
    parser.add_argument("--out", type=Path, default=Path("docs/results/curves/averaging.md"))
    parser.add_argument("--num", type=int, default=5000)
    parser.add_argument("--windows", type=int, nargs="*", default=[300], help="uniform windows, in steps")
    args = parser.parse_args()
    teacher_path = teacher_scores_path(args.runs, args.num)
    if not teacher_path.exists():
        parser.error(f"{teacher_path} is missing: score the teacher first (learning_curves.py --phase score)")
    if any(width < 1 for width in args.windows):
        parser.error(f"--windows must be whole numbers of steps ≥ 1, not {args.windows}")
    paths = list_checkpoints(args.run)
    if len(paths) < 2:
        parser.error(f"{args.run} holds {len(paths)} checkpoint(s); averaging needs a run checkpointed often")
    _, reference = best_teacher_score(json.loads(teacher_path.read_text()))
    checkpoints = [load_checkpoint(path) for path in paths]
    last = checkpoints[-1]
    steps = [checkpoint.step for checkpoint in checkpoints]
    online = [checkpoint.weights["online"] for checkpoint in checkpoints]
    profiles: dict[str, dict[str, torch.Tensor]] = {
        f"the run's own EMA ({last.default_weights()})": last.weights[last.default_weights()],
        "online weights at the last step": online[-1],
        **{f"power EMA, γ = {gamma:g}": average_states(online, power_weights(steps, gamma)) for gamma in GAMMAS},
        **{f"uniform, last {w} steps": average_states(online, window_weights(steps, w)) for w in args.windows},
    }
    scorer = Scorer(args.teacher, args.runs, args.num, batch=128, points=1)
    cache_path = args.run / f"averaging-{args.num}.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    model = last.build_model("online")
    for name, state in profiles.items():
        model.load_state_dict(state)
        for count in (1, 2):
            if str(count) in cache.setdefault(name, {}):
                continue
            generated = sample_model(
                model, last.config, last.sample_shape, last.num_classes, args.num, steps=count, seed=1, batch_size=128
            )
            cache[name][str(count)] = scorer.score(name, generated.x, generated.nfe)["fd"]
            write_json_atomic(cache_path, cache)
            print(f"{name}, {count} step(s): FD {cache[name][str(count)]:.3f}", flush=True)
    lines = [
        "# Weight averaging after training, post hoc",
        "",
        f"Run: `{args.run.name}`, {len(steps)} snapshots of its online weights (steps {steps[0]}–{steps[-1]}, every "
        f"{steps[1] - steps[0]}); FD_classifier with {args.num} samples against the held-out half; ratio to the "
        f"teacher's best ({reference:.3f}).",
        "",
        "| weights | 1 step | 2 steps |",
        "|---|---:|---:|",
        *(
            f"| {name} | {cache[name]['1']:.2f} ({cache[name]['1'] / reference:.2f}×) | "
            f"{cache[name]['2']:.2f} ({cache[name]['2'] / reference:.2f}×) |"
            for name in profiles
        ),
        "",
        "Made by:",
        "",
        "```",
        f"python benchmarks/weight_averaging.py --run {args.run} --teacher {args.teacher} --runs {args.runs} "
        f"--out {args.out}",
        "```",
        "",
    ]
    write_text_atomic(args.out, "\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
