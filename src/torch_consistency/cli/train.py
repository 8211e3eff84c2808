"""`cm train`: teacher, CD, CT, iCT, ECT or sCM from a TOML config with --set overrides, or --resume a run."""

import argparse
from pathlib import Path

from ..config import METHODS
from ..configs import bundled_configs
from ..errors import ConfigError

EXAMPLES = """
examples:
  cm train teacher toy_teacher --out runs/teacher
  cm train cd toy_cd --out runs/cd --set cd.teacher=runs/teacher --set cd.solver=euler
  cm train ct toy_ct --out runs/ct --set train.total_steps=20000
  cm train teacher my_config.toml --out runs/mine --set data.name=mnist --set data.path=data/mnist
  cm train ict --out runs/ict --set network.embedding=fourier --set network.fourier_scale=0.02
  cm train ect --out runs/ect --set ect.teacher=runs/teacher
  cm train scm --out runs/scd --set scm.mode=scd --set scm.teacher=runs/teacher
  cm train --resume runs/cd

Config sections: [train] [diffusion] [network] [data] [optim] [teacher] [cd] [ct] [ict] [ect] [scm] [sampling];
every key is documented in torch_consistency/config.py. The whole config is saved in each checkpoint.
Several processes: torchrun --nproc_per_node=N -m torch_consistency train ...
"""


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train",
        help="train a teacher, or a consistency model (cd, ct, ict, ect, scm)",
        description="Train a teacher (EDM denoiser), distil it into a consistency model (cd), train one "
        "from scratch (ct, ict), tune a teacher into one (ect), or train a continuous-time one in TrigFlow form "
        "(scm: sct or scd). Checkpoints (safetensors + JSON config) go to OUT/checkpoints.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("method", nargs="?", choices=METHODS, help="what to train (sets train.method)")
    parser.add_argument(
        "config",
        nargs="?",
        type=Path,
        help=f"TOML config file, or a bundled one: {', '.join(bundled_configs())} (defaults fill what it omits)",
    )
    parser.add_argument("--out", type=Path, help="run folder for checkpoints, log.jsonl and config.json")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set optim.lr=2e-4 (repeatable)",
    )  # fmt: skip
    parser.add_argument("--resume", type=Path, metavar="RUN", help="continue the run in this folder exactly")
    parser.add_argument(
        "--data-path", type=Path, metavar="PATH",
        help="with --resume: read the data from PATH instead of the run's data.path (needed when that points inside "
        "the run folder: data that came with a run is read only when you name it)",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..api import train

    if args.resume is not None:
        if args.method or args.config or args.overrides or args.out:
            raise ConfigError("--resume takes the run folder alone (or with --data-path): its saved config is used")
        run_dir = train(None, args.resume, resume=True, progress=not args.no_progress, data_path=args.data_path)
    else:
        if args.data_path is not None:
            raise ConfigError("--data-path goes with --resume; a new run reads --set data.path=PATH")
        if args.method is None:
            raise ConfigError("name what to train: cm train {teacher,cd,ct} [CONFIG] --out RUN (or --resume RUN)")
        if args.out is None:
            raise ConfigError("--out RUN is required: the folder for checkpoints and logs")
        if any(override.partition("=")[0].strip() == "train.method" for override in args.overrides):
            raise ConfigError(f"train.method is the METHOD argument ({args.method}); do not --set it")
        run_dir = train(args.config, args.out, args.overrides, progress=not args.no_progress, method=args.method)
    print(f"checkpoints in {run_dir / 'checkpoints'}")
    return 0
