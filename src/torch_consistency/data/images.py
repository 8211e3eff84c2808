"""Image datasets held in memory as uint8 (N, C, H, W) and served as float batches in [-1, 1].

Sources: scikit-learn's digits (embedded, 8×8 grey), MNIST IDX files, CIFAR-10 python batches, any folder
of images (recursive; resized and centre-cropped), and `.npz` arrays. Nothing is downloaded, and nothing read
can run code: CIFAR-10's pickles go through an unpickler that builds only plain data and numeric arrays,
.npz files are read without pickles, and images are decoded only by PIL's raster formats (docs/security.md).
"""

import gzip
import io
import math
import pickle
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import DataError, first_line
from ..image_files import read_pixels
from ..seeding import STREAM_DATA, derive_seed, step_generator

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


SPLITS = ("train", "holdout")  # data.split: the images training sees, or those held out (`ImageDataset.split`)


@dataclass
class ImageDataset:
    """Images (uint8, N×C×H×W), optional integer labels, and how to serve them."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor | None = None
    hflip: bool = False
    skipped: int = 0  # unreadable files left out
    _epoch_cache: tuple[int, int, torch.Tensor] | None = field(default=None, repr=False)

    mixture = None  # no exact denoiser

    def __post_init__(self) -> None:
        if len(self.images) == 0:
            raise DataError(f"{self.name}: no images")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if self.labels is not None else 0

    def to_float(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [0, 255] → float32 [-1, 1]."""
        return images.float() / 127.5 - 1.0

    def _permutation(self, seed: int, epoch: int) -> torch.Tensor:
        if self._epoch_cache is None or self._epoch_cache[:2] != (seed, epoch):
            generator = torch.Generator().manual_seed(derive_seed(seed, STREAM_DATA, epoch, 1))
            self._epoch_cache = (seed, epoch, torch.randperm(len(self), generator=generator))
        return self._epoch_cache[2]

    def training_batch(self, step: int, batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The global batch of step `step`: positions step·B … step·B+B−1 of a per-epoch permutation."""
        positions = torch.arange(step * batch_size, (step + 1) * batch_size)
        epochs, offsets = positions // len(self), positions % len(self)
        indices = torch.cat([self._permutation(seed, int(e))[offsets[epochs == e]] for e in epochs.unique()])
        x = self.to_float(self.images[indices])
        if self.hflip:
            flip = torch.rand(batch_size, generator=step_generator(seed, step, STREAM_DATA)) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x, self.labels[indices] if self.labels is not None else None

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images drawn without replacement (float, [-1, 1])."""
        if n > len(self):
            raise DataError(f"{self.name} holds {len(self)} images, {n} were asked for")
        return self.to_float(self.images[torch.randperm(len(self), generator=generator)[:n]])

    def split(self, holdout_fraction: float, part: str) -> "ImageDataset":  # part: one of SPLITS
        """The `train` or `holdout` part of a fixed random split (the same for every run)."""
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(12345))
        cut = len(self) - round(holdout_fraction * len(self))
        chosen = order[:cut] if part == "train" else order[cut:]
        labels = self.labels[chosen] if self.labels is not None else None
        return ImageDataset(f"{self.name}[{part}]", self.images[chosen], labels, self.hflip, self.skipped)


def colored(dataset: ImageDataset, seed: int = 0) -> ImageDataset:
    """Each grey image drawn in its own random, fully saturated colour (hue uniform, seeded): RGB uint8."""
    if dataset.sample_shape[0] != 1:
        raise DataError(f"data.colored needs grey images; {dataset.name} has {dataset.sample_shape[0]} channels")
    generator = torch.Generator().manual_seed(seed)
    hue = torch.rand(len(dataset), generator=generator) * 6
    sector = [(hue - k).remainder(6) for k in (0, 4, 2)]  # HSV → RGB with S = V = 1
    rgb = torch.stack([1 - torch.clamp(torch.minimum(h, 4 - h), 0, 1) for h in sector], dim=1)
    images = (dataset.images.float() * rgb[:, :, None, None]).round().to(torch.uint8)
    return ImageDataset(f"colored-{dataset.name}", images, dataset.labels, dataset.hflip, dataset.skipped)


