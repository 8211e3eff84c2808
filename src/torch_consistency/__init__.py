"""torch-consistency: consistency models in PyTorch (CD, CT, iCT, ECT, sCM), one- and few-step sampling,
zero-shot editing and honest evaluation. The public API: `load` a checkpoint as a `Model`, then `Model.sample`
and its editing methods (tensors in and out); bad arguments raise a `UserInputError` subclass."""

__version__ = "0.1.0"

from .editing import EditResult
from .errors import CheckpointError, ConfigError, DataError, UserInputError
from .model import GuidanceRange, Model, Samples, load

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "EditResult",
    "GuidanceRange",
    "Model",
    "Samples",
    "UserInputError",
    "__version__",
    "load",
]
