"""The MMD's within-set kernel sum, the bulk of the demo's 2-D scoring, against the former way, side by side in one
run: Σ_ij Σ_h exp(−‖x_i − x_j‖²/(2h²)) over 10,000 2-D points and the demo's five widths, as torch.cdist squared over
every ordered pair (before) and as `gaussian_kernel_self_sum` (distances coordinate by coordinate, half the pairs,
and each width's kernel the next wider one's 4th power, since the widths double: `gaussian_kernels`). Both in
float64, blocks of 2^16 entries, on one thread; prints each time and the ratio.

    python benchmarks/mmd_speed.py [--points 10000] [--repeats 3]
"""

import argparse
import time

import torch

from torch_consistency.evaluation.lowdim import gaussian_kernel_self_sum

WIDTHS = tuple(0.05 * 2**k for k in range(5))  # the demo's: the eight Gaussians' std and up


def cdist_sum(x: torch.Tensor, block_entries: int = 2**16) -> torch.Tensor:
    """The former gaussian_kernel_sum(x, x, WIDTHS): torch.cdist, squared, over every ordered pair."""
    rows, total = max(1, block_entries // len(x)), x.new_zeros(())
    for start in range(0, len(x), rows):
        squared = torch.cdist(x[start : start + rows], x).square_()
        for h in WIDTHS:
            total += torch.exp(squared * (-1 / (2 * h**2))).sum()
    return total


def seconds(function, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    """The fastest of `repeats` calls and the value."""
    times, value = [], 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        value = float(function(x))
        times.append(time.perf_counter() - start)
    return min(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    x = 0.5 * torch.randn(args.points, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    before, expected = seconds(cdist_sum, x, args.repeats)
    after, value = seconds(lambda points: gaussian_kernel_self_sum(points, WIDTHS), x, args.repeats)
    print(f"{args.points} points, fastest of {args.repeats}: cdist over every pair {before:.2f} s, "
          f"gaussian_kernel_self_sum {after:.2f} s: {before / after:.2f}× faster; sums agree to "
          f"{abs(value - expected) / expected:.1e}")  # fmt: skip


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
