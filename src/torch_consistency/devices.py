"""Device names (train.device, --device): checked as text when a config is validated, and against this machine
before anything runs on them."""

import torch

from .errors import ConfigError

DEVICE_TYPES = ("cpu", "cuda", "mps")


def parse_device(name: str, key: str = "--device") -> torch.device:
    """`name` ("auto", cpu, cuda, cuda:1, mps) as a torch.device ("auto" → cuda if present, else cpu)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        device = None
    if device is None or device.type not in DEVICE_TYPES or (device.type == "cpu" and device.index not in (None, 0)):
        raise ConfigError(f"{key} = {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps")
    return device


def available_device(name: str, key: str = "--device") -> torch.device:
    """`parse_device(name)`, refused unless this machine has that device."""
    device = parse_device(name, key)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"{key} = {name!r}, but this machine has no CUDA device (use cpu)")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{key} = {name!r}, but this machine has {count} CUDA device(s): cuda:0…cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{key} = {name!r}, but MPS is not available on this machine (use cpu)")
    return device
