"""The maintained metric libraries our metrics are tested equal to: torch-fidelity, lpips (both need torchvision), prdc.

Why this helper exists: torch-fidelity and lpips import torchvision, and the only torchvision installable beside the
CPU torch 2.13.0 on x86_64 is PyPI's CUDA wheel (0.28.0). Its C extension needs libtorch_cuda.so and does not load,
and then `import torchvision` fails in torchvision/_meta_registrations.py ("operator torchvision::nms does not
exist"), which registers fake kernels for torchvision::nms and torchvision::qnms whether or not the extension
loaded. Defining the two schemas first lets the pure-Python part (models, transforms) import and run, which is all
the reference implementations use. This is done only after a plain import has failed that way, so a torchvision
whose C extension loads is imported untouched.

Installed in the venv, that torchvision would also break diffusers (a runtime dependency: it imports torchvision
when it finds it, and fails the same way). So the four libraries of the `reference` extra of pyproject.toml are
installed apart, in <venv>/reference (see the Makefile), which only this helper puts on sys.path, after
site-packages. The library itself never imports any of them.
"""

import importlib
import sys
from pathlib import Path

import torch

REFERENCE_DIR = Path(sys.prefix) / "reference"

_schemas: torch.library.Library | None = None  # kept alive: the definitions vanish with the object


def import_torchvision():
    """`import torchvision`, defining torchvision::nms and ::qnms first only when its C extension cannot load."""
    global _schemas
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as error:
        if "torchvision::nms does not exist" not in str(error) or _schemas is not None:
            raise
    for name in [name for name in sys.modules if name == "torchvision" or name.startswith("torchvision.")]:
        del sys.modules[name]  # the half-imported package, so that the second import runs from the start
    _schemas = torch.library.Library("torchvision", "DEF")
    _schemas.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _schemas.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    return importlib.import_module("torchvision")


if REFERENCE_DIR.is_dir() and str(REFERENCE_DIR) not in sys.path:
    sys.path.append(str(REFERENCE_DIR))  # after site-packages: a torchvision installed in the venv comes first
import_torchvision()

import lpips  # noqa: E402  (needs torchvision importable)
import prdc  # noqa: E402
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3  # noqa: E402
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x  # noqa: E402
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric  # noqa: E402
from torch_fidelity.metric_kid import kernel_mmd, kid_features_to_metric  # noqa: E402
from torch_fidelity.metric_prc import prc_features_to_metric  # noqa: E402

__all__ = [
    "FeatureExtractorInceptionV3",
    "fid_features_to_statistics",
    "fid_statistics_to_metric",
    "interpolate_bilinear_2d_like_tensorflow1x",
    "kernel_mmd",
    "kid_features_to_metric",
    "lpips",
    "prc_features_to_metric",
    "prdc",
]
