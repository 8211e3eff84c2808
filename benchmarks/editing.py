"""Zero-shot editing, measured by a classifier and shown in a figure (one row per task).

    python benchmarks/editing.py --cd runs/mnist-cd --teacher runs/mnist-teacher \
        --colored-cd runs/colored-cd --colored-teacher runs/colored-teacher --factor 4 --out docs/results/editing-mnist

For held-out digits: inpaint the lower half, super-resolve by --factor (7×7 → 28×28 on MNIST with 4) and,
with coloured models, colorize the grey version. A classifier of the evaluation, trained on the same kind of
images, labels every result; the rate at which it names the original digit is reported for the consistency
model at a few and at many steps and for the teacher's PF-ODE with replacement guidance, beside the rates for
the originals and the degraded inputs. The figure adds stroke-guided generation, denoising and interpolation.
Writes OUT/report.md, OUT/results.json and OUT/editing.png.
"""

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

import torch

from torch_consistency.checkpoint import load_checkpoint
from torch_consistency.data import build_dataset
from torch_consistency.editing import (
    LUMINANCE,
    colorization_problem,
    denoise,
    edit,
    edit_with_teacher,
    inpainting_problem,
    interpolate_noises,
    stroke_guided,
    super_resolution_problem,
)
from torch_consistency.evaluation.classifier import load_or_train_classifier
from torch_consistency.files import write_json_atomic, write_text_atomic
from torch_consistency.generate import teacher_sigmas
from torch_consistency.plots import save_image_rows
from torch_consistency.sigmas import default_sampling_sigmas

CM_STEPS = (2, 18)
TEACHER_LEVELS = 18  # Heun: 35 NFE
EXAMPLES = 6


