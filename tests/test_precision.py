"""bf16 where it pays: a warning when bf16 autocast would run on a CPU without native bf16."""

import torch

from helpers import tiny_config
from torch_consistency.training.build import build_method
from torch_consistency.training.trainer import Trainer


def create_trainer(precision: str) -> None:
    config = tiny_config(f"train.precision={precision}")
    Trainer.create(config, build_method(config, None), (2,), 0, torch.device("cpu"))


def test_bf16_on_a_cpu_without_native_bf16_warns_in_one_line(monkeypatch, capsys):
    # The one place a patch is justified: this machine's CPU has native bf16, and the warning is about CPUs that
    # lack it, so only the two capability probes are replaced (the trainer, autocast and all else are real).
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    create_trainer("bf16")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("warning:") and "AVX2" in lines[0] and "slow" in lines[0] and "fp32" in lines[0]
    create_trainer("fp32")  # fp32 never warns
    assert capsys.readouterr().err == ""


def test_bf16_on_a_cpu_with_native_bf16_does_not_warn(monkeypatch, capsys):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    create_trainer("bf16")
    assert capsys.readouterr().err == ""
