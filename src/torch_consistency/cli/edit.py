"""`cm edit`: zero-shot editing of PNG images with a consistency model (paper Algorithm 4, reference.md §7)."""

import argparse
from pathlib import Path

import torch

from ..errors import ConfigError, DataError
from ..files import check_output_folder
from ..model import Model
from .sample import SEED, add_checkpoint_arguments, add_guidance_argument, float_list, integer

TASKS = ("inpaint", "colorize", "super-resolve", "stroke", "denoise", "interpolate")
PROBLEM_TASKS = ("inpaint", "colorize", "super-resolve")
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
    parser.add_argument("task", choices=TASKS, help="the edit to make")
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
    parser.add_argument("--alphas", type=float_list, default=[0, 0.25, 0.5, 0.75, 1], help="interpolate: weights")
    parser.add_argument("--seed2", type=SEED, help="interpolate without --input: seed of the second noise")
    parser.add_argument("--num", type=integer(1), default=4, help="interpolate without --input: pairs of noises (4)")
    parser.add_argument("--label", type=int, help="class label, for class-conditional models")
    add_guidance_argument(parser)
    parser.add_argument("--teacher", type=Path, help="a teacher checkpoint: also run its PF-ODE baseline")
    parser.add_argument("--teacher-steps", type=integer(2), help="teacher: Karras levels before σ = 0 (config's)")
    parser.add_argument("--solver", choices=("euler", "heun"), help="teacher: ODE solver (default: config, or heun)")
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
    if task == "interpolate" and not args.alphas:
        raise ConfigError("--alphas must list at least one weight")
    if args.teacher is not None and task == "interpolate":
        raise ConfigError("there is no teacher baseline for interpolate")


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


