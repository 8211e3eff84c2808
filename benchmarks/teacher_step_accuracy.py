"""How exact CD's teacher step is on the demo's grid: Heun substeps against DPM-Solver++(2M) substeps.

The exact denoiser of `make demo`'s eight Gaussians (std 0.05) stands in for the teacher. For each interval
(σ_{n+1} → σ_n) of the demo's 5-point CD grid, x = x0 + σ_{n+1}·z for 4000 data points, and the teacher step of
`cd.solver` with `cd.teacher_substeps` = k is compared with 1024 Heun substeps: the mean error ‖x̂ − x_ref‖ relative
to the data's standard deviation, and the network calls the step costs (Heun 2k, 2M k).

    python benchmarks/teacher_step_accuracy.py
"""

import torch

from torch_consistency.config import DataConfig
from torch_consistency.data import build_dataset
from torch_consistency.sigmas import karras_sigmas
from torch_consistency.solvers import teacher_step

ARMS = [("heun", 8), ("heun", 16), ("dpmpp-2m", 8), ("dpmpp-2m", 16), ("dpmpp-2m", 32)]
GRID_POINTS, RHO, BATCH = 5, 7.0, 4000


def main() -> None:
    mixture = build_dataset(DataConfig(name="eight_gaussians")).mixture
    generator = torch.Generator().manual_seed(0)
    x0 = mixture.sample(BATCH, generator)
    scale = x0.std().item()
    grid = karras_sigmas(GRID_POINTS, 0.002, 80.0, RHO).double()  # descending, σ_max first
    reference_step = teacher_step("heun", 1024, RHO)
    labels = [f"{solver} ×{k} ({k * (2 if solver == 'heun' else 1)} calls)" for solver, k in ARMS]
    header = "".join(f"{label:>24}" for label in labels)
    print(f"{'interval':<18}{header}")
    totals = [0.0] * len(ARMS)
    for n in range(GRID_POINTS - 1):
        sigma = torch.full((BATCH,), grid[n].item(), dtype=torch.float64)
        sigma_next = torch.full((BATCH,), grid[n + 1].item(), dtype=torch.float64)
        x = x0 + sigma[:, None] * torch.randn(x0.shape, generator=generator, dtype=torch.float64)
        reference = reference_step(mixture.denoiser, x, sigma, sigma_next)
        errors = []
        for solver, k in ARMS:
            step = teacher_step(solver, k, RHO)(mixture.denoiser, x, sigma, sigma_next)
            errors.append((step - reference).norm(dim=1).mean().item() / scale)
        totals = [t + e / (GRID_POINTS - 1) for t, e in zip(totals, errors, strict=True)]
        label = f"{grid[n].item():.3g} → {grid[n + 1].item():.3g}"
        print(f"{label:<18}" + "".join(f"{e:>24.2e}" for e in errors))
    print(f"{'mean':<18}" + "".join(f"{t:>24.2e}" for t in totals))


if __name__ == "__main__":
    main()