def label_rate(classifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        predictions = torch.cat([classifier(images[i : i + 500]).argmax(1) for i in range(0, len(images), 500)])
    return float((predictions == labels).float().mean())


def pairs(inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """[in₁, out₁, in₂, out₂, …] for a figure row, grey widened to RGB where the other is RGB."""
    channels = max(inputs.shape[1], outputs.shape[1])
    inputs, outputs = inputs.expand(-1, channels, -1, -1), outputs.expand(-1, channels, -1, -1)
    return torch.stack([inputs[:EXAMPLES], outputs[:EXAMPLES]], dim=1).flatten(0, 1)


def held_out(checkpoint, num: int):
    dataset = build_dataset(dataclasses.replace(checkpoint.config.data, split="holdout"))
    return dataset.to_float(dataset.images[:num]), dataset.labels[:num]


def classifier_for(checkpoint, cache: Path):
    labelled = build_dataset(dataclasses.replace(checkpoint.config.data, holdout_fraction=0.0))
    trained = load_or_train_classifier(labelled, cache)
    return trained.model.eval(), trained.accuracy


def edit_both(task, cd, teacher, problem, labels, classifier) -> tuple[list[dict], dict[int, torch.Tensor]]:
    """Edit with the consistency model at each of CM_STEPS and with the teacher; classify every result."""
    d = cd.config.diffusion
    model, rows, outputs = cd.build_model(), [], {}
    for steps in CM_STEPS:
        sigmas = default_sampling_sigmas(steps, d.sigma_min, d.sigma_max, d.rho).tolist()
        with torch.no_grad():
            result = edit(model, problem.reference, problem.transform, problem.mask, sigmas, d.sigma_min,
                          torch.Generator().manual_seed(0), clip_denoised=True)  # fmt: skip
        rows.append({"task": task, "method": f"consistency model, {steps} steps", "nfe": result.nfe,
                     "rate": label_rate(classifier, result.x, labels)})  # fmt: skip
        outputs[steps] = result.x
    if teacher is not None:
        levels = teacher_sigmas(TEACHER_LEVELS, d.sigma_min, d.sigma_max, d.rho)
        denoiser, generator = teacher.build_model(), torch.Generator().manual_seed(0)
        with torch.no_grad():
            result = edit_with_teacher(denoiser, problem.reference, problem.transform, problem.mask, levels, "heun",
                                       generator, clip_denoised=True)  # fmt: skip
        rows.append({"task": task, "method": "teacher: Heun PF-ODE with replacement", "nfe": result.nfe,
                     "rate": label_rate(classifier, result.x, labels)})  # fmt: skip
    return rows, outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cd", type=Path, required=True, help="a consistency model on grey digits")
    parser.add_argument("--teacher", type=Path, help="its teacher (baseline)")
    parser.add_argument("--colored-cd", type=Path, help="a consistency model on coloured digits")
    parser.add_argument("--colored-teacher", type=Path, help="its teacher (baseline)")
    parser.add_argument("--factor", type=int, default=4, help="super-resolution factor")
    parser.add_argument("--num", type=int, default=500, help="held-out digits per task")
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"), help="classifier cache")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    cd = load_checkpoint(args.cd)
    teacher = load_checkpoint(args.teacher) if args.teacher else None
    d = cd.config.diffusion
    images, labels = held_out(cd, args.num)
    classifier, accuracy = classifier_for(cd, args.cache)
    size, p = images.shape[-1], args.factor
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 2 :, :] = 1  # generate the lower half
    low_res = images.reshape(len(images), -1, size // p, p, size // p, p).mean(dim=(3, 5))
    blanked = torch.where(mask.bool(), 0.0, images)
    upsampled = low_res.repeat_interleave(p, -1).repeat_interleave(p, -2)
    rows = [
        {"task": "originals", "method": "–", "nfe": 0, "rate": label_rate(classifier, images, labels)},
        {"task": "inpaint", "method": "input (lower half grey)", "nfe": 0,
         "rate": label_rate(classifier, blanked, labels)},
        {"task": "super-resolve", "method": f"input ({size // p}×{size // p}, upsampled)", "nfe": 0,
         "rate": label_rate(classifier, upsampled, labels)},
    ]  # fmt: skip
    figure = {}
    for task, problem, shown in (
        ("inpaint", inpainting_problem(images, mask), blanked),
        ("super-resolve", super_resolution_problem(low_res, p), upsampled),
    ):
        task_rows, outputs = edit_both(task, cd, teacher, problem, labels, classifier)
        rows += task_rows
        figure[f"{task} (input, result at {CM_STEPS[-1]} steps)"] = pairs(shown, outputs[CM_STEPS[-1]])

    model = cd.build_model()
    with torch.no_grad():
        strokes = upsampled.mul(2).round().div(2)  # coarse paint: block colours at three grey levels
        result = stroke_guided(model, strokes, sigma_min=d.sigma_min, generator=torch.Generator().manual_seed(0),
                               clip_denoised=True)  # fmt: skip
        figure["stroke-guided (strokes, result; t = 5.38, 2.24)"] = pairs(strokes, result.x)
        noisy = images + 0.5 * torch.randn(images.shape, generator=torch.Generator().manual_seed(1))
        figure["denoise σ = 0.5 (noisy, one step)"] = pairs(noisy, denoise(model, noisy, 0.5, sigma_min=d.sigma_min,
                                                                         clip_denoised=True).x)  # fmt: skip
        noises = torch.randn((2, 1, *cd.sample_shape), generator=torch.Generator().manual_seed(2))
        path = interpolate_noises(model, noises[0], noises[1], torch.linspace(0, 1, 2 * EXAMPLES).tolist(),
                                  sigmas=[d.sigma_max], sigma_min=d.sigma_min, clip_denoised=True)  # fmt: skip
        figure["interpolation between two noises (slerp, one step)"] = path.x[0]

    colored_accuracy = None
    if args.colored_cd:
        colored_cd = load_checkpoint(args.colored_cd)
        colored_teacher = load_checkpoint(args.colored_teacher) if args.colored_teacher else None
        color_images, color_labels = held_out(colored_cd, args.num)
        color_classifier, colored_accuracy = classifier_for(colored_cd, args.cache)
        grey = (color_images * torch.tensor(LUMINANCE).view(1, 3, 1, 1)).sum(1, keepdim=True) / sum(LUMINANCE)
        rows += [
            {"task": "colorize", "method": "coloured originals", "nfe": 0,
             "rate": label_rate(color_classifier, color_images, color_labels)},
            {"task": "colorize", "method": "input (grey)", "nfe": 0,
             "rate": label_rate(color_classifier, grey.expand(-1, 3, -1, -1), color_labels)},
        ]  # fmt: skip
        task_rows, outputs = edit_both("colorize", colored_cd, colored_teacher, colorization_problem(grey),
                                       color_labels, color_classifier)  # fmt: skip
        rows += task_rows
        figure[f"colorize (grey, result at {CM_STEPS[-1]} steps)"] = pairs(grey, outputs[CM_STEPS[-1]])

    args.out.mkdir(parents=True, exist_ok=True)
    channels = max(x.shape[1] for x in figure.values())
    save_image_rows({k: v.expand(-1, channels, -1, -1) for k, v in figure.items()}, args.out / "editing.png")
    summary = {"rows": rows, "classifier_accuracy": accuracy, "colored_classifier_accuracy": colored_accuracy}
    write_json_atomic(args.out / "results.json", {**summary, "num": args.num})
    lines = [
        f"# Zero-shot editing on {cd.config.data.name}, judged by a classifier",
        "",
        f"{args.num} held-out digits per task. A classifier trained on the same kind of images (held-out accuracy "
        f"{accuracy:.4f}"
        + (f"; coloured: {colored_accuracy:.4f}" if colored_accuracy is not None else "")
        + ") labels each result; the rate is how often it names the original digit.",
        "",
        "| task | method | NFE | label rate |",
        "|---|---|---:|---:|",
        *[f"| {r['task']} | {r['method']} | {r['nfe']} | {r['rate']:.3f} |" for r in rows],
        "",
        "![editing](editing.png)",
        "",
        "Made by:",
        "",
        "```",
        "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "```",
        "",
    ]
    write_text_atomic(args.out / "report.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
