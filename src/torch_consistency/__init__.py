"""torch-consistency: consistency models in PyTorch (CD, CT, iCT, ECT, sCM), one- and few-step sampling,
zero-shot editing and honest evaluation (docs/api.md).

- Workflows: `train` a run, `load` a checkpoint as a `Model` (`.sample`, the editing methods: tensors in and out),
  `evaluate` it, `export_diffusers`. Bad arguments raise a `UserInputError` subclass.
- Bring your own loop: the losses (CD, CT/iCT, ECT, sCM, the teacher's), the consistency parameterisation
  `Preconditioned` around any `net(x, c_noise, labels)`, the σ grids, schedules and pair samplers, the ODE
  solvers, the samplers and exact Gaussian oracles: pure functions, no trainer, config or checkpoint needed.
"""

__version__ = "0.1.0"

from .api import export_diffusers, train
from .distances import l1_distance, l2_distance, pseudo_huber_constant, pseudo_huber_distance
from .editing import EditResult
from .errors import CheckpointError, ConfigError, DataError, UserInputError
from .evaluation.options import Evaluation
from .evaluation.run import evaluate
from .gaussian import GaussianMixture, gaussian_consistency_function, gaussian_denoiser
from .guidance import guided_denoiser
from .model import GuidanceRange, Model, Samples, load
from .objectives import (
    consistency_distillation_loss,
    consistency_training_loss,
    consistency_weight,
    ect_loss,
    edm_loss,
)
from .parameterization import Preconditioned, append_dims, consistency_scalings, edm_scalings
from .samplers import SampleResult, sample_multistep, sample_onestep, sample_trigflow
from .schedules import (
    ct_num_points,
    ct_target_ema,
    ect_second_point,
    ect_stage,
    ict_num_points,
    tangent_warmup,
)
from .sigmas import default_sampling_sigmas, edm_training_sigma, karras_sigmas, lognormal_pair_probabilities
from .solvers import euler_step, heun_step, solve_ode, teacher_step
from .trigflow import TrigFlowModel, scm_training_loss, trigflow_sampling_times, trigflow_training_time

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "EditResult",
    "Evaluation",
    "GaussianMixture",
    "GuidanceRange",
    "Model",
    "Preconditioned",
    "SampleResult",
    "Samples",
    "TrigFlowModel",
    "UserInputError",
    "__version__",
    "append_dims",
    "consistency_distillation_loss",
    "consistency_scalings",
    "consistency_training_loss",
    "consistency_weight",
    "ct_num_points",
    "ct_target_ema",
    "default_sampling_sigmas",
    "ect_loss",
    "ect_second_point",
    "ect_stage",
    "edm_loss",
    "edm_scalings",
    "edm_training_sigma",
    "euler_step",
    "evaluate",
    "export_diffusers",
    "gaussian_consistency_function",
    "gaussian_denoiser",
    "guided_denoiser",
    "heun_step",
    "ict_num_points",
    "karras_sigmas",
    "l1_distance",
    "l2_distance",
    "load",
    "lognormal_pair_probabilities",
    "pseudo_huber_constant",
    "pseudo_huber_distance",
    "sample_multistep",
    "sample_onestep",
    "sample_trigflow",
    "scm_training_loss",
    "solve_ode",
    "tangent_warmup",
    "teacher_step",
    "train",
    "trigflow_sampling_times",
    "trigflow_training_time",
]
