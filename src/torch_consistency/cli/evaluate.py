"""`cm eval`: score a checkpoint at several step counts against held-out data."""

import argparse
from pathlib import Path

from .sample import add_checkpoint_arguments, counts, integer

EXAMPLES = """
examples:
  cm eval --checkpoint runs/cd --steps 1,2,4 --out results/cd
  cm eval --checkpoint runs/teacher --teacher-steps 10,18,40 --out results/teacher
  cm eval --checkpoint runs/mnist-cd --num 10000 --out results/mnist-cd            # classifier features
  cm eval --checkpoint runs/cifar-cd --features inception --inception-weights pt_inception-2015-12-05-6726825d.pth \\
      --out results/cifar-cd
  cm eval --checkpoint runs/mnist-cd --search-sigmas --out results/search          # stores the best 2-/3-step σ's

Low-dimensional data: the MMD with Gaussian kernels of width h, 2h, 4h, 8h and 16h (h: a Gaussian mixture's
component std, else a tenth of the data's std) on --num samples, the exact W2 on the first 2000, and for mixtures the
share of samples inside a component, the components covered and the consistency error against the exact ODE.
--search-sigmas scores the time points by FD (images, 2000 samples) or by that MMD (vectors, --num samples).
Images: the Fréchet distance (FID on Inception features; FD_classifier on the features of a classifier trained
on the same labelled data, which is not comparable with FID), KID and k = 3 precision/recall against the
held-out split (data.holdout_fraction) or the training images. The data floor compares two real sets.
Class-conditional models also get their requested-label rate: the share of samples that classifier assigns
the label they were sampled for (random labels, uniform over the classes).
"""


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "eval",
        help="score a checkpoint at several step counts (MMD, W2 for vectors; FD, KID, precision/recall for images)",
        description="Score samples of a checkpoint against held-out data and write OUT/results.json, "
        "OUT/results.md and pictures. The data floor (two real sets) is reported beside them.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_checkpoint_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--steps", type=counts(1), default=[1, 2, 4], help="consistency steps to score (default 1,2,4)")
    parser.add_argument("--teacher-steps", type=counts(2), default=[18], help="teacher Karras levels (default 18)")
    parser.add_argument("--num", type=integer(2), help="samples per score (default 10000)")
    parser.add_argument("--features", choices=("classifier", "inception"), default="classifier", help="image features")
    parser.add_argument("--inception-weights", type=Path, help="pytorch-fid, torch-fidelity or clean-fid weights")
    parser.add_argument(
        "--allow-torchscript", action="store_true",
        help="run a TorchScript --inception-weights file (clean-fid's): TorchScript is code, so only for files from "
        "a source you trust (state dicts need no flag)",
    )  # fmt: skip
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path.home() / ".cache" / "torch-consistency",
        help="folder for the classifier and reference statistics",
    )
    parser.add_argument(
        "--reference-stats",
        type=Path,
        help="images: reference statistics (.npz with mu, sigma: ours, EDM's or pytorch-fid's); FD only",
    )
    parser.add_argument(
        "--guidance",
        type=float,
        metavar="W",
        help="guidance scale w for a guided student or a teacher trained with label dropout (default: its config's)",
    )
    parser.add_argument(
        "--search-sigmas",
        action="store_true",
        help="find the best 2- and 3-step σ's (greedy ternary search) and store them in the checkpoint",
    )
    parser.add_argument(
        "--data-path", type=Path, metavar="PATH",
        help="read the data from PATH instead of the checkpoint's data.path (needed when that points inside the "
        "run folder: data that came with a run is read only when you name it)",
    )  # fmt: skip
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..files import check_output_folder
    from ..training.checkpoint import load_checkpoint, received_data

    check_output_folder(args.out)
    checkpoint = load_checkpoint(args.checkpoint)
    check_evaluation_options(args, checkpoint)
    checkpoint.config.data = received_data(checkpoint.config, args.checkpoint, args.data_path)
    if len(checkpoint.sample_shape) == 3:
        from .evaluate_images import run_images

        return run_images(args, checkpoint)
    return run_vectors(args, checkpoint)


