"""Inception-v3 pool3 features (2048-d) for FID, in plain torch (reference.md §14). Nothing is downloaded.

The network is the TensorFlow 2015-12-05 graph as ported by pytorch-fid and torch-fidelity (FIDInceptionA/C/E_1/E_2:
average pools that ignore padding, a max pool in the last block). Its parameter names are torchvision's, which are
also the names in torch-fidelity's file, so both weight files load as they are; pytorch-fid's wrapper layout
(`blocks.i.j.…`) is mapped. clean-fid's file is NVIDIA's TorchScript detector (StyleGAN2-ADA) and is run as clean-fid
runs it. Every input goes through torch-fidelity's preprocessing, named in `PREPROCESSING`: grey → RGB, 8-bit values,
TensorFlow 1's bilinear resize to 299×299, (x − 128)/128. tests/test_metric_references.py shows that image →
features equals torch-fidelity's FeatureExtractorInceptionV3 for any image size, so FID computed here is
torch-fidelity's (and TensorFlow's); pytorch-fid resizes with torch's bilinear and scales by 2x/255 − 1 instead.
The network is kept here rather than imported because torch-fidelity needs torchvision, which this library does not.
"""

import re
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError

SIZE = 299
FEATURES = 2048
PREPROCESSING = "8-bit RGB, TensorFlow-1 bilinear resize to 299×299, (x − 128)/128 (as torch-fidelity)"
SOURCES = (
    "pt_inception-2015-12-05-6726825d.pth from pytorch-fid "
    "(https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth), "
    "weights-inception-2015-12-05-6726825d.pth from torch-fidelity "
    "(https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth) "
    "or inception-2015-12-05.pt from clean-fid / StyleGAN2-ADA "
    "(https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt)"
)
# pytorch-fid's InceptionV3 wrapper: blocks.<block>.<index> → the torchvision module name
WRAPPER_NAMES = (
    ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"),
    ("Conv2d_3b_1x1", "Conv2d_4a_3x3"),
    ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"),
    ("Mixed_7a", "Mixed_7b", "Mixed_7c"),
)


