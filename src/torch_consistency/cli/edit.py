"""`cm edit`: zero-shot editing of PNG images with a consistency model (paper Algorithm 4, reference.md §7). It reads
the files, runs `edit_tasks.edit_in_batches` and writes the results."""

import argparse
from pathlib import Path

import torch

from ..edit_tasks import DEFAULT_ALPHAS, EDIT_TASKS, EditComparison, EditInputs, check_edit, edit_in_batches
from ..errors import ConfigError, DataError
from ..files import check_output_folder, write_json_atomic
from ..image_files import read_grey, read_image, read_mask
from ..model import Model, load
from ..plots import image_grid, save_png, to_uint8
from ..seeding import batch_generator
from ..solvers import ONE_STEP_SOLVERS
from .sample import SEED, add_checkpoint_arguments, add_guidance_argument, float_list, integer

MAX_GRID_ROWS = 64
EXAMPLES = """
Every result is written as OUT/NAME.png (NAME = the input's name), with OUT/comparison.png (one row per
input: input | reference | result [| teacher]; the reference is what Algorithm 4 keeps) and OUT/edit.json.
An input is a PNG or a folder of PNGs (processed --batch-size at a time) of the model's size; grey inputs
are widened to RGB models, colour inputs to grey models are refused. Masks: white (or 1) = generate.

examples:
  cm edit inpaint --checkpoint runs/cd --input photos/ --mask hole.png --out edits/inpaint
  cm edit colorize --checkpoint runs/cd --input grey.png --steps 18 --out edits/colour
  cm edit super-resolve --checkpoint runs/cd --input small/ --factor 4 --out edits/sr
  cm edit stroke --checkpoint runs/cd --input strokes.png --out edits/stroke      # t = 5.38, 2.24 (paper)
  cm edit denoise --checkpoint runs/cd --input clean.png --sigma 0.5 --add-noise --out edits/denoise
  cm edit interpolate --checkpoint runs/cd --input a.png --input2 b.png --out edits/a-to-b
  cm edit interpolate --checkpoint runs/cd --seed 1 --seed2 2 --num 4 --out edits/noises
  cm edit inpaint --checkpoint runs/cd --teacher runs/teacher --input x.png --mask m.png --out edits/vs-teacher
"""


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "edit",
        help="zero-shot editing: inpaint, colorize, super-resolve, stroke, denoise, interpolate",
        description="Edit images with a consistency model and no retraining (paper Algorithm 4). Time points: "
        "--sigmas, or --steps on a Karras grid (default 40 for inpaint/colorize/super-resolve, the paper's "
        "5.38,2.24 for stroke and image interpolation, σ_max for noise interpolation).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("task", choices=EDIT_TASKS, help="the edit to make")
    add_checkpoint_arguments(parser)
    parser.add_argument("--input", type=Path, help="a PNG or a folder of PNGs (super-resolve: the low-res images)")
    parser.add_argument("--input2", type=Path, help="interpolate: the second image(s), as many as --input")
    parser.add_argument("--mask", type=Path, help="inpaint: a binary PNG (white = generate), or a folder by name")
    parser.add_argument("--factor", type=int, help="super-resolve: the upscaling factor p (divides the size)")
    points = parser.add_mutually_exclusive_group()
    points.add_argument("--sigmas", type=float_list, help="explicit decreasing time points, e.g. 80,10,2,0.5")
    points.add_argument("--steps", type=integer(1), help="time points: the first STEPS of a Karras grid of STEPS+1")
    parser.add_argument("--sigma", type=float, help="denoise: the noise level of the input")
    parser.add_argument("--add-noise", action="store_true", help="denoise: add noise of level --sigma first")
    parser.add_argument("--alphas", type=float_list, default=list(DEFAULT_ALPHAS), help="interpolate: weights")
    parser.add_argument("--seed2", type=SEED, help="interpolate without --input: seed of the second noise")
    parser.add_argument("--num", type=integer(1), default=4, help="interpolate without --input: pairs of noises (4)")
    parser.add_argument("--label", type=int, help="class label, for class-conditional models")
    add_guidance_argument(parser)
    parser.add_argument("--teacher", type=Path, help="a teacher checkpoint: also run its PF-ODE baseline")
    parser.add_argument("--teacher-steps", type=integer(2), help="teacher: Karras levels before σ = 0 (config's)")
    parser.add_argument("--solver", choices=ONE_STEP_SOLVERS, help="teacher: ODE solver (default: config, or heun)")
    parser.add_argument("--batch-size", type=integer(1), default=64, help="images per batch (default 64)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.set_defaults(run=run)


def check_arguments(args: argparse.Namespace) -> None:
    """ConfigError for options that do not fit the task."""
    task = args.task
    needs = {"inpaint": "mask", "super-resolve": "factor", "denoise": "sigma"}
    if task in needs and getattr(args, needs[task]) is None:
        raise ConfigError(f"{task} needs --{needs[task]}")
    stepped = ("inpaint", "colorize", "super-resolve", "stroke", "interpolate")  # all but denoise (it uses --sigma)
    allowed: dict[str, tuple[str, ...]] = {
        "mask": ("inpaint",),
        "factor": ("super-resolve",),
        "sigma": ("denoise",),
        "input2": ("interpolate",),
    }
    allowed.update(seed2=("interpolate",), sigmas=stepped, steps=stepped)
    for option, tasks in allowed.items():
        if getattr(args, option) is not None and task not in tasks:
            raise ConfigError(f"--{option} does not apply to {task}")
    if args.input is None and not (task == "interpolate" and args.seed2 is not None):
        raise ConfigError(f"{task} needs --input" + (" (or --seed2 for two noises)" if task == "interpolate" else ""))
    if task == "interpolate" and args.input is not None and args.input2 is None:
        raise ConfigError("interpolate needs --input2 beside --input (or --seed2 instead of both)")


def check_out_spares_inputs(args: argparse.Namespace) -> None:
    """ConfigError when --out (or OUT/teacher) holds input files: results named after them would replace them."""
    targets = {args.out.resolve(), (args.out / "teacher").resolve()}
    for option in ("input", "input2", "mask"):
        path = getattr(args, option)
        if path is not None and (path.resolve() if path.is_dir() else path.resolve().parent) in targets:
            raise ConfigError(f"--out {args.out} holds the --{option} files, which the results would overwrite")


def list_pngs(path: Path, what: str) -> list[Path]:
    """The PNG itself, or the PNGs of a folder sorted by name."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png" and p.is_file())
        if not files:
            raise DataError(f"{what} folder {path} holds no .png files")
        return files
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist")
    return [path]


def load_inputs(args: argparse.Namespace, shape: tuple[int, ...]) -> tuple[list[str], EditInputs]:
    """The names of the results and the inputs, read and checked from the files before anything is computed."""
    channels, height, width = shape
    task_options = {"factor": args.factor, "sigma": args.sigma, "add_noise": args.add_noise, "alphas": args.alphas}
    if args.input is None:  # between the noises of `cm sample --seed` and `--seed2` (their first batches)
        first, second = (
            torch.randn((args.num, *shape), generator=batch_generator(s, 0)) for s in (args.seed, args.seed2)
        )
        names = [f"noise-{i}" for i in range(args.num)]
        return names, EditInputs(first, second=second, noises=True, **task_options)
    files = list_pngs(args.input, "input")
    if args.task == "colorize":
        images = [read_grey(f, (height, width), f"input {f}") for f in files]
    else:
        size = (height // args.factor, width // args.factor) if args.task == "super-resolve" else (height, width)
        images = [read_image(f, channels, size, f"input {f}") for f in files]
    inputs = EditInputs(torch.stack(images), **task_options)
    if args.task == "inpaint":
        masks = list_pngs(args.mask, "mask")
        if args.mask.is_dir():
            by_name = {m.name: m for m in masks}
            missing = [f.name for f in files if f.name not in by_name]
            if missing:
                raise DataError(f"mask folder {args.mask} has no mask named {missing[0]}")
            masks = [by_name[f.name] for f in files]
        mask = torch.stack([read_mask(m, (height, width), f"mask {m}") for m in masks])[:, None]
        inputs.mask = mask if args.mask.is_dir() else mask[:1]
    if args.task == "interpolate":
        others = list_pngs(args.input2, "input2")
        if len(others) != len(files):
            raise DataError(f"--input has {len(files)} images but --input2 has {len(others)}")
        inputs.second = torch.stack([read_image(f, channels, (height, width), f"input2 {f}") for f in others])
    return [f.stem for f in files], inputs


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    check_output_folder(args.out)
    check_out_spares_inputs(args)
    model = load(args.checkpoint, args.weights, args.device)
    teacher = None if args.teacher is None else load(args.teacher, device=args.device)
    check_edit(model, args.task, teacher, args.factor)
    names, inputs = load_inputs(args, model.sample_shape)
    comparison = edit_in_batches(
        model, args.task, inputs, teacher=teacher, steps=args.steps, sigmas=args.sigmas, seed=args.seed,
        batch_size=args.batch_size, labels=args.label, guidance=args.guidance, teacher_steps=args.teacher_steps,
        solver=args.solver,
    )  # fmt: skip
    return write(args, names, model, teacher, comparison)


def write(
    args: argparse.Namespace, names: list[str], model: Model, teacher: Model | None, edits: EditComparison
) -> int:
    """OUT/NAME.png per result (interpolation: NAME-K.png per α), the teacher's in OUT/teacher/, OUT/comparison.png
    and OUT/edit.json."""
    written = []
    for folder, images in (("", edits.results), ("teacher/", edits.teacher)):
        for name, image in zip(names, [] if images is None else images, strict=False):
            if image.ndim == 3:
                written.append(save_png(to_uint8(image[None])[0], args.out / f"{folder}{name}.png"))
                continue
            for k, frame in enumerate(image):  # interpolation: one image per α
                written.append(save_png(to_uint8(frame[None])[0], args.out / f"{folder}{name}-{k:02d}.png"))
    grid = image_grid(edits.panels[: MAX_GRID_ROWS * edits.columns], columns=edits.columns)
    save_png(grid, args.out / "comparison.png", scale=max(1, min(8, 512 // max(grid.shape[:2]))))
    baseline = None if teacher is None else {"checkpoint": str(teacher.checkpoint), "nfe": edits.teacher_nfe}
    summary = {
        "task": args.task, "checkpoint": str(model.checkpoint), "weights": args.weights, "seed": args.seed,
        "sigmas": edits.sigmas, "nfe": edits.nfe, "teacher": baseline, "outputs": [str(p) for p in written],
        "alphas": args.alphas if args.task == "interpolate" else None,
    }  # fmt: skip
    write_json_atomic(args.out / "edit.json", summary)
    count = sum(1 for p in written if p.parent == args.out)
    note = "" if teacher is None else f" (teacher baseline: {edits.teacher_nfe} NFE, in {args.out / 'teacher'})"
    print(f"{args.task}: {count} images at {edits.nfe} NFE{note}; comparison: {args.out / 'comparison.png'}")
    return 0
