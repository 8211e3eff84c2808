"""Zero-shot editing measured by a classifier: does the edited image keep the original digit? (issue acceptance)

    python benchmarks/editing_mnist.py --cd runs/mnist-cd --teacher runs/mnist-teacher \
        --colored-cd runs/colored-cd --colored-teacher runs/colored-teacher --out docs/results/editing

For held-out MNIST digits: inpaint the lower half, super-resolve 7×7 → 28×28, and (with coloured-MNIST
models) colorize the grey version; classify each result with the classifier of the evaluation (trained on
the same kind of images) and report how often it names the original digit, for the consistency model at a
few and at many steps and for the teacher's PF-ODE with replacement guidance. The rates for the originals
and for the degraded inputs bound them. Writes OUT/report.md, OUT/results.json and OUT/editing.png.
"""

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

import torch

from torch_consistency.data import build_dataset
from torch_consistency.editing import (
    LUMINANCE,
    colorization_problem,
    edit,
    edit_with_teacher,
    inpainting_problem,
    super_resolution_problem,
)
from torch_consistency.evaluation.classifier import load_or_train_classifier
from torch_consistency.evaluation.plots import save_image_rows
from torch_consistency.files import write_json_atomic, write_text_atomic
from torch_consistency.generate import teacher_sigmas
from torch_consistency.sigmas import default_sampling_sigmas
from torch_consistency.training.checkpoint import load_checkpoint

CM_STEPS = (2, 18)
TEACHER_LEVELS = 18  # Heun: 35 NFE


def label_rate(classifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        predictions = torch.cat([classifier(images[i : i + 500]).argmax(1) for i in range(0, len(images), 500)])
    return float((predictions == labels).float().mean())


def run_task(task, cd, teacher, problem, labels, classifier, generator_seed) -> tuple[list[dict], dict]:
    """Edit with the consistency model at each of CM_STEPS and with the teacher; classify every result."""
    d = cd.config.diffusion
    model = cd.build_model()
    rows, examples = [], {}
    for steps in CM_STEPS:
        sigmas = default_sampling_sigmas(steps, d.sigma_min, d.sigma_max, d.rho).tolist()
        generator = torch.Generator().manual_seed(generator_seed)
        with torch.no_grad():
            result = edit(model, problem.reference, problem.transform, problem.mask, sigmas, d.sigma_min, generator,
                          clip_denoised=True)  # fmt: skip
        rows.append({"task": task, "method": f"CM, {steps} steps", "nfe": result.nfe,
                     "rate": label_rate(classifier, result.x, labels)})  # fmt: skip
        examples[f"{task}: CM {steps} steps"] = result.x[:10]
    if teacher is not None:
        denoiser = teacher.build_model()
        levels = teacher_sigmas(TEACHER_LEVELS, d.sigma_min, d.sigma_max, d.rho)
        with torch.no_grad():
            result = edit_with_teacher(denoiser, problem.reference, problem.transform, problem.mask, levels, "heun",
                                       torch.Generator().manual_seed(generator_seed), clip_denoised=True)  # fmt: skip
        rows.append({"task": task, "method": "teacher (Heun ODE, replacement)", "nfe": result.nfe,
                     "rate": label_rate(classifier, result.x, labels)})  # fmt: skip
        examples[f"{task}: teacher"] = result.x[:10]
    return rows, examples


def held_out(checkpoint, num: int):
    data = dataclasses.replace(checkpoint.config.data, split="holdout")
    dataset = build_dataset(data)
    images = dataset.to_float(dataset.images[:num])
    return images, dataset.labels[:num], dataset


def classifier_for(checkpoint, cache: Path):
    labelled = build_dataset(dataclasses.replace(checkpoint.config.data, holdout_fraction=0.0))
    trained = load_or_train_classifier(labelled, cache)
    return trained.model.eval(), trained.accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cd", type=Path, required=True, help="consistency model on grey MNIST")
    parser.add_argument("--teacher", type=Path, help="its teacher (baseline)")
    parser.add_argument("--colored-cd", type=Path, help="consistency model on coloured MNIST")
    parser.add_argument("--colored-teacher", type=Path, help="its teacher (baseline)")
    parser.add_argument("--num", type=int, default=500, help="held-out digits per task")
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"), help="classifier cache")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    rows, examples = [], {}
    cd = load_checkpoint(args.cd)
    teacher = load_checkpoint(args.teacher) if args.teacher else None
    images, labels, _ = held_out(cd, args.num)
    classifier, accuracy = classifier_for(cd, args.cache)
    height = images.shape[-1]
    mask = torch.zeros(1, 1, height, height)
    mask[..., height // 2 :, :] = 1  # generate the lower half
    low_res = images.reshape(len(images), 1, height // 4, 4, height // 4, 4).mean(dim=(3, 5))
    degraded = {
        "original": images,
        "inpaint: lower half blanked": torch.where(mask.bool(), -1.0, images),
        "super-resolve: 7×7 upsampled": low_res.repeat_interleave(4, -1).repeat_interleave(4, -2),
    }
    for name, x in degraded.items():
        rows.append({"task": name, "method": "input as is", "nfe": 0, "rate": label_rate(classifier, x, labels)})
        examples[name] = x[:10]
    for task, problem in (
        ("inpaint", inpainting_problem(images, mask)),
        ("super-resolve", super_resolution_problem(low_res, 4)),
    ):
        task_rows, task_examples = run_task(task, cd, teacher, problem, labels, classifier, 0)
        rows += task_rows
        examples.update(task_examples)

    colored_accuracy = None
    if args.colored_cd:
        colored_cd = load_checkpoint(args.colored_cd)
        colored_teacher = load_checkpoint(args.colored_teacher) if args.colored_teacher else None
        color_images, color_labels, _ = held_out(colored_cd, args.num)
        color_classifier, colored_accuracy = classifier_for(colored_cd, args.cache)
        weights = torch.tensor(LUMINANCE).view(1, 3, 1, 1)
        grey = (color_images * weights).sum(1, keepdim=True) / sum(LUMINANCE)
        for name, x in {"colored original": color_images, "colorize: grey input": grey.expand(-1, 3, -1, -1)}.items():
            rows.append({"task": name, "method": "input as is", "nfe": 0,
                         "rate": label_rate(color_classifier, x, color_labels)})  # fmt: skip
            examples[name] = x[:10]
        task_rows, task_examples = run_task("colorize", colored_cd, colored_teacher, colorization_problem(grey),
                                            color_labels, color_classifier, 0)  # fmt: skip
        rows += task_rows
        examples.update(task_examples)

    args.out.mkdir(parents=True, exist_ok=True)
    grey_rows = {k: (v.expand(-1, 3, -1, -1) if v.shape[1] == 1 else v) for k, v in examples.items()}
    save_image_rows(grey_rows, args.out / "editing.png")
    summary = {"rows": rows, "classifier_accuracy": accuracy, "colored_classifier_accuracy": colored_accuracy}
    write_json_atomic(args.out / "results.json", {**summary, "num": args.num})
    lines = [
        "# Zero-shot editing on MNIST, judged by a classifier",
        "",
        f"{args.num} held-out digits per task. The classifier (held-out accuracy {accuracy:.4f}"
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
