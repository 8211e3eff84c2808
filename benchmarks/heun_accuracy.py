"""How close EDM's Heun sampler gets to the exact PF-ODE endpoint on Gaussian mixtures (exact denoiser).

For each mixture: the mean error ‖x_Heun − x_ODE‖/√d at σ = 0, relative to the data's standard deviation, for
K = 18, 40 and 80 Karras levels (35, 79, 159 evaluations), against a 4096-step reference, and the factor by
which the error falls when the levels double.

    python benchmarks/heun_accuracy.py
"""

import torch

from torch_consistency.config import DataConfig
from torch_consistency.data import build_dataset
from torch_consistency.evaluation.lowdim import ode_endpoint
from torch_consistency.generate import teacher_sigmas
from torch_consistency.solvers import solve_ode

MIXTURES = [  # name, dim, components, component std
    ("eight_gaussians", 2, 8, 0.01),
    ("eight_gaussians", 2, 8, 0.02),
    ("eight_gaussians", 2, 8, 0.05),
    ("eight_gaussians", 2, 8, 0.2),
    ("gmm", 2, 4, 0.2),
    ("gmm", 8, 4, 0.3),
]


def main() -> None:
    print(f"{'mixture':<34}{'K=18 (35 NFE)':>15}{'K=40 (79 NFE)':>15}{'K=80 (159 NFE)':>16}{'40→80 ratio':>13}")
    for name, dim, components, std in MIXTURES:
        mixture = build_dataset(DataConfig(name=name, dim=dim, components=components, component_std=std)).mixture
        x = 80 * torch.randn(500, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        reference = ode_endpoint(mixture.denoiser, x, 80.0, 1e-6, num_steps=4096)
        scale = mixture.stds().mean().item() * dim**0.5
        errors = []
        for levels in (18, 40, 80):
            result = solve_ode(mixture.denoiser, x, teacher_sigmas(levels, 0.002, 80.0, 7.0), "heun")
            errors.append((result.x - reference).norm(dim=1).mean().item() / scale)
        label = f"{name} d={dim} K={components} std={std}"
        print(f"{label:<34}{errors[0]:>15.2e}{errors[1]:>15.2e}{errors[2]:>16.2e}{errors[1] / errors[2]:>13.1f}")


if __name__ == "__main__":
    main()
