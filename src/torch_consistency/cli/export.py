"""`cm export`: write a consistency checkpoint in another library's format (diffusers' ConsistencyModelPipeline)."""

import argparse
from pathlib import Path

EXAMPLES = """
examples:
  cm export --checkpoint runs/cd --format diffusers exported/cd
  cm export --checkpoint runs/ct --weights online exported/ct-online

then, in Python:
  from diffusers import ConsistencyModelPipeline
  pipe = ConsistencyModelPipeline.from_pretrained("exported/cd")
  images = pipe(batch_size=16, num_inference_steps=1).images   # one step
  images = pipe(batch_size=16, timesteps=[11, 0]).images       # two steps: diffusers' timesteps on the training grid

Methods that export: cd, ct, ict, ect (consistency models f(x, σ)), with network.kind = unet, square images and
the openai noise conditioning (250·ln σ, the one diffusers' scheduler feeds). Teachers and scm (sCT, sCD: TrigFlow
models of t) do not: ConsistencyModelPipeline has no TrigFlow sampler.
"""


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "export",
        help="export a consistency model (cd, ct, ict, ect) for diffusers",
        description="Write a folder that diffusers' ConsistencyModelPipeline.from_pretrained loads:\n"
        "  unet/       the UNet2DModel with the chosen weights (safetensors)\n"
        "  scheduler/  CMStochasticIterativeScheduler with the checkpoint's σ_min, σ_max, σ_data, ρ, clip_denoised\n"
        "              and the final training N as num_train_timesteps\n"
        "OUT must not exist or must be empty; it appears complete or not at all.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint folder, or a run folder (newest)")
    parser.add_argument("--format", choices=("diffusers",), default="diffusers", help="output format (diffusers)")
    parser.add_argument("--weights", help="weight set: online, target or ema-RATE (default: the first EMA)")
    parser.add_argument("out", type=Path, metavar="OUT", help="the folder to write")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from ..api import export_diffusers

    out = export_diffusers(args.checkpoint, args.out, args.weights)
    source = json.loads((out / "export.json").read_text())
    print(f"{out} (diffusers ConsistencyModelPipeline from {source['source']}, weights {source['weights']})")
    return 0
