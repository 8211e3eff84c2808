"""`cm demo`: the main job — teacher → CD → CT on the default data, with a report."""

import argparse
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "demo",
        help="run the main job: teacher → CD → CT, samples at 1, 2, 4 steps, a markdown report",
        description="Train a teacher, distil it (CD) and train a consistency model from scratch (CT) on the "
        "default 2-D data, score every method at 1, 2 and 4 steps and the teacher at full NFE, and write "
        "OUT/report.md with scatter plots.",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default runs/demo)")
    parser.add_argument("--quick", action="store_true", help="a short run for smoke tests (numbers not meaningful)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo
    from ..files import check_output_folder

    check_output_folder(args.out)
    report = run_demo(args.out, quick=args.quick)
    print(f"report: {report}")
    return 0
