"""torch.compile (inductor) against eager on the training step and on 1-step sampling, measured side by side.

Each case builds two identical trainers from one seed; in one, every network the step runs (the online network,
θ⁻ and CD's teacher) is wrapped in `torch.compile`. Eager and compiled steps alternate round by round and each
keeps its median, so a load that changes during the run affects both alike. The first compiled call (the
compilation itself) is timed apart. "same result" compares the first step's loss of the two (relative difference).

    python benchmarks/compile_speed.py --preset small --size 28 --batch 64
"""

import argparse
import copy
import statistics
import time

import torch

from train_throughput import add_setup_arguments, setup, timed

CASES = {"teacher": ("teacher", "heun"), "cd-heun": ("cd", "heun"), "ct": ("ct", "heun")}


def compiled_copy(trainer, teacher):
    """A copy of the trainer with its online network, θ⁻ and the teacher (CD) compiled."""
    trainer = copy.deepcopy(trainer)
    trainer.online = torch.compile(trainer.model)
    if trainer.target is not None:
        trainer.target = torch.compile(trainer.target)
    if getattr(trainer.method, "teacher", None) is not None:
        trainer.method.teacher = torch.compile(teacher)
    return trainer


def target_of(trainer):
    """θ⁻ as the step uses it: the target network, or the online one where the method has none."""
    return trainer.target if trainer.target is not None else trainer.model


def measure_step(args, name: str) -> dict:
    method, solver = CASES[name]
    torch.manual_seed(0)
    _, eager, teacher, x0, draws = setup(args, method, "fp32", solver)
    compiled = compiled_copy(eager, teacher)
    with torch.no_grad():
        loss_eager = eager.method.loss(eager.network, target_of(eager), x0, draws, 0).mean()
        tic = time.perf_counter()
        loss_compiled = compiled.method.loss(compiled.network, target_of(compiled), x0, draws, 0).mean()
    first_forward = time.perf_counter() - tic
    tic = time.perf_counter()
    compiled.step(0, x0, None, draws)  # compiles the backward too
    first_step = time.perf_counter() - tic
    times = {"eager": [], "compiled": []}
    for _ in range(args.rounds):
        for label, trainer in (("eager", eager), ("compiled", compiled)):
            times[label].append(timed(lambda t=trainer: t.step(0, x0, None, draws), args.repeats, x0.device))
    eager_s, compiled_s = statistics.median(times["eager"]), statistics.median(times["compiled"])
    difference = abs(float(loss_compiled - loss_eager)) / abs(float(loss_eager))
    return {"case": f"{name} step", "eager_s": eager_s, "compiled_s": compiled_s,
            "compile_s": first_forward + first_step, "difference": difference}  # fmt: skip


def measure_sampling(args) -> dict:
    """1-step sampling of --sample-batch images: the network at σ_max, eager against compiled."""
    torch.manual_seed(0)
    _, trainer, _, _, _ = setup(args, "ct", "fp32")
    model = trainer.model.eval()
    compiled = torch.compile(model)
    noise = torch.randn(args.sample_batch, args.channels, args.size, args.size) * 80.0
    sigma = torch.full((args.sample_batch,), 80.0)
    with torch.no_grad():
        tic = time.perf_counter()
        out_compiled = compiled(noise, sigma)
        compile_s = time.perf_counter() - tic
        out_eager = model(noise, sigma)
        times = {"eager": [], "compiled": []}
        for _ in range(args.rounds):
            for label, network in (("eager", model), ("compiled", compiled)):
                times[label].append(timed(lambda n=network: n(noise, sigma), args.repeats, noise.device))
    difference = float((out_compiled - out_eager).norm() / out_eager.norm())
    return {"case": f"1-step sampling ×{args.sample_batch}", "eager_s": statistics.median(times["eager"]),
            "compiled_s": statistics.median(times["compiled"]), "compile_s": compile_s,
            "difference": difference}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_setup_arguments(parser)
    parser.add_argument("--sample-batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="calls per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating eager/compiled rounds per case")
    parser.add_argument("--cases", default="teacher,cd-heun,ct", help=f"comma-separated subset of {tuple(CASES)}")
    args = parser.parse_args()
    unknown = sorted(set(args.cases.split(",")) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {tuple(CASES)}")
    print(f"torch {torch.__version__}, U-Net preset {args.preset}, {args.channels}×{args.size}×{args.size}, batch "
          f"{args.batch}, {args.device}, {torch.get_num_threads()} threads; fp32")  # fmt: skip
    print(f"{'case':<28}{'eager s':>9}{'compiled s':>12}{'speed-up':>10}{'compile s':>11}{'same result':>13}")
    for row in [*(measure_step(args, name) for name in args.cases.split(",")), measure_sampling(args)]:
        speedup = row["eager_s"] / row["compiled_s"]
        print(f"{row['case']:<28}{row['eager_s']:>9.3f}{row['compiled_s']:>12.3f}{speedup:>9.2f}×"
              f"{row['compile_s']:>11.0f}{row['difference']:>13.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
