"""Evaluate checkpoints on low-dimensional data: samples at several step counts against held-out data.

The verdict measure is the MMD with Gaussian kernels from the clusters' width up (`mmd_bandwidths`) on many
samples, against the exact law when the data is a Gaussian mixture (a held-out set's own noise would otherwise
dominate the MMD of a good model): the exact W2 of a few thousand points is dominated by its own sampling noise
(how many points each cluster happens to get), which hides a cluster squashed into a segment; W2 is still
reported, on W2_POINTS points.
"""

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..checkpoint import Checkpoint
from ..data import Distribution
from ..gaussian import GaussianMixture
from ..generate import Generated, sample_model
from ..parameterization import Preconditioned
from ..samplers import ConsistencyFunction
from ..seeding import derive_seed
from ..sigmas import karras_sigmas
from ..trigflow import TrigFlowModel
from .lowdim import ConsistencyError, consistency_error, mixture_coverage, mmd, mmd_squared, wasserstein2

HELD_OUT_STREAM = 7
W2_POINTS = 2000  # the exact W2 (an assignment problem, O(n³)) is computed on this many points


@dataclass
class Score:
    """One row of results: what was sampled, at how many network evaluations, and how well."""

    label: str
    nfe: int
    mmd: float  # MMD with kernels from the clusters' width up (`mmd_bandwidths`), all samples: the verdicts' measure
    w2: float  # exact W2 on the first W2_POINTS samples
    precision: float | None = None  # Gaussian mixtures: share of samples inside a component's 99 % ellipsoid
    covered: int | None = None  # Gaussian mixtures: components that get at least half their share

    def to_dict(self) -> dict:
        return asdict(self)


def held_out(dataset: Distribution, num_samples: int, seed: int, part: int = 0) -> torch.Tensor:
    """Draws that no training step sees: seeded from (seed, stream, part), disjoint from the training streams."""
    generator = torch.Generator().manual_seed(derive_seed(seed, HELD_OUT_STREAM, part))
    return dataset.sample(num_samples, generator)


def mmd_bandwidths(dataset: Distribution, reference: torch.Tensor) -> tuple[float, ...]:
    """The MMD's kernel widths h, 2h, 4h, 8h, 16h: h is a mixture's component std (RMS over components and
    coordinates), otherwise a tenth of the reference's std per coordinate (about the width of the toys' strokes).
    The narrowest kernel sees a cluster squashed into a segment or a point, the widest mass in the wrong place."""
    if dataset.mixture is not None:
        width = float(dataset.mixture.covariances.diagonal(dim1=1, dim2=2).mean().sqrt())
    else:
        width = float(0.1 * reference.flatten(1).double().var(0).mean().sqrt())
    return tuple(width * 2**k for k in range(5))


def score(label: str, samples: torch.Tensor, reference: torch.Tensor, nfe: int, dataset: Distribution) -> Score:
    """MMD from the clusters' width up (to a mixture's exact law, else to `reference`), exact W2 against `reference`
    on W2_POINTS points and, for mixtures, coverage of `samples`."""
    coverage = mixture_coverage(samples, dataset.mixture) if dataset.mixture is not None else None
    return Score(
        label, nfe, mmd(samples, mmd_reference(dataset, reference), mmd_bandwidths(dataset, reference)),
        wasserstein2(samples[:W2_POINTS], reference[:W2_POINTS]),
        coverage.precision if coverage else None, coverage.covered if coverage else None,
    )  # fmt: skip


def mmd_reference(dataset: Distribution, reference: torch.Tensor) -> torch.Tensor | GaussianMixture:
    """What the MMD compares samples with: a mixture's exact law, where there is one (no reference set's own noise),
    else the held-out `reference`."""
    return dataset.mixture if dataset.mixture is not None else reference


def search_metric(dataset: Distribution, num_samples: int, seed: int, part: int = 0) -> Callable[[torch.Tensor], float]:
    """The time-point search's objective on low-dimensional data: the signed unbiased MMD² (as `score`'s, against
    held-out draws `part`). Not its square root, which reads the noise below 0 as 0: two good σ's would tie there
    and the search would keep the first."""
    reference = held_out(dataset, num_samples, seed, part)
    law, bandwidths = mmd_reference(dataset, reference), mmd_bandwidths(dataset, reference)
    return lambda samples: mmd_squared(samples, law, bandwidths)


def data_floor(dataset: Distribution, num_samples: int, seed: int) -> Score:
    """The metrics of a real set of the same size (against the law or an independent real set, as `score`): the
    best any model can score."""
    return score("data", held_out(dataset, num_samples, seed, 1), held_out(dataset, num_samples, seed, 0), 0, dataset)


def sample_checkpoint(
    checkpoint: Checkpoint, num_samples: int, *, weights: str | None = None, **options: Any
) -> Generated:
    """Samples from a checkpoint's weight set `weights` (default: its first EMA); options as for sample_model."""
    model = checkpoint.build_model(weights)
    return sample_model(
        model, checkpoint.config, checkpoint.sample_shape, checkpoint.num_classes, num_samples, **options
    )


def evaluate_checkpoint(
    checkpoint: Checkpoint,
    dataset: Distribution,
    *,
    label: str,
    steps: Sequence[int] = (1, 2, 4),
    teacher_levels: Sequence[int] = (18,),
    num_samples: int = 10_000,
    seed: int = 0,
    guidance: float | None = None,
) -> tuple[list[Score], dict[str, torch.Tensor]]:
    """Scores at each step count (consistency models) or number of levels (teachers), with the samples."""
    reference = held_out(dataset, num_samples, seed)
    scores, samples = [], {}
    counts = teacher_levels if checkpoint.parameterization == "denoiser" else steps
    for count in counts:
        if checkpoint.parameterization == "denoiser":
            generated = sample_checkpoint(
                checkpoint, num_samples, teacher_levels=count, seed=seed + 1, guidance=guidance
            )
        else:
            generated = sample_checkpoint(checkpoint, num_samples, steps=count, seed=seed + 1, guidance=guidance)
        name = f"{label} {generated.nfe} NFE"
        scores.append(score(label, generated.x, reference, generated.nfe, dataset))
        samples[name] = generated.x
    return scores, samples


def consistency_error_of(
    checkpoint: Checkpoint, dataset: Distribution, num_samples: int = 500, seed: int = 0
) -> ConsistencyError | None:
    """The consistency error against the exact ODE of a Gaussian-mixture dataset, on the training grid."""
    if dataset.mixture is None or checkpoint.parameterization == "denoiser":
        return None
    config, d = checkpoint.config, checkpoint.config.diffusion
    num_points = config.cd.num_points if config.train.method == "cd" else 18
    grid = karras_sigmas(num_points, d.sigma_min, d.sigma_max, d.rho)[:-1]
    model = checkpoint.build_model().double()
    x0 = held_out(dataset, num_samples, seed).double()
    generator = torch.Generator().manual_seed(derive_seed(seed, HELD_OUT_STREAM, 99))
    return consistency_error(
        edm_consistency_function(model), dataset.mixture.denoiser, x0, grid.tolist(), d.sigma_min, generator
    )


def edm_consistency_function(model: Preconditioned | TrigFlowModel) -> ConsistencyFunction:
    """f(x_σ, σ) at EDM noise levels: the consistency model itself, or a TrigFlow model at t = arctan(σ/σ_d) and
    x_t = cos t·x_σ (`TrigFlowModel.edm_consistency`)."""
    if isinstance(model, TrigFlowModel):
        return model.edm_consistency
    return lambda x, sigma: model(x, sigma)
