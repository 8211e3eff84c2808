"""`cm sample`: draw samples from a checkpoint; every setting it needs is read from the checkpoint."""

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..devices import available_device
from ..errors import ConfigError
from ..files import atomic_path, check_output_folder
from ..model import Model
from ..sigmas import sigmas_from_diffusers_timesteps, sigmas_from_openai_ts
from ..solvers import SOLVERS

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


def integer(minimum: int, maximum: int = 2**63 - 1) -> Callable[[str], int]:
    """An argparse type: an integer in [minimum, maximum]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not minimum <= value <= maximum:
            bound = f"at least {minimum}" if maximum == 2**63 - 1 else f"in [{minimum}, {maximum}]"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    return parse


SEED = integer(0)  # seeds: [0, 2^63)


def int_list(text: str) -> list[int]:
    """An argparse type: one or more comma-separated integers."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def counts(minimum: int) -> Callable[[str], list[int]]:
    """An argparse type: one or more comma-separated integers, each at least `minimum`."""

    def parse(text: str) -> list[int]:
        values = int_list(text)
        if min(values) < minimum:
            raise argparse.ArgumentTypeError(f"each must be at least {minimum}, got {text!r}")
        return values

    return parse


def float_list(text: str) -> list[float]:
    """An argparse type: one or more comma-separated finite numbers."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected one or more finite numbers, got {text!r}")
    return values


def device(text: str) -> str:
    """An argparse type: a device this machine has (see devices.available_device); "auto" becomes cuda or cpu."""
    try:
        return str(available_device(text))
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint folder, or a run folder (newest)")
    parser.add_argument("--weights", help="weight set: online, target or ema-RATE (default: the first EMA)")
    parser.add_argument("--seed", type=SEED, default=0, help="noise seed (default 0)")
    parser.add_argument("--device", type=device, default="cpu", help="cpu, cuda, cuda:1, auto ... (default cpu)")


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
    parser.add_argument("--num", type=integer(1), default=2000, help="number of samples (default 2000)")
    points = parser.add_mutually_exclusive_group()
    points.add_argument("--steps", type=integer(1), help="consistency sampling steps (default 1)")
    points.add_argument("--sigmas", type=float_list, help="explicit decreasing σ's, e.g. 80,0.8")
    points.add_argument("--ts", type=int_list, help="openai's --ts indices, last = grid points − 1")
    points.add_argument("--timesteps", type=int_list, help="diffusers' timesteps (reversed grid indices)")
    parser.add_argument("--grid-points", type=integer(2), help="grid size for --ts/--timesteps (default: training N)")
    parser.add_argument("--teacher-steps", type=integer(2), help="teacher: Karras levels before σ = 0 (config's)")
    parser.add_argument("--solver", choices=SOLVERS, help="teacher: ODE solver")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network first (sampling.compile): pays for large --num (compiling took 7-48 s here)",
    )
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
    if args.sigmas is not None:
        return args.sigmas
    try:
        if args.ts is not None:
            return sigmas_from_openai_ts(args.ts, grid_points, d.sigma_min, d.sigma_max, d.rho).tolist()
        if args.timesteps is not None:
            return sigmas_from_diffusers_timesteps(
                args.timesteps, grid_points, d.sigma_min, d.sigma_max, d.rho
            ).tolist()
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return None


def check_sampling_options(args: argparse.Namespace, model: Model) -> None:
    """ConfigError for options that do not apply to the model's kind (the weight set was checked by `load`)."""
    teacher = model.parameterization == "denoiser"
    names = ("steps", "sigmas", "ts", "timesteps", "grid_points", "teacher_steps", "solver")
    given = [name for name in names if getattr(args, name) is not None]
    wrong = [name for name in given if (name in ("teacher_steps", "solver")) != teacher]
    if wrong:
        use = "--teacher-steps and --solver" if teacher else "--steps, --sigmas, --ts or --timesteps"
        raise ConfigError(
            f"--{wrong[0].replace('_', '-')} does not apply: {model.checkpoint} is a {model.method} model; use {use}"
        )
    if args.grid_points is not None and args.ts is None and args.timesteps is None:
        raise ConfigError("--grid-points applies only with --ts or --timesteps")


def run(args: argparse.Namespace) -> int:
    from ..model import load
    from ..plots import save_samples_picture, to_uint8

    check_output_folder(args.out)
    model = load(args.checkpoint, args.weights, args.device)
    check_sampling_options(args, model)
    model.config.sampling.compile = model.config.sampling.compile or args.compile
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
        np.savez(handle, **arrays)  # type: ignore[arg-type]  # numpy stubs type **kwds as allow_pickle
    picture = save_samples_picture(generated.x, args.out / "samples.png", title=f"{generated.nfe} NFE")
    print(f"{len(generated.x)} samples at {generated.nfe} NFE: {args.out / 'samples.npz'}, {picture}")
    return 0