def load_inputs(args: argparse.Namespace, shape: tuple[int, int, int]) -> dict[str, object]:
    """Read and check every input file before anything is computed or written."""
    from ..image_files import read_grey, read_image, read_mask

    channels, height, width = shape
    if args.input is None:  # interpolation between two noises drawn from --seed and --seed2
        noises = [
            torch.randn((args.num, *shape), generator=torch.Generator().manual_seed(s)) for s in (args.seed, args.seed2)
        ]
        return {"names": [f"noise-{i}" for i in range(args.num)], "x": noises[0], "x2": noises[1]}
    files = list_pngs(args.input, "input")
    if args.task == "colorize":
        images = [read_grey(f, (height, width), f"input {f}") for f in files]
    else:
        size = (height // args.factor, width // args.factor) if args.task == "super-resolve" else (height, width)
        images = [read_image(f, channels, size, f"input {f}") for f in files]
    loaded: dict[str, object] = {"names": [f.stem for f in files], "x": torch.stack(images)}
    if args.task == "inpaint":
        masks = list_pngs(args.mask, "mask")
        if args.mask.is_dir():
            by_name = {m.name: m for m in masks}
            missing = [f.name for f in files if f.name not in by_name]
            if missing:
                raise DataError(f"mask folder {args.mask} has no mask named {missing[0]}")
            masks = [by_name[f.name] for f in files]
        mask = torch.stack([read_mask(m, (height, width), f"mask {m}") for m in masks])[:, None]
        loaded["mask"] = mask if args.mask.is_dir() else mask[:1]
    if args.task == "interpolate":
        others = list_pngs(args.input2, "input2")
        if len(others) != len(files):
            raise DataError(f"--input has {len(files)} images but --input2 has {len(others)}")
        loaded["x2"] = torch.stack([read_image(f, channels, (height, width), f"input2 {f}") for f in others])
    return loaded


def run(args: argparse.Namespace) -> int:
    from ..editing import check_task_fits_model
    from ..model import load

    check_arguments(args)
    check_output_folder(args.out)
    check_out_spares_inputs(args)
    model = load(args.checkpoint, args.weights, args.device)
    if model.parameterization == "denoiser":
        raise ConfigError(
            f"{model.checkpoint} is a {model.method} model (denoiser); editing needs a consistency model f(x, σ) "
            "(cd, ct, ict, ect, scm), and takes a teacher with --teacher"
        )
    shape = model.sample_shape
    if len(shape) != 3:
        raise ConfigError(f"editing needs an image model; {model.checkpoint} makes samples of shape {shape}")
    check_task_fits_model(args.task, shape, args.factor)
    if model.num_classes > 0 and not (args.label is not None and 0 <= args.label < model.num_classes):
        raise ConfigError(f"the model is class-conditional: give --label between 0 and {model.num_classes - 1}")
    if model.num_classes == 0 and args.label is not None:
        raise ConfigError(f"--label applies to class-conditional models; {model.checkpoint} is unconditional")
    teacher = None
    if args.teacher is not None:
        teacher = load(args.teacher, device=args.device)
        if teacher.parameterization != "denoiser" or teacher.sample_shape != shape:
            raise ConfigError(f"--teacher {teacher.checkpoint} is not a teacher (denoiser) for images of shape {shape}")
    loaded = load_inputs(args, shape)
    if args.task == "denoise":
        sigmas = [args.sigma]
    else:
        sigmas = model.edit_sigmas(args.task, args.steps, args.sigmas, noises=args.input is None)
    return Editor(args, model, teacher, loaded, sigmas).run()


class Editor:
    """Runs one task over the loaded inputs in batches (batch b's noise from seed + b) and writes the results."""

    def __init__(self, args, model: Model, teacher: Model | None, loaded, sigmas: list[float]) -> None:
        self.args, self.model, self.teacher, self.loaded, self.sigmas = args, model, teacher, loaded, sigmas

    @torch.no_grad()
    def run(self) -> int:
        args, device = self.args, self.model.device
        names = self.loaded["names"]
        rows: list = []
        results: list = []
        extras: list = []
        nfe, teacher_nfe = 0, None
        for b, start in enumerate(range(0, len(names), args.batch_size)):
            stop = min(start + args.batch_size, len(names))
            batch = {k: v[start:stop] if k != "mask" or len(v) > 1 else v for k, v in self.loaded.items()}
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            generator = torch.Generator(device=device).manual_seed(args.seed + b)
            panels, result, nfe = self.edit(batch, generator)
            results.extend(result.cpu().unbind(0))
            if self.teacher is not None:
                generator = torch.Generator(device=device).manual_seed(args.seed + b)
                out = self.apply(self.teacher, batch, generator)
                panels.append(out.x)
                extras.extend(out.x.cpu().unbind(0))
                teacher_nfe = out.nfe
            rows.append(torch.stack(panels, dim=1).flatten(0, 1).cpu())
        return self.write(names, results, extras, torch.cat(rows), nfe, teacher_nfe)

    def apply(self, model: Model, batch: dict, generator: torch.Generator):
        """The model's edit of one batch (a teacher: its PF-ODE baseline with --teacher-steps and --solver)."""
        args, x = self.args, batch["x"]
        options = {"labels": args.label, "guidance": args.guidance}
        if model.parameterization == "denoiser":
            options.update(teacher_steps=args.teacher_steps, solver=args.solver)
            options["guidance"] = args.guidance if model.guidance is not None else None
        if args.task == "denoise":
            return model.denoise(batch["noisy"], args.sigma, **options)
        if model.parameterization != "denoiser" or args.task == "stroke":  # a teacher's stroke starts at t_1
            options["sigmas"] = self.sigmas
        options["generator"] = generator
        if args.task == "inpaint":
            return model.inpaint(x, batch["mask"], **options)
        if args.task == "colorize":
            return model.colorize(x, **options)
        if args.task == "super-resolve":
            return model.super_resolve(x, args.factor, **options)
        if args.task == "stroke":
            return model.edit_strokes(x, **options)
        return model.interpolate(x, batch["x2"], args.alphas, noises=args.input is None, **options)

    def edit(self, batch: dict, generator: torch.Generator) -> tuple[list[torch.Tensor], torch.Tensor, int]:
        """(panels of the comparison grid, each (B, C, H, W); the results; NFE) for one batch."""
        from .. import editing

        args, x = self.args, batch["x"]
        if args.task == "denoise":
            batch["noisy"] = (
                x + args.sigma * torch.randn(x.shape, generator=generator, device=x.device) if args.add_noise else x
            )
        out = self.apply(self.model, batch, generator)
        if args.task == "inpaint":
            return [x, editing.inpainting_problem(x, batch["mask"]).known(), out.x], out.x, out.nfe
        if args.task == "colorize":
            return [x.expand_as(out.x), editing.colorization_problem(x).known(), out.x], out.x, out.nfe
        if args.task == "super-resolve":
            problem = editing.super_resolution_problem(x, args.factor)
            return [problem.reference, problem.known(), out.x], out.x, out.nfe
        if args.task == "stroke":
            return [x, x, out.x], out.x, out.nfe
        if args.task == "denoise":
            return [batch["noisy"], x, out.x], out.x, out.nfe
        if args.input is None:
            return list(out.x.unbind(1)), out.x, out.nfe
        return [x, *out.x.unbind(1), batch["x2"]], out.x, out.nfe

    def write(self, names, results, extras, panels: torch.Tensor, nfe: int, teacher_nfe: int | None) -> int:
        from ..files import write_json_atomic
        from ..plots import image_grid, save_png, to_uint8

        args, written = self.args, []
        for folder, images in (("", results), ("teacher/", extras)):
            for name, image in zip(names, images, strict=False):
                if image.ndim == 3:
                    written.append(save_png(to_uint8(image[None])[0], args.out / f"{folder}{name}.png"))
                    continue
                for k, frame in enumerate(image):  # interpolation: one image per α
                    written.append(save_png(to_uint8(frame[None])[0], args.out / f"{folder}{name}-{k:02d}.png"))
        columns = self.columns()
        grid = image_grid(panels[: MAX_GRID_ROWS * columns], columns=columns)
        save_png(grid, args.out / "comparison.png", scale=max(1, min(8, 512 // max(grid.shape[:2]))))
        teacher = None
        if self.teacher is not None:
            teacher = {"checkpoint": str(self.teacher.checkpoint), "nfe": teacher_nfe}
        summary = {
            "task": args.task, "checkpoint": str(self.model.checkpoint), "weights": args.weights, "seed": args.seed,
            "sigmas": self.sigmas, "nfe": nfe, "teacher": teacher, "outputs": [str(p) for p in written],
            "alphas": args.alphas if args.task == "interpolate" else None,
        }  # fmt: skip
        write_json_atomic(args.out / "edit.json", summary)
        count = sum(1 for p in written if p.parent == args.out)
        note = "" if teacher_nfe is None else f" (teacher baseline: {teacher_nfe} NFE, in {args.out / 'teacher'})"
        print(f"{args.task}: {count} images at {nfe} NFE{note}; comparison: {args.out / 'comparison.png'}")
        return 0

    def columns(self) -> int:
        if self.args.task != "interpolate":
            return 3 + (self.teacher is not None)
        return len(self.args.alphas) + (2 if self.args.input is not None else 0)
