"""`cm eval`: score a checkpoint at several step counts against held-out data."""

import argparse
from pathlib import Path

from ..evaluation.options import DEFAULT_CACHE
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
        default=DEFAULT_CACHE,
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
    from ..evaluation.run import evaluate

    evaluation = evaluate(
        args.checkpoint, args.out, steps=args.steps, teacher_steps=args.teacher_steps, num=args.num,
        weights=args.weights, seed=args.seed, device=args.device, features=args.features,
        inception_weights=args.inception_weights, allow_torchscript=args.allow_torchscript, cache=args.cache,
        reference_stats=args.reference_stats, guidance=args.guidance, search_sigmas=args.search_sigmas,
        data_path=args.data_path,
    )  # fmt: skip
    print(evaluation.report)
    print(f"results in {args.out}")
    return 0
