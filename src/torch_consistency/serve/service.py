"""What `cm serve` does with a request, without HTTP: sample and edit through `Model`, read the run's held-out
images, and describe every result by the settings and the `cm sample` / `cm edit` command that reproduce it."""

import base64
import binascii
import dataclasses
import io
import math
import shlex
import time
from typing import Any

import numpy as np
import torch

from ..data import ImageDataset, build_dataset
from ..edit_tasks import EditInputs, check_edit, edit_task
from ..errors import ConfigError, DataError, UserInputError
from ..image_files import png_bytes, read_grey, read_image, read_mask
from ..model import Model
from ..plots import image_grid, to_uint8
from .schemas import MAX_EDIT_STEPS, MAX_IMAGES, MAX_STEPS, EditRequest, GenerateRequest

PNG_PREFIX = "data:image/png;base64,"
EDIT_OUTPUT = "result"  # the --out folder of the reproducing command
SAMPLE_OUTPUT = "samples"


def data_url(png: bytes) -> str:
    return PNG_PREFIX + base64.b64encode(png).decode("ascii")


def decode_png(text: str, name: str) -> bytes:
    """The bytes of a PNG given as a data URL or plain base64; DataError naming `name` otherwise."""
    payload = text.removeprefix(PNG_PREFIX)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise DataError(f"{name}: expected a PNG as a data URL or base64 text") from None
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise DataError(f"{name}: the data is not a PNG file")
    return data


def float_text(value: float) -> str:
    """A float as the shortest text that reads back to the same float (what the command line needs)."""
    return repr(float(value))


@dataclasses.dataclass
class PreparedEdit:
    """A checked edit: its input tensors, the uploaded files (kept for the settings) and its time points."""

    request: EditRequest
    images: torch.Tensor
    mask: torch.Tensor | None
    files: dict[str, bytes]
    sigmas: list[float]


