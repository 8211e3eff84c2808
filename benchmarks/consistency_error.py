"""Consistency error against the exact ODE for CD, CT, iCT, ECT, sCT and sCD at an equal step budget.

    python benchmarks/consistency_error.py --steps 4000 --out runs/consistency-error
    python benchmarks/consistency_error.py --data gmm --dim 8 --components 6 --steps 4000 --out runs/ce-gmm8

Every method trains an MLP on a Gaussian mixture (`eight_gaussians` or `gmm`, whose PF-ODE is known exactly
through the closed-form denoiser, reference.md §12) for --steps steps of --batch samples:

- CD distils the exact denoiser (cd.teacher = exact, N = 18, Heun); sCD distils it in TrigFlow form;
- CT, iCT and sCT use no teacher; CT runs twice: with the paper's curriculum (s0 = 2, s1 = 150, μ0 = 0.9) and,
  as `ct-short`, with the [ct] section of the bundled `toy_ct` config (sized for a short run);
- ECT tunes a teacher (an EDM denoiser) trained first for --teacher-steps steps (not counted in the budget:
  ECT is by definition fine-tuning; it cannot start from the exact denoiser, which has no weights).

Each model's first EMA is scored by the mean ‖f(x_σ, σ) − ODE(x_σ → σ_min)‖ over held-out x0 at the 17 σ's of an
18-point Karras grid (a TrigFlow model at t = arctan(σ/σ_d) with x_t = cos t·x_σ: the same function), divided by
the data's spread √(Σ_j Var x_j) (so 1.0 is the error of predicting the mean), plus W2 at 1 and 2 steps. Runs are
kept in --out and reused when finished. Writes OUT/results.json and OUT/results.md, every row and the summary
from the runs, with the command that made them.
"""

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path

import torch

from torch_consistency.checkpoint import load_checkpoint
from torch_consistency.configs import config_path, load_config
from torch_consistency.data import build_dataset
from torch_consistency.evaluation.evaluate import edm_consistency_function, held_out, sample_checkpoint
from torch_consistency.evaluation.lowdim import consistency_error, wasserstein2
from torch_consistency.files import write_json_atomic, write_text_atomic
from torch_consistency.sigmas import karras_sigmas
from torch_consistency.training.loop import train

METHODS = ("cd", "ct", "ct-short", "ict", "ect", "sct", "scd")
SCM_CONDITIONING = "diffusion.noise_conditioning=edm"  # ln σ/4: see SCMConfig


def method_overrides(name: str, args: argparse.Namespace, teacher: Path | None) -> list[str]:
    """The --set strings of one method."""
    warmup, scm_lr = f"scm.tangent_warmup_steps={args.steps // 10}", f"optim.lr={args.scm_lr}"
    stage_steps = f"ect.stage_steps={max(1, args.steps // args.ect_stages)}"
    return {
        "cd": ["train.method=cd", "cd.teacher=exact", "cd.num_points=18"],
        "ct": ["train.method=ct", *PAPER_CT],
        "ct-short": ["train.method=ct", *toy_ct_recipe()],
        "ict": ["train.method=ict"],
        "ect": ["train.method=ect", f"ect.teacher={teacher}", stage_steps],
        "sct": ["train.method=scm", "scm.mode=sct", warmup, scm_lr, SCM_CONDITIONING],
        "scd": ["train.method=scm", "scm.mode=scd", "scm.teacher=exact", warmup, scm_lr, SCM_CONDITIONING],
        "teacher": [
            "train.method=teacher", f"train.total_steps={args.teacher_steps}",
            f"train.checkpoint_every={args.teacher_steps}",
        ],
    }[name]  # fmt: skip


# CT's curriculum in the paper's CIFAR-10 setting (reference.md §5), with squared L2 and uniform weights
PAPER_CT = ["ct.s0=2", "ct.s1=150", "ct.mu0=0.9", "ct.distance=l2", "ct.weighting=uniform"]


def toy_ct_recipe() -> list[str]:
    """CT's recipe as the bundled toy_ct config sizes it for a short run: its whole [ct] section."""
    ct = load_config(config_path("toy_ct")).ct
    return [f"ct.{key}={value}" for key, value in dataclasses.asdict(ct).items()]


def train_or_reuse(overrides: list[str], folder: Path) -> tuple[Path, float]:
    """Train into `folder` (resume if unfinished, reuse if finished); its training seconds, from its log."""
    if not (folder / "checkpoints").exists():
        train(load_config(None, overrides), folder, progress=False)
    elif load_checkpoint(folder).step < load_checkpoint(folder).config.train.total_steps:
        train(None, folder, resume=True, progress=False)
    return folder, training_seconds(folder)


def training_seconds(folder: Path) -> float:
    """Compute time of a run's steps: Σ batch / (samples/s) over log.jsonl (checkpoint writes excluded)."""
    batch = load_checkpoint(folder).config.optim.batch_size
    records = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    return sum(batch / record["samples_per_s"] for record in records)


def score(folder: Path, dataset, args: argparse.Namespace) -> dict:
    """Relative consistency error (mean and per σ) and W2 at 1 and 2 steps of the run's first EMA."""
    checkpoint = load_checkpoint(folder)
    d = checkpoint.config.diffusion
    sigmas = karras_sigmas(18, d.sigma_min, d.sigma_max, d.rho)[:-1].tolist()
    x0 = held_out(dataset, args.samples, args.seed).double()
    model = edm_consistency_function(checkpoint.build_model().double())
    generator = torch.Generator().manual_seed(args.seed + 1)
    error = consistency_error(model, dataset.mixture.denoiser, x0, sigmas, d.sigma_min, generator, args.ode_steps)
    spread = float(dataset.mixture.stds().norm())
    reference = held_out(dataset, args.samples, args.seed, part=1)
    w2 = {
        steps: wasserstein2(sample_checkpoint(checkpoint, args.samples, steps=steps, seed=args.seed).x, reference)
        for steps in (1, 2)
    }
    return {
        "relative_error": error.mean / spread,
        "per_sigma": dict(zip(sigmas, [e / spread for e in error.per_sigma], strict=True)),
        "w2_1": w2[1],
        "w2_2": w2[2],
    }