class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm (ε = 0.001), ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    """TensorFlow's 3×3 average pool: padded zeros are not counted."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):  # fmt: skip
            bd = layer(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_avg_pool(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """The last blocks; pytorch-fid's E_1 pools by average (padding not counted), E_2 by maximum."""

    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class InceptionV3Features(nn.Module):
    """Inception-v3 up to the final average pool: (N, 3, 299, 299) as (x − 128)/128 → (N, 2048). No fc layer."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, kernel_size=3, stride=2)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in WRAPPER_NAMES[2] + WRAPPER_NAMES[3]:
            x = getattr(self, name)(x)
        return x.mean(dim=(2, 3))


def pixel_values(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (N, 1 or 3, H, W) → RGB 8-bit values round((x + 1)·127.5) in 0…255, as float32."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ConfigError(f"Inception features need images (N, 1 or 3, H, W), got shape {tuple(images.shape)}")
    x = ((images.float() + 1) * 127.5).round().clamp(0, 255)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def resize_tensorflow1(x: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """TensorFlow 1's bilinear resize (align_corners=False): output pixel i reads the input at i·n_in/size."""

    def axis(n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scale = torch.tensor(n_in / size, dtype=torch.float32)
        position = torch.arange(size, dtype=torch.float32, device=x.device) * scale
        low = position.long()
        return low, (low + 1).clamp_max(n_in - 1), position - low.float()

    (top, bottom, dy), (left, right, dx) = axis(x.shape[-2]), axis(x.shape[-1])

    def along_width(rows: torch.Tensor) -> torch.Tensor:
        return rows[..., left] + (rows[..., right] - rows[..., left]) * dx

    upper, lower = along_width(x[..., top, :]), along_width(x[..., bottom, :])
    return upper + (lower - upper) * dy[:, None]


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (N, C, H, W) → RGB values in 0…255 at 299×299: 8-bit, then TensorFlow 1's resize."""
    return resize_tensorflow1(pixel_values(images))


def standard_state_dict(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Key names of a pytorch-fid / torch-fidelity file (torchvision's), from theirs or pytorch-fid's wrapper."""
    if isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # type: ignore[assignment]  # pytorch-fid's wrapper: a dict inside
    if not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path} is not a state dict of tensors (expected Inception weights: {SOURCES})")
    if any(k.startswith("AuxLogits.") for k in state):
        raise CheckpointError(f"{path} is torchvision's ImageNet Inception-v3, not the FID network; use {SOURCES}")
    mapped = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        match = re.match(r"blocks\.(\d)\.(\d)\.(.*)", key)
        if match:
            block, index = int(match[1]), int(match[2])
            if block < len(WRAPPER_NAMES) and index < len(WRAPPER_NAMES[block]):
                key = f"{WRAPPER_NAMES[block][index]}.{match[3]}"
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue  # the 1008-way classifier is not needed for pool3 features
        mapped[key] = value
    return mapped


def load_state_dict_checked(network: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load the weights, refusing a file whose names or shapes are not those of the FID Inception-v3."""
    expected = {k: v for k, v in network.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing, unknown = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unknown:
        example = f"e.g. {unknown[0]!r} is unknown" if unknown else f"e.g. {missing[0]!r} is missing"
        raise CheckpointError(
            f"{path} is not an FID Inception-v3 state dict ({len(missing)} of {len(expected)} keys missing, "
            f"{len(unknown)} unknown; {example}); expected {SOURCES}"
        )
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise CheckpointError(f"{path}: {key} has shape {tuple(value.shape)}, the FID Inception-v3 needs "
                                  f"{tuple(expected[key].shape)}")  # fmt: skip
    network.load_state_dict(state, strict=False)


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip with code/ and constants.pkl (torch.save's zips have neither)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


class InceptionExtractor:
    """Pool3 features from one of the three weight files: images in [-1, 1] (N, C, H, W) → (N, 2048) float32."""

    def __init__(self, network: nn.Module, description: str, torchscript: bool, device: str | torch.device) -> None:
        self.network = network.to(device).eval()
        self.description = description
        self.torchscript = torchscript
        self.device = torch.device(device)
        self.dim = FEATURES

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x255 = preprocess(images.to(self.device))
        x = (x255 - 128) / 128
        if not self.torchscript:
            features = self.network(x)
        elif hasattr(self.network, "layers"):  # NVIDIA's detector as clean-fid runs it: (x − 128)/128 into .layers
            features = self.network.layers(x).reshape(len(x), -1)  # type: ignore[operator]
        else:  # or [0, 255] into forward(…, return_features=True)
            features = self.network(x255, return_features=True).reshape(len(x), -1)
        if features.shape != (len(x), FEATURES):
            raise CheckpointError(f"{self.description}: gives features of shape {tuple(features.shape)}, not "
                                  f"(N, {FEATURES}); it is not an Inception-v3 pool3 network")  # fmt: skip
        return features.float().cpu()


def _load_torchscript(path: Path) -> nn.Module:
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as error:  # a broken or foreign archive: its error type is torch's business
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(f"{path} is not a loadable TorchScript model: {first_line}") from None
    names = list(module.forward.schema.arguments) if hasattr(module.forward, "schema") else []
    if not hasattr(module, "layers") and "return_features" not in [a.name for a in names]:
        raise CheckpointError(f"{path} is TorchScript but neither has .layers nor takes return_features, as the "
                              "clean-fid / StyleGAN2-ADA Inception does")  # fmt: skip
    return module


def load_inception(
    path: str | Path, device: str | torch.device = "cpu", allow_torchscript: bool = False
) -> InceptionExtractor:
    """The FID Inception-v3 from a weights file given by the user (never downloaded); kind found from its content.

    A state dict is read by torch.load(weights_only=True), which builds tensors and never runs code. A TorchScript
    file (clean-fid's) is a program: it is run only with `allow_torchscript`, for a file from a source you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Inception weights {path} not found; download one of {SOURCES} yourself")
    if is_torchscript(path):
        if not allow_torchscript:
            raise CheckpointError(
                f"{path} is TorchScript, a program rather than weights: it runs only with --allow-torchscript "
                "(give it for a file from a source you trust, e.g. clean-fid's inception-2015-12-05.pt)"
            )
        extractor = InceptionExtractor(_load_torchscript(path), f"Inception-v3 pool3 (TorchScript {path.name}), "
                                       f"input {PREPROCESSING}", True, device)  # fmt: skip
        extractor(torch.zeros(1, 3, SIZE, SIZE))  # a foreign TorchScript fails here, with one line
        return extractor
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # text, truncated or pickled objects: one line, whatever torch raised
        kind = type(error).__name__
        raise CheckpointError(f"{path} is not a PyTorch weights file ({kind}); expected {SOURCES}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict; expected {SOURCES}")
    network = InceptionV3Features()
    load_state_dict_checked(network, standard_state_dict(state, path), path)
    description = f"Inception-v3 pool3 ({path.name}, torchvision names), input {PREPROCESSING}"
    return InceptionExtractor(network, description, False, device)