class Service:
    """One loaded model and what the page and the JSON API ask of it."""

    def __init__(self, model: Model, data_path: str | None = None) -> None:
        self.model = model
        self.held_out, self.held_out_reason = self._load_held_out(data_path)
        self.warm_up()

    def warm_up(self) -> None:
        """One sample and one edit before any request, so that torch's one-time set-up (lazy imports of seconds,
        first-call allocations) does not land on the first user."""
        self.model.sample(1)
        if self.editable() is None:
            channels, height, width = self.model.sample_shape
            blank = io.BytesIO(png_bytes(np.zeros((height, width, channels), np.uint8)))
            images = read_image(blank, channels, (height, width), "image", formats=("PNG",))[None]
            labels = 0 if self.model.num_classes else None
            self.model.inpaint(images, torch.zeros(self.model.sample_shape[1:]), steps=1, labels=labels)

    # ------------------------------------------------------------------ the model

    def editable(self) -> str | None:
        """Why the Edit tab is unavailable, or None."""
        if len(self.model.sample_shape) != 3:
            return "this model makes vectors, not images"
        if self.model.parameterization == "denoiser":
            return "a teacher (denoiser) has no one-step edits; serve a consistency model"
        return None

    def info(self) -> dict[str, Any]:
        model, config = self.model, self.model.config
        guidance = model.guidance
        image = len(model.sample_shape) == 3
        tasks = []
        if self.editable() is None:
            tasks = ["inpaint", "stroke", "super-resolve"] + (["colorize"] if model.sample_shape[0] == 3 else [])
        height, width = model.sample_shape[1:] if image else (0, 0)
        return {
            "checkpoint": str(model.checkpoint.resolve()),
            "step": model.step,
            "method": model.method,
            "parameterization": model.parameterization,
            "weights": model.weights,
            "device": str(model.device),
            "sample_shape": list(model.sample_shape),
            "num_classes": model.num_classes,
            "guidance": None
            if guidance is None
            else {
                "default": guidance.default,
                "minimum": guidance.minimum,
                "maximum": None if math.isinf(guidance.maximum) else guidance.maximum,
            },
            "max_steps": MAX_STEPS,
            "searched_sigmas": {"2": config.sampling.sigmas_2 or None, "3": config.sampling.sigmas_3 or None},
            "teacher_steps": config.sampling.teacher_steps if model.parameterization == "denoiser" else None,
            "tasks": tasks,
            "edit_unavailable": self.editable(),
            "max_edit_steps": MAX_EDIT_STEPS,
            "factors": [p for p in range(2, min(height, width) + 1) if height % p == 0 and width % p == 0],
            "held_out": 0 if self.held_out is None else len(self.held_out),
            "held_out_reason": self.held_out_reason,
            "max_images": MAX_IMAGES,
        }

    # ------------------------------------------------------------------ generate

    def generate(self, request: GenerateRequest) -> dict[str, Any]:
        """Samples for `request`, each image as a PNG data URL, with the time the model took."""
        start = time.perf_counter()
        samples = self.model.sample(
            request.num, steps=request.steps, sigmas=request.sigmas, teacher_steps=request.teacher_steps,
            labels=request.label, guidance=request.guidance, seed=request.seed,
        )  # fmt: skip
        model_ms = 1000 * (time.perf_counter() - start)
        labels = None if samples.labels is None else samples.labels.tolist()
        response: dict[str, Any] = {"nfe": samples.nfe, "sigmas": samples.sigmas, "labels": labels}
        response.update(guidance=samples.guidance, model_ms=model_ms)
        if samples.x.ndim == 4:
            response["images"] = [data_url(png_bytes(pixels)) for pixels in to_uint8(samples.x)]
            images = response["images"]
            response["grid"] = images[0] if len(images) == 1 else data_url(png_bytes(image_grid(samples.x)))
        else:
            response["samples"] = samples.x.tolist()
        response["settings"] = self.sample_settings(request, samples.sigmas, labels, samples.guidance, samples.nfe)
        return response

    def sample_settings(
        self, request: GenerateRequest, sigmas: list[float], labels: list[int] | None, w: float | None, nfe: int
    ) -> dict[str, Any]:
        """Everything that made the samples, and the `cm sample` command that writes the same ones."""
        command = ["cm", "sample", *self._checkpoint_options(), "--num", str(request.num), "--seed", str(request.seed)]
        if request.steps is not None:
            command += ["--steps", str(request.steps)]
        if request.sigmas is not None:
            command += ["--sigmas", ",".join(map(float_text, request.sigmas))]
        if request.teacher_steps is not None:
            command += ["--teacher-steps", str(request.teacher_steps)]
        if request.label is not None:
            label = request.label
            command += ["--label", ",".join(map(str, label)) if isinstance(label, list) else str(label)]
        if request.guidance is not None:
            command += ["--guidance", float_text(request.guidance)]
        command += [*self._device_options(), "--out", SAMPLE_OUTPUT]
        return {
            "kind": "sample",
            **self._model_settings(),
            "request": request.model_dump(),
            "used": {"sigmas": sigmas, "labels": labels, "guidance": w, "nfe": nfe},
            "command": shlex.join(command),
            "output": f"{SAMPLE_OUTPUT}/samples.npz: arr_0 holds the images (uint8 N×H×W×C), arr_1 the labels",
        }

    # ------------------------------------------------------------------ edit

    def prepare_edit(self, request: EditRequest) -> PreparedEdit:
        """Decode and check the uploads and the options of an edit before it waits for the model."""
        reason = self.editable()
        if reason is not None:
            raise ConfigError(f"editing: {reason}")
        model, task = self.model, request.task
        channels, height, width = model.sample_shape
        if (request.mask is not None) != (task == "inpaint"):
            raise ConfigError("mask: inpaint needs one and the other tasks take none")
        if (request.factor is not None) != (task == "super-resolve"):
            raise ConfigError("factor: super-resolve needs one and the other tasks take none")
        check_edit(model, task, factor=request.factor)
        files = {"input.png": decode_png(request.image, "image")}
        source = io.BytesIO(files["input.png"])
        if task == "colorize":
            images = read_grey(source, (height, width), "image", formats=("PNG",))
        else:
            factor = request.factor or 1
            images = read_image(source, channels, (height // factor, width // factor), "image", formats=("PNG",))
        mask = None
        if request.mask is not None:
            files["mask.png"] = decode_png(request.mask, "mask")
            mask = read_mask(io.BytesIO(files["mask.png"]), (height, width), "mask", formats=("PNG",))[None, None]
        sigmas = model.edit_sigmas(task, request.steps, request.sigmas)
        return PreparedEdit(request, images[None], mask, files, sigmas)

    def edit(self, prepared: PreparedEdit) -> dict[str, Any]:
        """The edited image as a PNG data URL, with the time the model took and the settings that reproduce it."""
        request, model = prepared.request, self.model
        options: dict[str, Any] = {"sigmas": prepared.sigmas, "seed": request.seed, "labels": request.label}
        options["guidance"] = request.guidance
        start = time.perf_counter()
        inputs = EditInputs(prepared.images, mask=prepared.mask, factor=request.factor)
        out = edit_task(model, request.task, inputs, **options)
        model_ms = 1000 * (time.perf_counter() - start)
        return {
            "image": data_url(png_bytes(to_uint8(out.x)[0])),
            "nfe": out.nfe,
            "sigmas": prepared.sigmas,
            "model_ms": model_ms,
            "settings": self.edit_settings(prepared, out.nfe),
        }

    def edit_settings(self, prepared: PreparedEdit, nfe: int) -> dict[str, Any]:
        """Everything that made the edit, its input files (base64 PNG) and the `cm edit` command that, run in a
        folder holding those files, writes the same image."""
        request = prepared.request
        command = ["cm", "edit", request.task, *self._checkpoint_options(), "--input", "input.png"]
        if request.mask is not None:
            command += ["--mask", "mask.png"]
        if request.factor is not None:
            command += ["--factor", str(request.factor)]
        if request.steps is not None:
            command += ["--steps", str(request.steps)]
        if request.sigmas is not None:
            command += ["--sigmas", ",".join(map(float_text, request.sigmas))]
        command += ["--seed", str(request.seed)]
        if request.label is not None:
            command += ["--label", str(request.label)]
        if request.guidance is not None:
            command += ["--guidance", float_text(request.guidance)]
        command += [*self._device_options(), "--out", EDIT_OUTPUT]
        fields = request.model_dump(exclude={"image", "mask"})
        return {
            "kind": "edit",
            **self._model_settings(),
            "request": fields,
            "used": {"sigmas": prepared.sigmas, "nfe": nfe},
            "files": {name: base64.b64encode(data).decode("ascii") for name, data in prepared.files.items()},
            "command": shlex.join(command),
            "output": f"{EDIT_OUTPUT}/input.png (write the files first: their names are the command's inputs)",
        }

    # ------------------------------------------------------------------ held-out images

    def held_out_image(self, index: int) -> dict[str, Any]:
        if self.held_out is None:
            raise DataError(f"no held-out images: {self.held_out_reason}")
        if not 0 <= index < len(self.held_out):
            raise ConfigError(f"index {index} is out of range: there are {len(self.held_out)} held-out images")
        pixels = self.held_out.images[index].permute(1, 2, 0).numpy()
        label = None if self.held_out.labels is None else int(self.held_out.labels[index])
        return {"index": index, "count": len(self.held_out), "label": label, "image": data_url(png_bytes(pixels))}

    def _load_held_out(self, data_path: str | None) -> tuple[ImageDataset | None, str | None]:
        """The part of the run's data split that training did not see, or None and why."""
        data = self.model.config.data
        if len(self.model.sample_shape) != 3:
            return None, "the model makes vectors"
        if data.holdout_fraction == 0:
            return None, "the run kept no held-out split (data.holdout_fraction = 0): upload images instead"
        other = "holdout" if data.split == "train" else "train"
        try:
            dataset = build_dataset(dataclasses.replace(data, split=other, path=data_path or data.path))
        except UserInputError as error:
            return None, f"the run's data cannot be read ({error}); give its folder with --data"
        if not isinstance(dataset, ImageDataset) or dataset.sample_shape != self.model.sample_shape:
            return None, "the run's data does not match the model's image shape"
        return dataset, None

    # ------------------------------------------------------------------ settings

    def _model_settings(self) -> dict[str, Any]:
        model = self.model
        return {
            "checkpoint": str(model.checkpoint.resolve()),
            "weights": model.weights,
            "device": str(model.device),
            "torch": torch.__version__,
        }

    def _checkpoint_options(self) -> list[str]:
        return ["--checkpoint", str(self.model.checkpoint.resolve()), "--weights", self.model.weights]

    def _device_options(self) -> list[str]:
        return [] if self.model.device.type == "cpu" else ["--device", str(self.model.device)]