def load_digits() -> ImageDataset:
    """scikit-learn's 1,797 handwritten digits, 8×8 grey (values 0–16), with labels."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return ImageDataset("digits", torch.from_numpy(images), torch.from_numpy(digits.target).long())


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"cannot read {path}: {error}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated: its header is cut ({len(data)} bytes for {ndim} dimensions)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != math.prod(shape):
        raise DataError(f"{path} is truncated: {body.size} values for shape {shape}")
    return body.reshape(shape)


def load_mnist(path: str | Path) -> ImageDataset:
    """MNIST from IDX files: a folder (train-images… preferred, else t10k-images…) or an images file itself."""
    path = Path(path)
    if path.is_dir():
        candidates = [
            path / f"{prefix}-images-idx3-ubyte{suffix}" for prefix in ("train", "t10k") for suffix in ("", ".gz")
        ]
        found = [c for c in candidates if c.exists()]
        if not found:
            raise DataError(
                f"no MNIST images in {path}: expected train-images-idx3-ubyte[.gz] or t10k-images-idx3-ubyte[.gz] "
                "(from the MNIST distribution)"
            )
        path = found[0]
    elif not path.exists():
        raise DataError(f"MNIST path {path} does not exist")
    images = _read_idx(path)
    if images.ndim != 3:
        raise DataError(f"{path} holds an array of shape {images.shape}, not N×H×W images")
    labels_path = path.with_name(path.name.replace("images-idx3", "labels-idx1"))
    labels = None
    if labels_path.exists():
        label_array = _read_idx(labels_path)
        if label_array.shape != (len(images),):
            raise DataError(f"{labels_path} has {label_array.shape} labels for {len(images)} images")
        labels = torch.from_numpy(label_array.astype(np.int64))
    return ImageDataset("mnist", torch.from_numpy(images.copy())[:, None], labels)


_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy's ndarray rebuilder, wherever this NumPy keeps it


PICKLE_GLOBALS: dict[tuple[str, str], object] = {  # the only names a CIFAR-10 pickle may use
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # as NumPy 1 (and CIFAR-10's files) name it
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # NumPy 2
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _NumericUnpickler(pickle.Unpickler):
    """An unpickler that builds plain data (dicts, lists, tuples, bytes, str, numbers) and numpy arrays of numbers.

    A pickle runs code by naming a callable (a "global") and calling it; this one knows only the numpy globals
    that rebuild an ndarray (PICKLE_GLOBALS), so any other name is refused before anything is called.
    """

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which is not data (refused)")
        return PICKLE_GLOBALS[module, name]

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError("it refers to a persistent object, which is not data (refused)")


PLAIN_TYPES = (dict, list, tuple, bytes, str, int, float, bool, type(None), np.ndarray)


def load_plain_pickle(data: bytes) -> object:
    """Unpickle `data` (Python 2 strings read as bytes) into plain data and numeric arrays only (_NumericUnpickler);
    pickle.UnpicklingError for anything else."""
    value = _NumericUnpickler(io.BytesIO(data), encoding="bytes").load()
    pending = [value]
    while pending:
        item = pending.pop()
        if not isinstance(item, PLAIN_TYPES):
            raise pickle.UnpicklingError(f"it holds a {type(item).__name__}, which is not plain data")
        if isinstance(item, np.ndarray) and (item.dtype.kind not in "biuf" or item.dtype.hasobject):
            raise pickle.UnpicklingError(f"it holds an array of {item.dtype}, not of numbers")
        if isinstance(item, dict):
            pending.extend([*item.keys(), *item.values()])
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
    return value


def _cifar_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) of one CIFAR-10 python batch; DataError if it is not one."""
    try:
        batch = load_plain_pickle(file.read_bytes())
    except OSError as error:
        raise DataError(f"cannot read {file}: {error.strerror}") from None
    except Exception as error:  # a broken pickle raises many kinds of errors; none of them runs code here
        raise DataError(f"{file} is not a CIFAR-10 python batch: {first_line(error)}") from None
    if not isinstance(batch, dict):
        raise DataError(f"{file} is not a CIFAR-10 python batch: it holds a {type(batch).__name__}, not a dict")
    data, labels = batch.get(b"data", batch.get("data")), batch.get(b"labels", batch.get("labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{file} is not a CIFAR-10 python batch: it needs data, a uint8 array of shape (N, 3072)")
    labels = _labels(labels, len(data))
    if labels is None:
        raise DataError(f"{file} is not a CIFAR-10 python batch: it needs labels, a list of {len(data)} integers ≥ 0")
    return data.reshape(-1, 3, 32, 32), labels


def _labels(values: object, count: int) -> np.ndarray | None:
    """`values` as int64 class labels if they are `count` integers in [0, 2³¹) (a list or an array), else None."""
    if isinstance(values, np.ndarray):
        values = values.tolist() if values.dtype.kind in "iu" else None
    if not (isinstance(values, list) and len(values) == count):
        return None
    if not all(type(v) is int and 0 <= v < 2**31 for v in values):
        return None
    return np.array(values, dtype=np.int64)


def load_cifar10(path: str | Path, part: str = "train") -> ImageDataset:
    """CIFAR-10 from its python batches (data_batch_1…5 for train, test_batch for test) in folder `path`."""
    path = Path(path)
    names = [f"data_batch_{i}" for i in range(1, 6)] if part == "train" else ["test_batch"]
    if not path.is_dir():
        raise DataError(f"CIFAR-10 folder {path} does not exist (it holds data_batch_1…5 and test_batch)")
    images, labels = [], []
    for name in names:
        file = path / name
        if not file.exists():
            raise DataError(f"{file} is missing: unpack cifar-10-python.tar.gz into {path}")
        batch_images, batch_labels = _cifar_batch(file)
        images.append(batch_images)
        labels.append(batch_labels)
    return ImageDataset("cifar10", torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)))


