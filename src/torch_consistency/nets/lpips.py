"""LPIPS (Zhang et al. 2018) with VGG16: the perceptual distance of the paper's best CD runs (reference.md §4).

No weights ship with the project. The user supplies torchvision's VGG16 ImageNet weights
(`vgg16-397923af.pth`, from https://download.pytorch.org/models/) and the LPIPS linear heads for VGG
(`vgg.pth` of the lpips package, https://github.com/richzhang/PerceptualSimilarity, lpips/weights/v0.1/), which
are taken from an installed lpips package when no heads file is given; both may also be merged into one state
dict. Images below 256 px are upsampled to 224 (bilinear), as in openai's consistency-model code; the lpips
package does not resize. tests/test_metric_references.py shows that `LPIPS.distance` equals the lpips package's
`LPIPS(net="vgg")` on the same weights; the network is kept here because the lpips package needs torchvision.
"""

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError

VGG_LAYERS = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
TAPS = (3, 8, 15, 22, 29)  # torchvision indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
CHANNELS = (64, 128, 256, 512, 512)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
SOURCES = (
    "torchvision's vgg16-397923af.pth (https://download.pytorch.org/models/vgg16-397923af.pth) and the lpips "
    "package's weights/v0.1/vgg.pth (https://github.com/richzhang/PerceptualSimilarity; used by itself when the "
    "lpips package is installed)"
)


def vgg16_features() -> nn.Sequential:
    """torchvision's `vgg16().features` up to relu5_3, with the same layer indices."""
    layers: list[nn.Module] = []
    channels = 3
    for spec in VGG_LAYERS:
        if spec == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            assert isinstance(spec, int)
            layers += [nn.Conv2d(channels, spec, 3, padding=1), nn.ReLU(inplace=False)]
            channels = spec
    return nn.Sequential(*layers)


def unit_normalize(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Each spatial feature vector divided by its norm over channels (LPIPS's normalize_tensor)."""
    return features / (features.square().sum(dim=1, keepdim=True).sqrt() + eps)


def vgg_input(x: torch.Tensor) -> torch.Tensor:
    """Grey → RGB; images below 256 px wide upsampled to 224×224 (bilinear), as openai's consistency-model code."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-1] < 256:
        x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
    return x


class LPIPS(nn.Module):
    """d(x, y) = Σ_l mean_hw w_l·(ĝ_l(x) − ĝ_l(y))², ĝ_l the unit-normalised VGG16 activations; images in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.features = vgg16_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS)
        self.shift: torch.Tensor
        self.scale: torch.Tensor
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, taps = (x - self.shift) / self.scale, []
        for index, layer in enumerate(self.features):
            h = layer(h)
            if index in TAPS:
                taps.append(unit_normalize(h))
        return taps

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The distance of RGB images at their own size: the lpips package's LPIPS(net="vgg")(x, y), shape (N,)."""
        distance = x.new_zeros(x.shape[0])
        for lin, a, b in zip(self.lins, self.activations(x), self.activations(y), strict=True):
            distance = distance + lin((a - b).square()).mean(dim=(1, 2, 3))
        return distance

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.distance(vgg_input(x), vgg_input(y))


def installed_lpips_heads() -> Path | None:
    """The VGG heads file shipped in an installed lpips package (found without importing it), if any."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "weights" / "v0.1" / "vgg.pth"
    return path if path.is_file() else None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a file, refused in one line when missing or not a state dict."""
    if not path.is_file():
        raise CheckpointError(f"LPIPS weights {path} do not exist; they come from {SOURCES}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{path} is not a PyTorch state dict: {str(error).splitlines()[0]}") from None
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{path} is not a state dict")
    return loaded


def our_names(loaded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's VGG16 (features.i.*) and lpips' heads (lin{l}.model.1.weight) → this module's names."""
    state = {}
    for key, value in loaded.items():
        key = key.removeprefix("net.")
        if key.startswith("lin") and ".model.1." in key:  # lpips: lin0.model.1.weight → lins.0.weight
            key = f"lins.{key[3]}.weight"
        elif key.startswith("features.") and int(key.split(".")[1]) > TAPS[-1]:
            continue  # torchvision's pool5 and beyond
        elif key.startswith("classifier."):
            continue
        state[key] = value
    return state


def load_lpips(*paths: str | Path) -> LPIPS:
    """LPIPS from torchvision VGG16 weights and lpips' linear heads (one merged file, the two files, or the VGG16
    file alone with the heads of an installed lpips package)."""
    state: dict[str, torch.Tensor] = {}
    for path in paths:
        state.update(our_names(read_state_dict(Path(path))))
    if not any(key.startswith("lins.") for key in state) and (heads := installed_lpips_heads()) is not None:
        state.update(our_names(read_state_dict(heads)))
    model = LPIPS()
    expected = {k for k in model.state_dict() if k not in ("shift", "scale")}
    missing = sorted(expected - set(state))
    if missing:
        raise CheckpointError(
            f"LPIPS weights incomplete: missing {len(missing)} tensors (e.g. {missing[0]}); need {SOURCES}"
        )
    model.load_state_dict(state, strict=False)
    return model.eval()
