"""`cm edit`: zero-shot editing of PNG images with a consistency model (paper Algorithm 4, reference.md §7)."""

import argparse
from pathlib import Path

import numpy as np
import torch

from ..config import has_guidance_input
from ..errors import ConfigError, DataError
from ..files import check_output_folder
from .sample import SEED, add_checkpoint_arguments, float_list, integer

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
    allowed = {"mask": ("inpaint",), "factor": ("super-resolve",), "sigma": ("denoise",), "input2": ("interpolate",)}
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


def read_pixels(path: Path, mode: str) -> np.ndarray:
    """uint8 H×W (mode L) or H×W×3 (mode RGB); DataError for unreadable files and 16-bit or float images."""
    from ..data.images import open_image

    return np.asarray(open_image(path, mode))


def read_image(path: Path, channels: int, size: tuple[int, int], what: str = "input") -> torch.Tensor:
    """An image as (C, H, W) in [-1, 1], widened from grey to RGB if needed; DataError for colour → grey or size."""
    rgb = read_pixels(path, "RGB")
    if rgb.shape[:2] != size:
        raise DataError(f"{what} {path} is {rgb.shape[0]}×{rgb.shape[1]}; expected {size[0]}×{size[1]} images")
    if channels == 1:
        if not (rgb == rgb[..., :1]).all():
            raise DataError(f"{what} {path} is a colour (3-channel) image; the model makes grey (1-channel) images")
        rgb = rgb[..., :1]
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 127.5 - 1


def read_mask(path: Path, size: tuple[int, int]) -> torch.Tensor:
    """A binary mask (H, W), True = generate, from a PNG holding only 0 and 255 (or only 0 and 1)."""
    pixels = read_pixels(path, "L")
    if pixels.shape != size:
        raise DataError(f"mask {path} is {pixels.shape[0]}×{pixels.shape[1]}; the images are {size[0]}×{size[1]}")
    values = set(np.unique(pixels).tolist())
    if not (values <= {0, 255} or values <= {0, 1}):
        raise DataError(f"mask {path} is not binary: it holds values other than 0 and 255 (white = generate)")
    return torch.from_numpy(pixels > 0)


