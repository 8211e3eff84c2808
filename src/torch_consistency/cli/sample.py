"""`cm sample`: draw samples from a checkpoint; every setting it needs is read from the checkpoint."""

import argparse
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..files import atomic_path
from ..model import Model
from ..sigmas import sigmas_from_diffusers_timesteps, sigmas_from_openai_ts

EXAMPLES = """
examples:
  cm sample --checkpoint runs/cd --steps 2 --out samples/cd2
  cm sample --checkpoint runs/cd --sigmas 80,0.8 --out samples/cd-custom
  cm sample --checkpoint runs/cd --ts 0,11,17 --out samples/cd-openai     # openai's --ts (indices on the training grid)
  cm sample --checkpoint runs/cd --timesteps 11,0 --out samples/cd-diff   # diffusers' timesteps (reversed indices)
  cm sample --checkpoint runs/teacher --teacher-steps 18 --solver heun --out samples/teacher
  cm sample --checkpoint runs/mnist-cd --label 3 --out samples/threes        # class-conditional: class 3 only
  cm sample --checkpoint runs/mnist-cd --label all --num 100 --out samples/all   # 10 of each class, in order
  cm sample --checkpoint runs/mnist-cd-cfg --label 1,3,7 --guidance 2 --out samples/w2   # guided student, w = 2
  cm sample --checkpoint runs/mnist-teacher-cfg --guidance 4 --out samples/cfg  # CFG teacher: 2 calls per step
"""


def int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint folder, or a run folder (newest)")
    parser.add_argument("--weights", help="weight set: online, target or ema-RATE (default: the first EMA)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default cpu)")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "sample",
        help="draw samples from a checkpoint",
        description="Draw samples from a consistency model (one or more steps) or a teacher (ODE solver). "
        "Writes OUT/samples.npz (images: uint8 NHWC as arr_0 and labels as arr_1, the layout of openai's "
        "evaluator; vectors: float32 as samples) and a picture OUT/samples.png.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_checkpoint_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--num", type=int, default=2000, help="number of samples (default 2000)")
    points = parser.add_mutually_exclusive_group()
    points.add_argument("--steps", type=int, help="consistency sampling steps (default 1)")
    points.add_argument("--sigmas", type=float_list, help="explicit decreasing σ's, e.g. 80,0.8")
    points.add_argument("--ts", type=int_list, help="openai's --ts indices, last = grid points − 1")
    points.add_argument("--timesteps", type=int_list, help="diffusers' timesteps (reversed grid indices)")
    parser.add_argument("--grid-points", type=int, help="grid size for --ts/--timesteps (default: the training N)")
    parser.add_argument("--teacher-steps", type=int, help="teacher: Karras levels before σ = 0 (default from config)")
    parser.add_argument("--solver", choices=("euler", "heun", "dpmpp-2m"), help="teacher: ODE solver")
    add_conditioning_arguments(parser)
    parser.set_defaults(run=run)


def add_conditioning_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--label",
        type=label_choice,
        help="class-conditional models: a class (3), a list (1,3,7) or 'all', in equal blocks (default: random)",
    )
    add_guidance_argument(parser)


def add_guidance_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--guidance",
        type=float,
        metavar="W",
        help="guidance scale w (0 unconditional, 1 conditional): a guided student's input, or classifier-free "
        "guidance for a teacher trained with label dropout (default: the checkpoint's sampling.guidance)",
    )


def label_choice(text: str) -> str | list[int]:
    """'all' or comma-separated class numbers."""
    if text.strip() == "all":
        return "all"
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a class, comma-separated classes or 'all', got {text!r}") from None


def sampling_sigmas(args: argparse.Namespace, model: Model) -> list[float] | None:
    """The σ's chosen on the command line, or None for the default at --steps."""
    d = model.config.diffusion
    grid_points = args.grid_points or model.grid_points
    try:
        if args.sigmas is not None:
            return args.sigmas
        if args.ts is not None:
            return sigmas_from_openai_ts(args.ts, grid_points, d.sigma_min, d.sigma_max, d.rho).tolist()
        if args.timesteps is not None:
            return sigmas_from_diffusers_timesteps(
                args.timesteps, grid_points, d.sigma_min, d.sigma_max, d.rho
            ).tolist()
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return None


def run(args: argparse.Namespace) -> int:
    from ..evaluation.plots import save_samples_picture, to_uint8
    from ..model import load

    if args.num < 1:
        raise ConfigError(f"--num must be at least 1, got {args.num}")
    model = load(args.checkpoint, args.weights, args.device)
    generated = model.sample(
        args.num, steps=args.steps, sigmas=sampling_sigmas(args, model), teacher_steps=args.teacher_steps,
        solver=args.solver, labels=args.label, guidance=args.guidance, seed=args.seed, progress=True,
    )  # fmt: skip
    if generated.x.ndim == 4:  # images: uint8 NHWC as arr_0 and labels as arr_1, the layout openai's evaluator reads
        arrays = {"arr_0": to_uint8(generated.x)}
        if generated.labels is not None:
            arrays["arr_1"] = generated.labels.numpy()
    else:
        arrays = {"samples": generated.x.numpy()}
        if generated.labels is not None:
            arrays["labels"] = generated.labels.numpy()
    arrays["nfe"] = np.array(generated.nfe)
    if generated.guidance is not None:
        arrays["guidance"] = np.array(generated.guidance)
    with atomic_path(args.out / "samples.npz") as temporary, open(temporary, "wb") as handle:
        np.savez(handle, **arrays)
    picture = save_samples_picture(generated.x, args.out / "samples.png", title=f"{generated.nfe} NFE")
    print(f"{len(generated.x)} samples at {generated.nfe} NFE: {args.out / 'samples.npz'}, {picture}")
    return 0
