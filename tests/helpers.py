"""Small configs that train in seconds."""

from torch_consistency.configs import load_config

TINY = [
    "network.width=32",
    "network.depth=1",
    "network.embedding_dim=16",
    "optim.batch_size=64",
    "optim.lr=2e-3",
    "train.total_steps=40",
    "train.checkpoint_every=20",
    "train.keep_checkpoints=5",
]


# a tiny U-Net on the 8×8 digits, for what needs a U-Net teacher
UNET = ["network.kind=unet", "network.preset=tiny", "data.name=digits", "optim.batch_size=2", "train.total_steps=1"]


def tiny_teacher(num_classes: int = 0):
    """An untrained tiny U-Net EDM denoiser (σ_data 0.5, EDM's noise conditioning) for 8×8 images, seeded."""
    import torch

    from torch_consistency.nets.unet import build_unet
    from torch_consistency.parameterization import Preconditioned

    torch.manual_seed(0)
    return Preconditioned(build_unet("tiny", (1, 8, 8), num_classes), "denoiser", 0.5, 0.002, "edm").eval()


def tiny_config(*overrides: str):
    """A tiny MLP on eight Gaussians; `overrides` are --set strings."""
    return load_config(None, [*TINY, *overrides])


def untrained_checkpoint(folder, sample_shape=(2,), *overrides: str, step: int = 1):
    """A checkpoint of an untrained tiny model (written by save_checkpoint) in the run folder `folder`."""
    import copy

    from torch_consistency.checkpoint import PARAMETERIZATIONS, save_checkpoint
    from torch_consistency.nets import build_model

    config = tiny_config(*overrides)
    model = build_model(config, PARAMETERIZATIONS.get(config.train.method, "consistency"), sample_shape)
    modules = {"online": model, "ema-0.999": copy.deepcopy(model)}  # safetensors refuses shared tensors
    state = {"optimizer": {"state": {}, "param_groups": []}}
    save_checkpoint(folder, step, config, sample_shape, 0, modules, state, keep=5)
    return folder


def raises_exactly(kind: type[Exception], message: str):
    """pytest.raises for exactly this message (the whole of it, not a part)."""
    import re

    import pytest

    return pytest.raises(kind, match=f"^{re.escape(message)}$")