def check_evaluation_options(args: argparse.Namespace, checkpoint) -> None:
    """ConfigError for options that do not fit the checkpoint (checked before any data is read or model trained)."""
    from ..errors import ConfigError
    from ..files import check_output_folder
    from ..generate import sampling_guidance

    checkpoint.weight_set(args.weights)
    sampling_guidance(checkpoint.config, checkpoint.parameterization, checkpoint.num_classes, args.guidance)
    if len(checkpoint.sample_shape) != 3:
        image_options = {"--features inception": args.features == "inception", "--inception-weights":
                         args.inception_weights, "--reference-stats": args.reference_stats}  # fmt: skip
        given = [name for name, value in image_options.items() if value]
        if given:
            raise ConfigError(f"{given[0]} applies to image checkpoints; {checkpoint.path} makes vectors")
    else:
        check_output_folder(args.cache, "--cache")
        if args.num is not None and args.num < 4:
            raise ConfigError(f"--num must be at least 4 for images (precision/recall: 3 neighbours), got {args.num}")
    if args.features == "inception" and args.inception_weights is None:
        raise ConfigError("--features inception needs --inception-weights PATH (see cm eval --help)")
    if args.features != "inception" and (args.inception_weights is not None or args.allow_torchscript):
        raise ConfigError("--inception-weights and --allow-torchscript go with --features inception")
    if args.search_sigmas:
        from ..evaluation.timepoints import check_searchable

        check_searchable(checkpoint)


def run_vectors(args: argparse.Namespace, checkpoint) -> int:
    from ..data import build_dataset
    from ..evaluation.evaluate import consistency_error_of, data_floor, evaluate_checkpoint
    from ..evaluation.plots import save_scatter_grid
    from ..evaluation.report import scores_table
    from ..files import write_json_atomic, write_text_atomic

    num = args.num or 10_000
    dataset = build_dataset(checkpoint.config.data)
    if args.search_sigmas:
        search_and_store_sigmas(checkpoint, dataset, num, args)
    scores, samples = evaluate_checkpoint(
        checkpoint, dataset, label=checkpoint.config.train.method, steps=args.steps,
        teacher_levels=args.teacher_steps, num_samples=num, seed=args.seed, guidance=args.guidance,
    )  # fmt: skip
    floor = data_floor(dataset, num, args.seed)
    error = consistency_error_of(checkpoint, dataset, num_samples=min(num, 500), seed=args.seed)
    results = {
        "checkpoint": str(checkpoint.path),
        "step": checkpoint.step,
        "num_samples": num,
        "data_floor": floor.to_dict(),
        "scores": [s.to_dict() for s in scores],
        "consistency_error": None if error is None else {"mean": error.mean, **vars(error)},
    }
    write_json_atomic(args.out / "results.json", results)
    text = f"# Evaluation of {checkpoint.path} (step {checkpoint.step})\n\n{scores_table(scores, floor)}\n"
    if error is not None:
        text += f"\nMean consistency error against the exact ODE: {error.mean:.4g}\n"
    write_text_atomic(args.out / "results.md", text)
    save_scatter_grid({name: x[:2000] for name, x in samples.items()}, args.out / "samples.png")
    print(text)
    print(f"results in {args.out}")
    return 0


def search_and_store_sigmas(checkpoint, dataset, num: int, args: argparse.Namespace) -> None:
    """Greedy ternary search of the 2- and 3-step σ's on the MMD of the scores; stored in the checkpoint."""
    from ..evaluation.evaluate import held_out, mmd_bandwidths
    from ..evaluation.lowdim import mmd
    from ..evaluation.timepoints import search_checkpoint_sigmas
    from ..training.checkpoint import store_sampling_sigmas

    reference = held_out(dataset, num, args.seed)
    bandwidths = mmd_bandwidths(dataset, reference)
    found = search_checkpoint_sigmas(checkpoint, lambda x: mmd(x, reference, bandwidths), num, args.seed, args.device)
    store_sampling_sigmas(checkpoint, found)
    print(f"stored in {checkpoint.path}: " + ", ".join(f"{n} steps {v}" for n, v in found.items()))
