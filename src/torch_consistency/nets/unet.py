"""diffusers' UNet2DModel as F_θ(x, c_noise, class, w), built from named presets.

The U-Net receives c_in·x and c_noise = 250·ln σ as its `timestep` (positional embedding), which is what
diffusers' CMStochasticIterativeScheduler feeds it, so an exported model runs in ConsistencyModelPipeline.
A guided student's w enters as LCM's does in UNet2DConditionModel (`timestep_cond`, added to the time projection
before the time MLP); UNet2DModel has no such input, so the wrapper adds it there by a pre-hook on
`time_embedding` and keeps the UNet2DModel (and its state dict) unchanged.
"""

from typing import Any

import torch
from diffusers import UNet2DModel
from diffusers.models.attention_processor import Attention, AttnProcessor
from torch import nn

from ..embedding import GuidanceEmbedding
from ..guidance import unguided_labels

UNET_PRESETS: dict[str, dict[str, Any]] = {
    # 8×8 digits: ~0.4M parameters
    "tiny": {
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
        "norm_num_groups": 8,
        "attention_head_dim": 16,
    },
    # 28×28 MNIST: ~2M parameters, fast on a CPU
    "small": {
        "block_out_channels": (32, 64, 96),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        "norm_num_groups": 16,
        "attention_head_dim": 32,
    },
    # 32×32 CIFAR-10: ~36M parameters (DDPM's layout), for GPUs
    "cifar10": {
        "block_out_channels": (128, 256, 256, 256),
        "layers_per_block": 2,
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        "norm_num_groups": 32,
        "attention_head_dim": 64,
        "resnet_time_scale_shift": "scale_shift",
    },
    # 64×64 ImageNet: the layout of openai's consistency models (~300M parameters), for GPUs
    "imagenet64": {
        "block_out_channels": (192, 384, 576, 768),
        "layers_per_block": 3,
        "down_block_types": ("ResnetDownsampleBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D"),
        "norm_num_groups": 32,
        "attention_head_dim": 64,
        "resnet_time_scale_shift": "scale_shift",
        "downsample_type": "resnet",
        "upsample_type": "resnet",
    },
}
# 28×28 MNIST at half and at twice the small preset's width, the same layout (channels per group and heads kept):
# ~0.5M and ~7M parameters (the network-size row of docs/results/curves)
UNET_PRESETS["small-half"] = {
    **UNET_PRESETS["small"],
    "block_out_channels": tuple(c // 2 for c in UNET_PRESETS["small"]["block_out_channels"]),
    "norm_num_groups": UNET_PRESETS["small"]["norm_num_groups"] // 2,
    "attention_head_dim": UNET_PRESETS["small"]["attention_head_dim"] // 2,
}
UNET_PRESETS["small-twice"] = {
    **UNET_PRESETS["small"],
    "block_out_channels": tuple(c * 2 for c in UNET_PRESETS["small"]["block_out_channels"]),
    "norm_num_groups": UNET_PRESETS["small"]["norm_num_groups"] * 2,
    "attention_head_dim": UNET_PRESETS["small"]["attention_head_dim"] * 2,
}


class UNet(nn.Module):
    """Calls `UNet2DModel(x, timestep=c_noise, class_labels)` and returns its sample; with `guidance_input`, the
    embedding of w (`guidance_embedding`) is added to the U-Net's time projection before its time MLP, and
    `null_at_zero` (the null class's index, or None) replaces the label wherever w = 0 (cd.unconditional_fraction)."""

    def __init__(self, unet: UNet2DModel, guidance_input: bool = False, null_at_zero: int | None = None) -> None:
        super().__init__()
        self.unet = unet
        self.null_at_zero = null_at_zero
        width = unet.time_embedding.linear_1.in_features
        self.guidance_embedding = GuidanceEmbedding(width, width) if guidance_input else None

    def forward(
        self,
        x: torch.Tensor,
        c_noise: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        guidance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.unet.config.num_class_embeds is not None and class_labels is None:
            raise ValueError("this U-Net is class-conditional: pass class_labels")
        if (guidance is None) != (self.guidance_embedding is None):
            raise ValueError("pass the guidance scale w exactly when the network takes it (guidance_input)")
        if self.guidance_embedding is None:
            return self.unet(x, c_noise, class_labels=class_labels).sample
        if class_labels is not None and guidance is not None and self.null_at_zero is not None:
            class_labels = unguided_labels(class_labels, guidance, self.null_at_zero)
        added = self.guidance_embedding(guidance)
        hook = self.unet.time_embedding.register_forward_pre_hook(lambda _, args: (args[0] + added.to(args[0]),))
        try:
            return self.unet(x, c_noise, class_labels=class_labels).sample
        finally:
            hook.remove()


def build_unet(
    preset: str, sample_shape: tuple[int, ...], num_classes: int = 0, dropout: float = 0.0,
    guidance_input: bool = False, null_at_zero: int | None = None,
) -> UNet:  # fmt: skip
    """The U-Net preset `preset` for images of shape (C, H, W), class-conditional when num_classes > 0 (the number
    of class embeddings), taking the guidance scale w when `guidance_input` (with the null class `null_at_zero`
    wherever w = 0)."""
    if preset not in UNET_PRESETS:
        raise ValueError(f"unknown U-Net preset {preset!r}; choose one of {', '.join(UNET_PRESETS)}")
    if len(sample_shape) != 3:
        raise ValueError(f"a U-Net needs images of shape (C, H, W), got samples of shape {tuple(sample_shape)}")
    channels, height, width = sample_shape
    unet = UNet2DModel(
        sample_size=(height, width),
        in_channels=channels,
        out_channels=channels,
        dropout=dropout,
        num_class_embeds=num_classes if num_classes > 0 else None,
        **UNET_PRESETS[preset],
    )
    return UNet(unet, guidance_input, null_at_zero)


class FormulaGroupNorm(nn.GroupNorm):
    """GroupNorm written out (per-group mean and variance, in fp32 or wider). torch's fused group_norm has a
    forward-mode derivative that views its tangent and fails on channels-last or transposed tangents."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.to(torch.promote_types(x.dtype, torch.float32)).reshape(x.shape[0], self.num_groups, -1)
        variance, mean = torch.var_mean(h, dim=2, correction=0, keepdim=True)
        h = ((h - mean) * torch.rsqrt(variance + self.eps)).reshape(x.shape)
        if self.affine:
            shape = (1, -1) + (1,) * (x.ndim - 2)
            h = h * self.weight.reshape(shape) + self.bias.reshape(shape)
        return h.to(x.dtype)


def prepare_for_forward_ad(module: nn.Module) -> nn.Module:
    """Make `torch.func.jvp` work through a diffusers U-Net (sCM): attention by plain matmuls (`AttnProcessor`;
    scaled_dot_product_attention has no forward-mode AD on CPU) and `FormulaGroupNorm`. Same parameters, same
    state-dict keys, the same function up to rounding."""
    for parent in list(module.modules()):
        if isinstance(parent, Attention):
            parent.set_processor(AttnProcessor())
        for name, child in list(parent.named_children()):
            if type(child) is nn.GroupNorm:
                replacement = FormulaGroupNorm(child.num_groups, child.num_channels, child.eps, child.affine)
                replacement.load_state_dict(child.state_dict())
                setattr(parent, name, replacement.to(next(child.parameters(), torch.empty(0)).device))
    return module
