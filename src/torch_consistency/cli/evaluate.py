"""`cm eval`: score a checkpoint at several step counts against held-out data."""

import argparse
from pathlib import Path

from .sample import add_checkpoint_arguments, int_list

EXAMPLES = """
examples:
  cm eval --checkpoint runs/cd --steps 1,2,4 --out results/cd
  cm eval --checkpoint runs/teacher --teacher-steps 10,18,40 --out results/teacher
"""


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "eval",
        help="score a checkpoint (W2, MMD², consistency error) at several step counts",
        description="Score samples of a checkpoint against held-out data and write OUT/results.json, "
        "OUT/results.md and OUT/samples.png. The data floor (two real sets) is reported beside them.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_checkpoint_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--steps", type=int_list, default=[1, 2, 4], help="consistency steps to score (default 1,2,4)")
    parser.add_argument("--teacher-steps", type=int_list, default=[18], help="teacher Karras levels (default 18)")
    parser.add_argument("--num", type=int, default=2000, help="samples per score (default 2000)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..data import build_dataset
    from ..errors import ConfigError
    from ..evaluation.evaluate import consistency_error_of, data_floor, evaluate_checkpoint
    from ..evaluation.plots import save_scatter_grid
    from ..evaluation.report import scores_table
    from ..files import write_json_atomic, write_text_atomic
    from ..training.checkpoint import load_checkpoint

    if args.num < 2 or min(args.steps) < 1 or min(args.teacher_steps) < 1:
        raise ConfigError("--num must be at least 2 and step counts at least 1")
    checkpoint = load_checkpoint(args.checkpoint)
    dataset = build_dataset(checkpoint.config.data)
    label = checkpoint.config.train.method
    scores, samples = evaluate_checkpoint(
        checkpoint, dataset, label=label, steps=args.steps, teacher_levels=args.teacher_steps,
        num_samples=args.num, seed=args.seed,
    )  # fmt: skip
    floor = data_floor(dataset, args.num, args.seed)
    error = consistency_error_of(checkpoint, dataset, seed=args.seed)
    results = {
        "checkpoint": str(checkpoint.path),
        "step": checkpoint.step,
        "num_samples": args.num,
        "data_floor": floor.to_dict(),
        "scores": [s.to_dict() for s in scores],
        "consistency_error": None if error is None else {"mean": error.mean, **vars(error)},
    }
    write_json_atomic(args.out / "results.json", results)
    text = f"# Evaluation of {checkpoint.path} (step {checkpoint.step})\n\n{scores_table(scores, floor)}\n"
    if error is not None:
        text += f"\nMean consistency error against the exact ODE: {error.mean:.4g}\n"
    write_text_atomic(args.out / "results.md", text)
    save_scatter_grid(samples, args.out / "samples.png")
    print(text)
    print(f"results in {args.out}")
    return 0
