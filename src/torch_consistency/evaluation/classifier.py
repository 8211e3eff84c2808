"""A small CNN classifier whose penultimate features measure image samples where Inception does not fit (§14).

The Fréchet distance on these features is not FID: it is only comparable between runs that use the same
classifier (same training images, labels and settings), which the cache key below pins down.

    python -m torch_consistency.evaluation.classifier --mnist ../shared/data/mnist --cache runs/cache
"""

import argparse
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..data.images import ImageDataset
from ..errors import DataError, UserInputError
from ..files import atomic_path, write_json_atomic
from ..seeding import STREAM_INIT, derive_seed

CACHE_FORMAT = "torch-consistency-classifier-1"


@dataclass(frozen=True)
class ClassifierSettings:
    """How the classifier is built and trained; all of it enters the cache key."""

    epochs: int = 0  # 0: ⌈200,000 / training images⌉, clipped to 3…30
    batch_size: int = 128
    learning_rate: float = 2e-3
    width: int = 32  # channels of the first block; the features have 4 × width dimensions
    augment: bool = True  # random rotations (±10°), scalings (±10 %) and shifts (±H/14 pixels)
    holdout_fraction: float = 0.1  # held-out share when no separate test set is given
    seed: int = 0

    def resolved_epochs(self, num_train: int) -> int:
        return self.epochs or min(30, max(3, math.ceil(200_000 / num_train)))


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class ImageClassifier(nn.Module):
    """conv-BN-ReLU blocks (w, pool, 2w, 2w, pool, 4w), global average pool → 4w features → linear logits."""

    def __init__(self, channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.channels, self.num_classes, self.width = channels, num_classes, width
        self.body = nn.Sequential(
            *_block(channels, width), nn.MaxPool2d(2),
            *_block(width, 2 * width), *_block(2 * width, 2 * width), nn.MaxPool2d(2),
            *_block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(4 * width, num_classes)

    @property
    def feature_dim(self) -> int:
        return 4 * self.width

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, 4w) of images in [-1, 1]."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def as_float_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float [-1, 1]; float images pass unchanged."""
    return images.float() / 127.5 - 1.0 if images.dtype == torch.uint8 else images.float()


def random_affine(
    x: torch.Tensor, generator: torch.Generator, degrees: float = 10.0, scale: float = 0.1
) -> torch.Tensor:
    """x ∘ A for random rotations, scalings and shifts (±H/14 pixels), with black (−1) filling the border."""
    n, _, h, w = x.shape
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(degrees)
    factor = 1 + (torch.rand(n, generator=generator) * 2 - 1) * scale
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * max(1, round(h / 14)) * 2 / torch.tensor([w, h])
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x + 1, grid, align_corners=False) - 1


