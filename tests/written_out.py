"""reference.md's formulas written out a second time, independently of the library, for tests to compare against.

Nothing here imports torch_consistency: a test that takes its expected value from this module does not take it
from the helper under test. Every function is the equation it names, in float64, without shortcuts.
"""

import math

import numpy as np
import torch

SIGMA_MIN, SIGMA_MAX, RHO, SIGMA_DATA = 0.002, 80.0, 7.0, 0.5


def karras(index, num_points: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO):
    """σ_i = (σ_max^{1/ρ} + i/(N−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, index 0 at σ_max (§1)."""
    i = torch.as_tensor(index, dtype=torch.float64)
    return (sigma_max ** (1 / rho) + i / (num_points - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


def ct_scale(step: int, total: int, s0: int, s1: int) -> int:
    """m = max(1, ⌈√(k/K·((s1+1)² − s0²) + s0²) − 1⌉), N(k) = m + 1 (§5, the released code)."""
    return max(1, math.ceil(math.sqrt(step / total * ((s1 + 1) ** 2 - s0**2) + s0**2) - 1))


def ct_mu(step: int, total: int, s0: int, s1: int, mu0: float, paper: bool = False) -> float:
    """μ(k) = exp(s0·ln μ0 / m) (code) or exp(s0·ln μ0 / N(k)) (paper) (§5)."""
    m = ct_scale(step, total, s0, s1)
    return math.exp(s0 * math.log(mu0) / (m + 1 if paper else m))


def ict_num_points(step: int, total: int, s0: int, s1: int) -> int:
    """N(k) = min(s0·2^⌊k/K'⌋, s1) + 1 with K' = ⌊K/(log2⌊s1/s0⌋ + 1)⌋ (§8)."""
    stage_length = math.floor(total / (math.log2(math.floor(s1 / s0)) + 1))
    return min(s0 * 2 ** (step // stage_length), s1) + 1


def ict_pair_probabilities(num_points: int, p_mean: float, p_std: float) -> list[float]:
    """p(i) ∝ erf((ln σ_i − P_mean)/(√2 P_std)) − erf((ln σ_{i+1} − P_mean)/(√2 P_std)), descending grid (§8)."""
    grid = [karras(i, num_points).item() for i in range(num_points)]
    cdf = [math.erf((math.log(s) - p_mean) / (math.sqrt(2) * p_std)) for s in grid]
    mass = [cdf[i] - cdf[i + 1] for i in range(num_points - 1)]
    return [m / sum(mass) for m in mass]


def ect_second_point(t: torch.Tensor, stage: int, q: float) -> torch.Tensor:
    """r = max(0, t·(1 − q^{−(s+1)}·(1 + 8·sigmoid(−t)))) (§9)."""
    return torch.clamp(t * (1 - q ** (-(stage + 1)) * (1 + 8 / (1 + torch.exp(t)))), min=0.0)


def euler(denoiser, x, sigma, sigma_next):
    """x' = x + (σ'−σ)·(x − D(x,σ))/σ (§3)."""
    s, s_next = sigma[:, None], sigma_next[:, None]
    return x + (s_next - s) * (x - denoiser(x, sigma)) / s


def heun(denoiser, x, sigma, sigma_next):
    """EDM Algorithm 2: Euler to x̃, then x' = x + (σ'−σ)·(d + d̃)/2 with d̃ = (x̃ − D(x̃,σ'))/σ' (§3)."""
    s, s_next = sigma[:, None], sigma_next[:, None]
    d = (x - denoiser(x, sigma)) / s
    x_euler = x + (s_next - s) * d
    d_next = (x_euler - denoiser(x_euler, sigma_next)) / s_next
    return x + (s_next - s) * (d + d_next) / 2


def dpmpp_2m(denoiser, x, levels):
    """DPM-Solver++(2M) through positive levels (each a σ per sample): x_i = (σ_i/σ_{i−1})·x_{i−1} − (e^{−h_i} − 1)·D̂_i
    with h_i = ln σ_{i−1} − ln σ_i, D̂_1 = D_0 and D̂_i = (1 + 1/(2r_i))·D_{i−1} − 1/(2r_i)·D_{i−2}, r_i = h_{i−1}/h_i
    (Lu et al. 2022, Algorithm 2; §3)."""
    denoised, steps = [], []
    for i in range(1, len(levels)):
        s, s_next = levels[i - 1].double()[:, None], levels[i].double()[:, None]
        denoised.append(denoiser(x, levels[i - 1]).double())
        steps.append(torch.log(s) - torch.log(s_next))
        if i == 1:
            estimate = denoised[-1]
        else:
            r = steps[-2] / steps[-1]
            estimate = (1 + 1 / (2 * r)) * denoised[-1] - 1 / (2 * r) * denoised[-2]
        x = s_next / s * x.double() - torch.expm1(-steps[-1]) * estimate
    return x


class GaussianData:
    """Data ~ N(μ, s²I): the exact EDM denoiser, consistency function and TrigFlow quantities (§10, §12)."""

    def __init__(self, mean: torch.Tensor, std: float) -> None:
        self.mean, self.std = mean.double(), std

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.mean + self.std * torch.randn(n, len(self.mean), generator=generator, dtype=torch.float64)

    def denoiser(self, x, sigma):
        """D(x, σ) = μ + s²/(s²+σ²)·(x − μ)."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return self.mean + self.std**2 / (self.std**2 + sigma**2) * (x - self.mean)

    def consistency(self, x, sigma, sigma_min: float):
        """f(x, σ) = μ + √((s² + σ_min²)/(s² + σ²))·(x − μ)."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return self.mean + torch.sqrt((self.std**2 + sigma_min**2) / (self.std**2 + sigma**2)) * (x - self.mean)

    def trigflow_consistency(self, x_t, t):
        """f(x_t, t), the exact ODE map to t = 0: μ + s·(x_t − μ cos t)/√(s² cos²t + σ_d² sin²t), finite at π/2."""
        cos, sin = torch.cos(t)[:, None], torch.sin(t)[:, None]
        return self.mean + self.std * (x_t - self.mean * cos) / torch.sqrt(
            self.std**2 * cos**2 + SIGMA_DATA**2 * sin**2
        )

    def trigflow_velocity(self, x_scaled, t):
        """F(x_t/σ_d, t) = (cos t·x_t − f(x_t, t))/(σ_d sin t): the F_θ whose f is the exact consistency function."""
        x_t = SIGMA_DATA * x_scaled
        cos, sin = torch.cos(t)[:, None], torch.sin(t)[:, None]
        return (cos * x_t - self.trigflow_consistency(x_t, t)) / (SIGMA_DATA * sin)

    def ode_velocity(self, x_t, t):
        """dx_t/dt of the PF-ODE = E[cos t·z − sin t·x0 | x_t]
        = −sin t·μ + cos t sin t·(σ_d² − s²)/(s² cos²t + σ_d² sin²t)·(x_t − μ cos t) (Gaussian conditioning)."""
        cos, sin = torch.cos(t)[:, None], torch.sin(t)[:, None]
        total = self.std**2 * cos**2 + SIGMA_DATA**2 * sin**2
        return -sin * self.mean + cos * sin * (SIGMA_DATA**2 - self.std**2) / total * (x_t - self.mean * cos)

    def posterior(self, x_t, t):
        """Mean and variance of x0 given x_t = cos t·x0 + sin t·z, z ~ N(0, σ_d²I)."""
        cos, sin = torch.cos(t)[:, None], torch.sin(t)[:, None]
        total = self.std**2 * cos**2 + SIGMA_DATA**2 * sin**2
        mean = self.mean + cos * self.std**2 / total * (x_t - self.mean * cos)
        return mean, self.std**2 * SIGMA_DATA**2 * sin**2 / total


def batch_generator(seed: int, batch: int) -> torch.Generator:
    """Batch b of a sampling or editing call draws from a generator seeded with numpy's SeedSequence of
    (seed, b, 4), its first 64-bit word shifted right by one (4: the sampling stream)."""
    word = np.random.SeedSequence([seed, batch, 4]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(word) >> 1)