def load_inputs(args: argparse.Namespace, shape: tuple[int, int, int]) -> dict[str, object]:
    """Read and check every input file before anything is computed or written."""
    channels, height, width = shape
    if args.input is None:  # interpolation between two noises drawn from --seed and --seed2
        noises = [
            torch.randn((args.num, *shape), generator=torch.Generator().manual_seed(s)) for s in (args.seed, args.seed2)
        ]
        return {"names": [f"noise-{i}" for i in range(args.num)], "x": noises[0], "x2": noises[1]}
    files = list_pngs(args.input, "input")
    if args.task == "colorize":
        size = (height, width)
        images = [torch.from_numpy(read_pixels(f, "L").copy()).float()[None] / 127.5 - 1 for f in files]
        for file, image in zip(files, images, strict=True):
            if tuple(image.shape[1:]) != size:
                raise DataError(f"input {file} is {image.shape[1]}×{image.shape[2]}; the model makes {height}×{width}")
    else:
        size = (height // args.factor, width // args.factor) if args.task == "super-resolve" else (height, width)
        images = [read_image(f, channels, size) for f in files]
    loaded: dict[str, object] = {"names": [f.stem for f in files], "x": torch.stack(images)}
    if args.task == "inpaint":
        masks = list_pngs(args.mask, "mask")
        if args.mask.is_dir():
            by_name = {m.name: m for m in masks}
            missing = [f.name for f in files if f.name not in by_name]
            if missing:
                raise DataError(f"mask folder {args.mask} has no mask named {missing[0]}")
            masks = [by_name[f.name] for f in files]
        loaded["mask"] = torch.stack([read_mask(m, (height, width)) for m in masks])[:, None]
        if not args.mask.is_dir():
            loaded["mask"] = loaded["mask"][:1]
    if args.task == "interpolate":
        others = list_pngs(args.input2, "input2")
        if len(others) != len(files):
            raise DataError(f"--input has {len(files)} images but --input2 has {len(others)}")
        loaded["x2"] = torch.stack([read_image(f, channels, (height, width), "input2") for f in others])
    return loaded


def run(args: argparse.Namespace) -> int:
    from ..editing import check_sigmas, check_task_fits_model
    from ..training.checkpoint import load_checkpoint

    check_arguments(args)
    check_output_folder(args.out)
    check_out_spares_inputs(args)
    checkpoint = load_checkpoint(args.checkpoint)
    checkpoint.weight_set(args.weights)
    if checkpoint.parameterization != "consistency":
        raise ConfigError(
            f"{checkpoint.path} is a {checkpoint.config.train.method} model ({checkpoint.parameterization}); editing "
            "needs a consistency model f(x, σ) (cd, ct, ict, ect), and takes a teacher with --teacher"
        )
    shape = tuple(checkpoint.sample_shape)
    if len(shape) != 3:
        raise ConfigError(f"editing needs an image model; {checkpoint.path} makes samples of shape {shape}")
    check_task_fits_model(args.task, shape, args.factor)
    if checkpoint.num_classes > 0 and not (args.label is not None and 0 <= args.label < checkpoint.num_classes):
        raise ConfigError(f"the model is class-conditional: give --label between 0 and {checkpoint.num_classes - 1}")
    if checkpoint.num_classes == 0 and args.label is not None:
        raise ConfigError(f"--label applies to class-conditional models; {checkpoint.path} is unconditional")
    teacher = None
    if args.teacher is not None:
        teacher = load_checkpoint(args.teacher)
        if teacher.parameterization != "denoiser" or tuple(teacher.sample_shape) != shape:
            raise ConfigError(f"--teacher {teacher.path} is not a teacher (denoiser) for images of shape {shape}")
    loaded = load_inputs(args, shape)
    d = checkpoint.config.diffusion
    sigmas = check_sigmas(default_sigmas(args, d) if args.sigmas is None else args.sigmas, d.sigma_min)
    return Editor(args, checkpoint, teacher, loaded, sigmas).run()


def default_sigmas(args: argparse.Namespace, d) -> list[float]:
    """The time points when --sigmas is not given (see --help)."""
    from ..editing import DEFAULT_EDIT_STEPS, STROKE_SIGMAS, default_edit_sigmas

    if args.task == "denoise":
        return [args.sigma]
    if args.steps is None and (args.task == "stroke" or (args.task == "interpolate" and args.input is not None)):
        return list(STROKE_SIGMAS)
    steps = args.steps or (1 if args.task == "interpolate" else DEFAULT_EDIT_STEPS)
    return default_edit_sigmas(d.sigma_min, d.sigma_max, d.rho, steps)


class Editor:
    """Runs one task over the loaded inputs in batches and writes the results."""

    def __init__(self, args, checkpoint, teacher, loaded, sigmas) -> None:
        self.args, self.checkpoint, self.loaded, self.sigmas = args, checkpoint, loaded, sigmas
        self.teacher_checkpoint = teacher
        self.sigma_min = checkpoint.config.diffusion.sigma_min
        self.clip = checkpoint.config.sampling.clip_denoised

    def network(self, model: torch.nn.Module, count: int):
        labels = None if self.args.label is None else torch.full((count,), self.args.label, device=self.args.device)
        if model.parameterization == "consistency" and has_guidance_input(self.checkpoint.config):  # its default w
            w = torch.full((count,), self.checkpoint.config.sampling.guidance, device=self.args.device)
            return lambda x, sigma: model(x, sigma, labels, guidance=w)
        return lambda x, sigma: model(x, sigma, labels)

    @torch.no_grad()
    def run(self) -> int:
        args = self.args
        model = self.checkpoint.build_model(args.weights).to(args.device)
        teacher = self.teacher_checkpoint.build_model().to(args.device) if self.teacher_checkpoint else None
        names = self.loaded["names"]
        rows, results, extras, nfe, teacher_nfe = [], [], [], 0, None
        for b, start in enumerate(range(0, len(names), args.batch_size)):
            stop = min(start + args.batch_size, len(names))
            batch = {k: v[start:stop] if k != "mask" or len(v) > 1 else v for k, v in self.loaded.items()}
            batch = {k: v.to(args.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            generator = torch.Generator(device=args.device).manual_seed(args.seed + b)
            panels, result, nfe = self.edit(self.network(model, stop - start), batch, generator)
            results.extend(result.cpu().unbind(0))
            if teacher is not None:
                generator = torch.Generator(device=args.device).manual_seed(args.seed + b)
                extra, teacher_nfe = self.baseline(self.network(teacher, stop - start), batch, generator)
                panels.append(extra)
                extras.extend(extra.cpu().unbind(0))
            rows.append(torch.stack(panels, dim=1).flatten(0, 1).cpu())
        return self.write(names, results, extras, torch.cat(rows), nfe, teacher_nfe)

    def edit(self, fn, batch: dict, generator: torch.Generator) -> tuple[list[torch.Tensor], torch.Tensor, int]:
        """(panels of the comparison grid, each (B, C, H, W); the results; NFE) for one batch."""
        from .. import editing

        args, levels, common = self.args, self.sigmas, {"sigma_min": self.sigma_min, "clip_denoised": self.clip}
        x = batch["x"]
        if args.task in PROBLEM_TASKS:
            problem = self.problem(batch)
            out = editing.edit(fn, problem.reference, problem.transform, problem.mask, levels, generator=generator,
                               **common)  # fmt: skip
            shown = x.expand_as(out.x) if args.task == "colorize" else x
            shown = problem.reference if args.task == "super-resolve" else shown
            return [shown, problem.known(), out.x], out.x, out.nfe
        if args.task == "stroke":
            out = editing.stroke_guided(fn, x, sigmas=levels, generator=generator, **common)
            return [x, x, out.x], out.x, out.nfe
        if args.task == "denoise":
            noisy = self.noisy(batch, generator)
            out = editing.denoise(fn, noisy, args.sigma, **common)
            return [noisy, x, out.x], out.x, out.nfe
        if args.input is None:
            out = editing.interpolate_noises(fn, x, batch["x2"], args.alphas, sigmas=levels, generator=generator,
                                             **common)  # fmt: skip
            return list(out.x.unbind(1)), out.x, out.nfe
        out = editing.interpolate_images(fn, x, batch["x2"], args.alphas, sigmas=levels, generator=generator,
                                         **common)  # fmt: skip
        return [x, *out.x.unbind(1), batch["x2"]], out.x, out.nfe

    def noisy(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        if not self.args.add_noise:
            return batch["x"]
        z = torch.randn(batch["x"].shape, generator=generator, device=batch["x"].device)
        return batch["x"] + self.args.sigma * z

    def problem(self, batch: dict):
        from .. import editing

        if self.args.task == "inpaint":
            return editing.inpainting_problem(batch["x"], batch["mask"])
        if self.args.task == "colorize":
            return editing.colorization_problem(batch["x"])
        return editing.super_resolution_problem(batch["x"], self.args.factor)

    def baseline(self, denoiser, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, int]:
        """The teacher's PF-ODE result for the same batch, and its NFE."""
        from ..editing import edit_with_teacher
        from ..generate import teacher_sigmas
        from ..sigmas import karras_sigmas
        from ..solvers import solve_ode

        config = self.teacher_checkpoint.config
        d, levels = config.diffusion, self.args.teacher_steps or config.sampling.teacher_steps
        solver = self.args.solver or config.sampling.teacher_solver
        solver = solver if solver in ("euler", "heun") else "heun"  # guidance needs step-by-step solvers
        if self.args.task in PROBLEM_TASKS:
            problem = self.problem(batch)
            grid = teacher_sigmas(levels, d.sigma_min, d.sigma_max, d.rho)
            out = edit_with_teacher(denoiser, problem.reference, problem.transform, problem.mask, grid, solver,
                                    generator, self.clip)  # fmt: skip
            return out.x, out.nfe
        top = self.sigmas[0] if self.args.task == "stroke" else self.args.sigma
        grid = torch.cat([karras_sigmas(max(levels, 2), d.sigma_min, top, d.rho), torch.zeros(1, dtype=torch.float64)])
        if self.args.task == "stroke":
            start = batch["x"] + top * torch.randn(batch["x"].shape, generator=generator, device=batch["x"].device)
        else:
            start = self.noisy(batch, generator)
        out = solve_ode(denoiser, start, grid, solver)
        return (out.x.clamp(-1, 1) if self.clip else out.x), out.nfe

    def write(self, names, results, extras, panels: torch.Tensor, nfe: int, teacher_nfe: int | None) -> int:
        from ..evaluation.plots import image_grid, save_png, to_uint8
        from ..files import write_json_atomic

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
        if self.teacher_checkpoint is not None:
            teacher = {"checkpoint": str(self.teacher_checkpoint.path), "nfe": teacher_nfe}
        summary = {
            "task": args.task, "checkpoint": str(self.checkpoint.path), "weights": args.weights, "seed": args.seed,
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
            return 3 + (self.teacher_checkpoint is not None)
        return len(self.args.alphas) + (2 if self.args.input is not None else 0)
