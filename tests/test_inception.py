import pytest
import torch
from torch import nn

from torch_consistency.errors import CheckpointError
from torch_consistency.evaluation.features import inception_extractor
from torch_consistency.evaluation.inception import (
    PREPROCESSING,
    WRAPPER_NAMES,
    InceptionV3Features,
    load_inception,
    load_state_dict_checked,
    preprocess,
    standard_state_dict,
)


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(1)
    net = InceptionV3Features().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so that a lost buffer would show
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
    return net


def pytorch_fid_layout(net):
    """The file layout of pt_inception-…pth: torchvision's names, with fc (1008 classes) and batch counters."""
    state = dict(net.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    return state


def test_pytorch_fid_state_dict_round_trip_gives_2048_features(network, tmp_path):
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(pytorch_fid_layout(network), path, _use_new_zipfile_serialization=False)  # as the 2019 file
    extractor = inception_extractor(path)
    assert extractor.dim == 2048 and PREPROCESSING in extractor.description and path.name in extractor.description
    loaded = load_inception(path).network
    for name, tensor in network.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    grey = torch.rand(1, 1, 8, 8) * 2 - 1  # grey, 8×8: replicated to RGB and resized to 299×299
    features = extractor(grey)
    assert features.shape == (1, 2048) and features.dtype.name == "float64"
    with torch.no_grad():
        direct = network((preprocess(grey) - 128) / 128)
    assert torch.allclose(torch.from_numpy(features).float(), direct, rtol=1e-5, atol=1e-6)


def test_pytorch_fid_wrapper_layout_is_mapped(network, tmp_path):
    state = {}
    for key, value in network.state_dict().items():
        module, rest = key.split(".", 1)
        block = next(b for b, names in enumerate(WRAPPER_NAMES) if module in names)
        state[f"blocks.{block}.{WRAPPER_NAMES[block].index(module)}.{rest}"] = value
    fresh = InceptionV3Features()
    load_state_dict_checked(fresh, standard_state_dict(state, tmp_path / "x.pth"), tmp_path / "x.pth")
    assert torch.equal(fresh.Mixed_7c.branch_pool.bn.running_var, network.Mixed_7c.branch_pool.bn.running_var)


class TinyDetector(nn.Module):
    """Stands in for NVIDIA's TorchScript Inception: forward(img in [0, 255], return_features) and .layers."""

    def __init__(self, dim=2048):
        super().__init__()
        self.layers = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, dim))

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return self.layers((img - 128) / 128)


def test_torchscript_round_trip(tmp_path):
    detector = TinyDetector().eval()
    path = tmp_path / "inception-2015-12-05.pt"
    torch.jit.save(torch.jit.script(detector), str(path))
    with pytest.raises(CheckpointError, match=r"TorchScript, a program rather than weights: .*--allow-torchscript"):
        load_inception(path)  # TorchScript is code: it runs only when the user opts in
    extractor = load_inception(path, allow_torchscript=True)
    assert "TorchScript" in extractor.description and PREPROCESSING in extractor.description
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = detector.layers((preprocess(images) - 128) / 128)
    assert torch.allclose(extractor(images), expected, atol=1e-5)


KINDS = ["missing", "text", "random state dict", "torchvision", "list", "torchscript", "torchscript 5-d"]


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_files_are_refused_with_one_line(kind, tmp_path):
    path = tmp_path / "weights.pth"
    if kind == "text":
        path.write_text("these are not weights\n")
    elif kind == "random state dict":
        torch.save({"encoder.weight": torch.zeros(3, 3)}, path)
    elif kind == "torchvision":
        torch.save({"AuxLogits.fc.weight": torch.zeros(1000, 768), "Conv2d_1a_3x3.conv.weight": torch.zeros(1)}, path)
    elif kind == "list":
        torch.save([torch.zeros(2)], path)
    elif kind == "torchscript":  # a TorchScript model whose outputs are not 2048-d features
        torch.jit.save(torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(3 * 299 * 299, 5))), str(path))
    elif kind == "torchscript 5-d":
        torch.jit.save(torch.jit.script(TinyDetector(dim=5)), str(path))
    expected = {
        "missing": "not found; download one of .*github.com/mseitzer/pytorch-fid/releases",
        "text": "not a PyTorch weights file",
        "random state dict": "not an FID Inception-v3 state dict .*e.g. 'encoder.weight' is unknown",
        "torchvision": "torchvision's ImageNet Inception-v3",
        "list": "holds a list, not a state dict",
        "torchscript": "TorchScript but neither has .layers nor takes return_features",
        "torchscript 5-d": r"gives features of shape \(1, 5\), not \(N, 2048\)",
    }[kind]
    with pytest.raises(CheckpointError, match=expected) as error:
        load_inception(path, allow_torchscript=True)
    assert "\n" not in str(error.value)