def _fit(image: Image.Image, resolution: int) -> Image.Image:
    """Resize the short side to `resolution` (bicubic) and crop the centre square."""
    width, height = image.size
    scale = resolution / min(width, height)
    image = image.resize(
        (max(resolution, round(width * scale)), max(resolution, round(height * scale))), Image.Resampling.BICUBIC
    )
    width, height = image.size
    left, top = (width - resolution) // 2, (height - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution))


def load_image_folder(path: str | Path, resolution: int = 0, channels: int = 3) -> ImageDataset:
    """Every image under `path` (recursive). Unreadable files are skipped and counted.

    With `resolution` > 0 each image is resized and centre-cropped to resolution²; without it all images
    must already share one size. Images are converted to grey (channels = 1) or RGB (channels = 3).
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"image folder {path} does not exist")
    if channels not in (1, 3):
        raise DataError(f"data.channels must be 1 (grey) or 3 (RGB) for an image folder, got {channels}")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"no images in {path} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, recursively)")
    arrays, skipped, sizes = [], 0, set()
    for file in files:
        try:
            image = Image.fromarray(read_pixels(file, "L" if channels == 1 else "RGB", str(file)))
        except DataError:
            skipped += 1
            continue
        if resolution > 0:
            image = _fit(image, resolution)
        sizes.add(image.size)
        array = np.asarray(image, dtype=np.uint8)
        arrays.append(array[None] if channels == 1 else array.transpose(2, 0, 1))
    if not arrays:
        raise DataError(f"none of the {len(files)} image files in {path} could be read")
    if len(sizes) > 1:
        raise DataError(
            f"images in {path} have {len(sizes)} different sizes (e.g. {sorted(sizes)[:2]}); "
            "set data.resolution to resize and centre-crop them"
        )
    return ImageDataset(f"folder:{path.name}", torch.from_numpy(np.stack(arrays)), None, skipped=skipped)


IMAGE_KEYS, LABEL_KEYS = ("images", "arr_0", "x", "samples"), ("labels", "arr_1", "y")


def _read_arrays(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The images and labels arrays of an .npz (or the one array of an .npy), read without unpickling."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):  # an .npy: the array itself
            return loaded, None
        with loaded:
            key = next((k for k in IMAGE_KEYS if k in loaded), None)
            if key is None:
                raise DataError(f"{path} has no array named {', '.join(IMAGE_KEYS)} (it has {list(loaded)})")
            labels = next((loaded[k] for k in LABEL_KEYS if k in loaded), None)
            return loaded[key], labels
    except DataError:
        raise
    except Exception as error:  # numpy and zipfile raise many kinds of errors on broken files; none runs code
        raise DataError(f"{path} is not a readable .npz file: {first_line(error)}") from None


def load_npz(path: str | Path) -> ImageDataset:
    """Images from an `.npz`: uint8 N×H×W×C (openai's layout) or N×C×H×W, or floats in [-1, 1]; labels optional."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"array file {path} does not exist")
    images, labels = _read_arrays(path)
    if images.dtype != np.uint8 and images.dtype.kind != "f":
        raise DataError(f"{path}: images must be uint8 or floats in [-1, 1], not {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or 0 in images.shape:
        raise DataError(f"{path}: expected a batch of images, got an array of shape {images.shape}")
    if images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.transpose(0, 3, 1, 2)  # NHWC → NCHW
    if images.shape[1] not in (1, 3):
        raise DataError(f"{path}: images of shape {images.shape} have neither 1 nor 3 channels (NHWC or NCHW)")
    if images.dtype != np.uint8:
        if not np.isfinite(images).all():
            raise DataError(f"{path}: the images hold NaN or infinite values")
        images = np.clip(np.round((images.astype(np.float64) + 1) * 127.5), 0, 255).astype(np.uint8)
    label_tensor = None
    if labels is not None:
        checked = _labels(labels, len(images))
        if checked is None:
            raise DataError(f"{path}: labels must be {len(images)} integers ≥ 0, got {labels.dtype} {labels.shape}")
        label_tensor = torch.from_numpy(checked)
    return ImageDataset(f"npz:{path.name}", torch.from_numpy(np.ascontiguousarray(images)), label_tensor)
