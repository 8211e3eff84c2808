"""The JSON requests of `cm serve`, validated by pydantic: strict types, no unknown fields, bounded sizes."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_IMAGES = 64  # samples per generate request
MAX_STEPS = 4  # consistency sampling steps offered by the page and the API
MAX_EDIT_STEPS = 100
MAX_TEACHER_STEPS = 100
MAX_SIGMAS = 8
MAX_SEED = 2**31 - 1
MAX_IMAGE_CHARS = 1_000_000  # one base64 PNG (≈ 730 kB of file)

Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Sigmas = Annotated[list[Annotated[float, Field(gt=0, allow_inf_nan=False)]], Field(min_length=1, max_length=MAX_SIGMAS)]
Guidance = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
Label = Annotated[int, Field(ge=0)]
PNG = Annotated[str, Field(min_length=1, max_length=MAX_IMAGE_CHARS)]


class Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class GenerateRequest(Request):
    """`num` samples at `steps` (or `sigmas`; teachers: `teacher_steps` levels) from `seed`, of class `label` (a class,
    a list of classes in equal blocks or "all"; default random) at guidance scale `guidance` (default the model's)."""

    num: int = Field(8, ge=1, le=MAX_IMAGES)
    steps: int | None = Field(None, ge=1, le=MAX_STEPS)
    sigmas: Sigmas | None = None
    teacher_steps: int | None = Field(None, ge=1, le=MAX_TEACHER_STEPS)
    seed: Seed = 0
    label: Label | Literal["all"] | Annotated[list[Label], Field(min_length=1, max_length=MAX_IMAGES)] | None = None
    guidance: Guidance | None = None


class EditRequest(Request):
    """`task` on the PNG `image` (a data URL or base64; the model's size, super-resolve: the low-resolution image),
    with the binary PNG `mask` (inpaint, white = generate) or `factor` (super-resolve), at `steps` or `sigmas`
    (default: the task's), from `seed`, for class `label` and guidance scale `guidance`."""

    task: Literal["inpaint", "stroke", "super-resolve", "colorize"]
    image: PNG
    mask: PNG | None = None
    factor: int | None = Field(None, ge=2, le=64)
    steps: int | None = Field(None, ge=1, le=MAX_EDIT_STEPS)
    sigmas: Sigmas | None = None
    seed: Seed = 0
    label: Label | None = None
    guidance: Guidance | None = None