@torch.no_grad()
def classifier_features(model: ImageClassifier, images: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """Penultimate features (N, 4w) of images (uint8 or [-1, 1]), in float64."""
    model.eval()
    parts = [model.features(as_float_images(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    return torch.cat(parts).double().numpy()


@torch.no_grad()
def accuracy(model: ImageClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512) -> float:
    """Share of images whose arg-max logit is the label."""
    model.eval()
    correct = sum(
        int((model(as_float_images(images[i : i + batch_size])).argmax(1) == labels[i : i + batch_size]).sum())
        for i in range(0, len(images), batch_size)
    )
    return correct / len(images)


def _train_test(dataset: ImageDataset, settings: ClassifierSettings, test: ImageDataset | None):
    if dataset.labels is None or (test is not None and test.labels is None):
        raise DataError(f"{dataset.name}: the classifier needs labelled images")
    if min(dataset.images.shape[-2:]) < 8:
        raise DataError(f"{dataset.name}: the classifier needs images of at least 8×8, got {dataset.sample_shape}")
    if test is None:
        return dataset.split(settings.holdout_fraction, "train"), dataset.split(settings.holdout_fraction, "holdout")
    return dataset, test


def train_classifier(
    dataset: ImageDataset, settings: ClassifierSettings = ClassifierSettings(), test: ImageDataset | None = None,
    progress: bool = False,
) -> tuple[ImageClassifier, float]:  # fmt: skip
    """Adam with a cosine-decayed learning rate and cross-entropy; returns the model and its held-out accuracy."""
    train, test = _train_test(dataset, settings, test)
    epochs = settings.resolved_epochs(len(train))
    steps_per_epoch = math.ceil(len(train) / settings.batch_size)
    total = epochs * steps_per_epoch
    warmup = max(1, min(100, total // 10))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(settings.seed, STREAM_INIT))
        model = ImageClassifier(dataset.images.shape[1], max(dataset.num_classes, test.num_classes), settings.width)
    generator = torch.Generator().manual_seed(derive_seed(settings.seed, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / total))
    )
    start = time.time()
    for epoch in range(epochs):
        model.train()
        losses = []
        order = torch.randperm(len(train), generator=generator)
        for i in range(0, len(train), settings.batch_size):
            indices = order[i : i + settings.batch_size]
            x = as_float_images(train.images[indices])
            if settings.augment:
                x = random_affine(x, generator)
            loss = F.cross_entropy(model(x), train.labels[indices])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        if progress:
            print(f"epoch {epoch + 1}/{epochs}: mean loss {np.mean(losses):.4f}, {time.time() - start:.0f} s",
                  file=sys.stderr)  # fmt: skip
    assert test.labels is not None  # the classifier trains on labelled data
    return model.eval(), accuracy(model, test.images, test.labels)


def classifier_cache_key(
    dataset: ImageDataset, settings: ClassifierSettings, test: ImageDataset | None = None
) -> str:  # fmt: skip
    """SHA-256 of the training images and labels (and test set, if any), their shapes and the settings."""
    digest = hashlib.sha256(CACHE_FORMAT.encode())
    for part in (dataset, test) if test is not None else (dataset,):
        digest.update(repr((tuple(part.images.shape), str(part.images.dtype))).encode())
        digest.update(part.images.contiguous().numpy().tobytes())
        if part.labels is not None:
            digest.update(part.labels.to(torch.int64).contiguous().numpy().tobytes())
    digest.update(json.dumps(asdict(settings), sort_keys=True).encode())
    return digest.hexdigest()


@dataclass
class TrainedClassifier:
    """A classifier with its held-out accuracy and cache key; `trained` is False when it came from the cache."""

    model: ImageClassifier
    accuracy: float
    key: str
    weights_path: Path | None
    trained: bool

    @property
    def description(self) -> str:
        return (f"classifier {self.key[:12]} ({self.model.feature_dim}-d penultimate features, "
                f"held-out accuracy {self.accuracy:.4f}, input at native size)")  # fmt: skip


def _read_cache(weights: Path, meta: Path, key: str) -> TrainedClassifier | None:
    try:
        info = json.loads(meta.read_text())
        if info.get("format") != CACHE_FORMAT or info.get("key") != key:
            return None
        model = ImageClassifier(info["channels"], info["num_classes"], info["settings"]["width"])
        model.load_state_dict(load_file(weights))
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, SafetensorError):
        return None  # an unreadable or foreign entry is retrained and replaced
    return TrainedClassifier(model.eval(), float(info["accuracy"]), key, weights, False)


def load_or_train_classifier(
    dataset: ImageDataset, cache_dir: str | Path, settings: ClassifierSettings = ClassifierSettings(),
    test: ImageDataset | None = None, progress: bool = False,
) -> TrainedClassifier:  # fmt: skip
    """The cached classifier for (images, labels, settings), else a newly trained one, stored atomically."""
    key = classifier_cache_key(dataset, settings, test)
    stem = Path(cache_dir) / f"classifier-{key[:16]}"
    weights, meta = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    if weights.exists() and meta.exists():
        cached = _read_cache(weights, meta, key)
        if cached is not None:
            return cached
    start = time.time()
    model, test_accuracy = train_classifier(dataset, settings, test, progress)
    with atomic_path(weights) as temporary:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(temporary))
    train, held_out = _train_test(dataset, settings, test)
    write_json_atomic(meta, {
        "format": CACHE_FORMAT, "key": key, "settings": asdict(settings), "accuracy": test_accuracy,
        "epochs": settings.resolved_epochs(len(train)), "channels": model.channels, "num_classes": model.num_classes,
        "train": {"name": train.name, "count": len(train)}, "test": {"name": held_out.name, "count": len(held_out)},
        "seconds": round(time.time() - start, 1),
    })  # fmt: skip
    return TrainedClassifier(model, test_accuracy, key, weights, True)


def _mnist_parts(folder: Path) -> tuple[ImageDataset, ImageDataset | None]:
    """MNIST's train and t10k files when both are there; otherwise the one present (split for testing)."""
    from ..data.images import load_mnist

    train_files = [folder / f"train-images-idx3-ubyte{s}" for s in ("", ".gz")]
    test_files = [folder / f"t10k-images-idx3-ubyte{s}" for s in ("", ".gz")]
    train = next((f for f in train_files if f.exists()), None)
    test = next((f for f in test_files if f.exists()), None)
    if train is not None and test is not None:
        return load_mnist(train), load_mnist(test)
    return load_mnist(folder), None


def main(argv: list[str] | None = None) -> int:
    """Train (or load from the cache) the classifier on MNIST or scikit-learn digits and print its test accuracy."""
    parser = argparse.ArgumentParser(prog="python -m torch_consistency.evaluation.classifier", description=main.__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--mnist", type=Path, help="folder with MNIST IDX files (train-… and/or t10k-…)")
    source.add_argument("--digits", action="store_true", help="scikit-learn's 8×8 digits")
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"), help="folder of cached classifiers")
    defaults = ClassifierSettings()
    for name in ("epochs", "batch_size", "width", "seed"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    settings = ClassifierSettings(args.epochs, args.batch_size, args.learning_rate, args.width,
                                  not args.no_augment, defaults.holdout_fraction, args.seed)  # fmt: skip
    try:
        if args.digits:
            from ..data.images import load_digits

            dataset, test = load_digits(), None
        else:
            dataset, test = _mnist_parts(args.mnist)
        result = load_or_train_classifier(dataset, args.cache, settings, test, progress=True)
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    train, held_out = _train_test(dataset, settings, test)
    origin = "newly trained" if result.trained else "from the cache"
    print(f"test accuracy {result.accuracy:.4f} on {len(held_out)} held-out images ({held_out.name}); "
          f"trained on {len(train)} ({train.name}); {origin}: {result.weights_path}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
