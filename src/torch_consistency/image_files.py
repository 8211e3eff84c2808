"""Image files ↔ tensors for editing: PNGs read as (C, H, W) in [-1, 1] (`cm edit` from files, `cm serve` from
uploads, both through these functions so that they see the same pixels) and uint8 arrays encoded as PNG."""

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image

from .errors import DataError, first_line

Source = str | Path | BinaryIO
# PIL picks a decoder by a file's content, not its name; these are the only ones it may use. (Its EPS decoder,
# for one, runs Ghostscript on the file.)
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")


def read_pixels(
    source: Source, mode: str, name: str, size: tuple[int, int] | None = None, formats: tuple[str, ...] = IMAGE_FORMATS
) -> np.ndarray:
    """uint8 H×W (mode L) or H×W×3 (mode RGB), decoded only by a raster format of `formats`. DataError (naming
    `name`) for unreadable files, 16-bit or float images and, when `size` (H, W) is given, another size: checked
    from the header, before any pixel is decoded."""
    try:
        with Image.open(source, formats=formats) as image:
            if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                raise DataError(f"{name} has {image.mode} pixels; give 8-bit grey or RGB images")
            if size is not None and (image.height, image.width) != tuple(size):
                raise DataError(f"{name} is {image.height}×{image.width}; expected {size[0]}×{size[1]} images")
            return np.asarray(image.convert(mode))
    except DataError:
        raise
    except Exception as error:  # PIL's decoders raise many kinds of errors on broken files; all mean "unreadable"
        raise DataError(f"{name} is not a readable image: {first_line(error)}") from None


def read_image(source: Source, channels: int, size: tuple[int, int], name: str, **options) -> torch.Tensor:
    """An image as (C, H, W) in [-1, 1], widened from grey to RGB if needed; DataError for colour → grey or size."""
    rgb = read_pixels(source, "RGB", name, size, **options)
    if channels == 1:
        if not (rgb == rgb[..., :1]).all():
            raise DataError(f"{name} is a colour (3-channel) image; the model makes grey (1-channel) images")
        rgb = rgb[..., :1]
    return pixels_to_tensor(rgb)


def read_grey(source: Source, size: tuple[int, int], name: str, **options) -> torch.Tensor:
    """A grey image (1, H, W) in [-1, 1]; colour inputs are converted by PIL's luma (the input of colorization)."""
    return pixels_to_tensor(read_pixels(source, "L", name, size, **options)[..., None])


def read_mask(source: Source, size: tuple[int, int], name: str, **options) -> torch.Tensor:
    """A binary mask (H, W), True = generate, from a PNG holding only 0 and 255 (or only 0 and 1)."""
    pixels = read_pixels(source, "L", name, size, **options)
    values = set(np.unique(pixels).tolist())
    if not (values <= {0, 255} or values <= {0, 1}):
        raise DataError(f"{name} is not binary: it holds values other than 0 and 255 (white = generate)")
    return torch.from_numpy(pixels > 0)


def pixels_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 H×W×C → float (C, H, W) in [-1, 1]."""
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 127.5 - 1


def png_bytes(pixels: np.ndarray) -> bytes:
    """A uint8 H×W×C array (C = 1 or 3) as the bytes of a PNG file."""
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buffer, format="PNG")
    return buffer.getvalue()
