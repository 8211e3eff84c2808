"""Training throughput of teacher, CD (Euler, Heun) and CT steps in fp32 and bf16, measured side by side.

fp32 and bf16 steps alternate round by round and each keeps its median, so a load that changes during the run
affects both alike; `bf16 / fp32` is the ratio of their throughputs (> 1: bf16 pays). Also the ratio of a step's
time to the sum of its network passes run alone (goal ≤ 1.15: the step adds little beyond the passes it must
make) and the peak memory of each step. The header names the CPU capability and whether oneDNN has native bf16.

    python benchmarks/train_throughput.py --preset small --size 28 --batch 64
"""

import argparse
import statistics
import time
from pathlib import Path

import torch

from torch_consistency.configs import load_config
from torch_consistency.nets import build_model
from torch_consistency.training.build import build_method
from torch_consistency.training.trainer import Trainer


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    elif Path("/proc/self/clear_refs").exists():
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak resident set size


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(function, repeats: int, device: torch.device) -> float:
    """Seconds per call, after one warm-up call."""
    function()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def setup(args, method: str, precision: str, solver: str = "heun"):
    overrides = [
        "network.kind=unet", f"network.preset={args.preset}", f"train.method={method}", f"train.precision={precision}",
        f"optim.batch_size={args.batch}", "cd.teacher=exact", f"cd.solver={solver}", "train.ema_rates=[0.999]",
        "data.name=digits",  # a U-Net needs image data; the batches here are synthetic, of --size
    ]  # fmt: skip
    config = load_config(None, overrides)
    shape = (args.channels, args.size, args.size)
    device = torch.device(args.device)
    teacher = build_model(config, "denoiser", shape).to(device, memory_format=torch.channels_last).eval()
    teacher.requires_grad_(False)
    method_object = build_method(config, type("T", (), {"denoiser": teacher})() if method == "cd" else None)
    trainer = Trainer.create(config, method_object, shape, 0, device)
    x0 = torch.randn(args.batch, *shape, device=device).contiguous(memory_format=torch.channels_last)
    draws = method_object.draw(0, args.batch, shape, torch.Generator(device=device).manual_seed(0))
    return config, trainer, teacher, x0, draws


def network_passes(args, trainer, teacher, x0, draws, method: str, solver: str) -> float:
    """Seconds for the passes a step needs, each run alone: teacher (CD), target, online forward + backward."""
    device = x0.device
    sigma = torch.full((len(x0),), 1.0, device=device)
    x = x0 + draws["noise"]
    total = 0.0
    with trainer.autocast():
        with torch.no_grad():
            if method == "cd":
                total += (2 if solver == "heun" else 1) * timed(lambda: teacher(x, sigma), args.repeats, device)
            if method in ("cd", "ct"):
                target = trainer.target or trainer.model
                total += timed(lambda: target(x, sigma), args.repeats, device)

        def online():
            trainer.model(x, sigma).float().square().mean().backward()

        total += timed(online, args.repeats, device)
    return total


def add_setup_arguments(parser: argparse.ArgumentParser) -> None:
    """The U-Net, image size and batch that `setup` builds (shared with compile_speed.py)."""
    parser.add_argument("--preset", default="small")
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_setup_arguments(parser)
    parser.add_argument("--repeats", type=int, default=5, help="steps per round (and per pass timing)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating fp32/bf16 rounds per case")
    parser.add_argument("--cases", default="teacher,cd-euler,cd-heun,ct", help="comma-separated subset")
    args = parser.parse_args()
    cases = {"teacher": ("teacher", "heun"), "cd-euler": ("cd", "euler"), "cd-heun": ("cd", "heun"),
             "ct": ("ct", "heun")}  # fmt: skip
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    print(f"U-Net preset {args.preset}, {args.channels}×{args.size}×{args.size}, batch {args.batch}, {args.device}; "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, oneDNN native bf16: {native}")  # fmt: skip
    print(f"{'step':<12}{'precision':<10}{'images/s':>10}{'bf16 / fp32':>13}{'step / passes':>15}{'peak MB':>10}")
    for name in args.cases.split(","):
        method, solver = cases[name]
        measured = measure(args, method, solver)
        label = f"{method} ({solver})" if method == "cd" else method
        for precision, (images_per_s, ratio, peak) in measured.items():
            speedup = f"{images_per_s / measured['fp32'][0]:.2f}" if precision == "bf16" else ""
            print(f"{label:<12}{precision:<10}{images_per_s:>10.1f}{speedup:>13}{ratio:>15.3f}{peak:>10.0f}")


def measure(args, method: str, solver: str) -> dict[str, tuple[float, float, float]]:
    """Per precision: (images/s of a whole training step, step time / sum of its passes run alone, peak MB),
    the two precisions timed in alternating rounds (median over rounds)."""
    setups = {precision: setup(args, method, precision, solver) for precision in ("fp32", "bf16")}
    times, peaks = {p: [] for p in setups}, {}
    for _ in range(args.rounds):
        for precision, (_, trainer, _, x0, draws) in setups.items():
            reset_peak_memory(x0.device)
            step = lambda trainer=trainer, x0=x0, draws=draws: trainer.step(0, x0, None, draws)  # noqa: E731
            times[precision].append(timed(step, args.repeats, x0.device))
            peaks[precision] = max(peaks.get(precision, 0.0), peak_memory_mb(x0.device))
    results = {}
    for precision, (_, trainer, teacher, x0, draws) in setups.items():
        step_time = statistics.median(times[precision])
        passes = network_passes(args, trainer, teacher, x0, draws, method, solver)
        results[precision] = (args.batch / step_time, step_time / passes, peaks[precision])
    return results


if __name__ == "__main__":
    main()
