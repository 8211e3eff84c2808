"""Small configs that train in seconds."""

from torch_consistency.config import load_config

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


def tiny_config(*overrides: str):
    """A tiny MLP on eight Gaussians; `overrides` are --set strings."""
    return load_config(None, [*TINY, *overrides])


def raises_exactly(kind: type[Exception], message: str):
    """pytest.raises for exactly this message (the whole of it, not a part)."""
    import re

    import pytest

    return pytest.raises(kind, match=f"^{re.escape(message)}$")