def row_label(name: str) -> str:
    if name == "ct-short":
        return "ct (" + ", ".join(toy_ct_recipe()).replace("ct.", "").replace("=", " = ") + ", toy_ct's)"
    return name


def near(result: dict, sigma: float) -> float:
    """The relative error at the grid σ nearest to `sigma`."""
    per = result["per_sigma"]
    return per[min(per, key=lambda s: abs(s - sigma))]


def summary(results: dict) -> list[str]:
    """What the table says, from its numbers: CD's level, who is within 2× of it, where CT's error sits."""
    if "cd" not in results:
        return []
    cd = results["cd"]["relative_error"]
    others = [name for name in results if name != "cd"]
    close = [n for n in others if results[n]["relative_error"] <= 2 * cd]
    within = [row_label(n) for n in close]
    beyond = [f"{row_label(n)} ({results[n]['relative_error']:.3f})" for n in others if n not in close]
    out = [f"CD (distilling the exact denoiser) reaches {cd:.3f} of the spread. Within 2× of CD (≤ {2 * cd:.3f}): "
           f"{', '.join(within) or 'none'}; beyond: {', '.join(beyond) or 'none'}."]  # fmt: skip
    if "ct" in results:
        ct = results["ct"]
        out.append(
            f"CT with the paper's curriculum has its error at large σ ({near(ct, 0.1):.3f} at σ ≈ 0.1, "
            f"{near(ct, 80.0):.3f} at σ = 80): N(k) grows to s1 + 1 points, and consistency must propagate from σ_min "
            "through that many grid steps, which a short run does not finish; iCT (μ = 0, lognormal pairs) does not "
            "have this weakness."
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/consistency-error"), help="runs and results")
    parser.add_argument("--steps", type=int, default=4000, help="training steps of every consistency method")
    parser.add_argument("--teacher-steps", type=int, help="steps of ECT's teacher (default: --steps)")
    parser.add_argument("--data", choices=("eight_gaussians", "gmm"), default="eight_gaussians")
    parser.add_argument("--dim", type=int, default=2, help="gmm: dimension")
    parser.add_argument("--components", type=int, default=8, help="gmm: number of components")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate (CD, CT, iCT, ECT, teacher)")
    parser.add_argument("--scm-lr", type=float, default=3e-4, help="learning rate of sCT and sCD")
    parser.add_argument("--ect-stages", type=int, default=8, help="ECT stages over the budget (d = steps/stages)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {METHODS}")
    parser.add_argument("--samples", type=int, default=1000, help="held-out points for the error and W2")
    parser.add_argument("--ode-steps", type=int, default=512, help="Heun steps of the reference ODE solution")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="extra", action="append", default=[], help="extra SECTION.KEY=VALUE for all")
    args = parser.parse_args()
    args.teacher_steps = args.teacher_steps or args.steps
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {METHODS}")

    common = [
        f"data.name={args.data}", f"data.dim={args.dim}", f"data.components={args.components}",
        f"network.width={args.width}", f"network.depth={args.depth}", f"optim.batch_size={args.batch}",
        f"optim.lr={args.lr}", f"train.total_steps={args.steps}", f"train.checkpoint_every={args.steps}",
        f"train.seed={args.seed}", *args.extra,
    ]  # fmt: skip
    dataset = build_dataset(load_config(None, common).data)
    teacher, total = None, 0.0
    if "ect" in methods:
        teacher, seconds = train_or_reuse([*common, *method_overrides("teacher", args, None)], args.out / "teacher")
        print(f"teacher for ECT: {args.teacher_steps} steps, {seconds:.0f} s", flush=True)
        total += seconds
    results = {}
    for name in methods:
        folder, seconds = train_or_reuse([*common, *method_overrides(name, args, teacher)], args.out / name)
        results[name] = {"train_seconds": seconds, **score(folder, dataset, args)}
        total += seconds
        print(f"{name}: relative consistency error {results[name]['relative_error']:.4f} ({seconds:.0f} s)", flush=True)

    lines = [
        f"# Consistency error on {args.data} (dim {dataset.dim}), {args.steps} steps of batch {args.batch}",
        "",
        "Mean ‖f(x_σ, σ) − exact ODE(x_σ → σ_min)‖ over the 17 σ's of an 18-point Karras grid, divided by the data's",
        f"spread √(Σ Var x_j); {args.samples} held-out points; W2 against as many held-out points.",
        "",
        "| method | relative error | at σ≈0.1 | at σ≈1 | at σ=80 | W2 1 step | W2 2 steps | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {row_label(name)} | {r['relative_error']:.4f} | {near(r, 0.1):.4f} | {near(r, 1.0):.4f} | "
            f"{near(r, 80.0):.4f} | {r['w2_1']:.4f} | {r['w2_2']:.4f} | {r['train_seconds']:.0f} |"
        )
    lines += ["", *summary(results), "", f"Made by ({total / 60:.1f} min of training on this machine, the teacher for "
              "ECT included; train s: each run's compute time, from its log):", "", "```",
              "python " + " ".join(shlex.quote(a) for a in sys.argv), "```"]  # fmt: skip
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        args.out / "results.json", {"arguments": {**vars(args), "out": str(args.out)}, "results": results}
    )
    write_text_atomic(args.out / "results.md", text)
    print(text)


if __name__ == "__main__":
    main()
