"""Zero-shot editing with a consistency model: paper Algorithm 4 and its tasks (reference.md §7)."""

from .algorithm import (
    DEFAULT_EDIT_STEPS,
    LUMINANCE,
    STROKE_SIGMAS,
    ChannelMixing,
    EditProblem,
    EditResult,
    Identity,
    LinearTransform,
    PatchTransform,
    check_images,
    check_sigmas,
    check_task_fits_model,
    colorization_matrix,
    default_edit_sigmas,
    edit,
    patch_mean_matrix,
)
from .tasks import (
    colorization_problem,
    colorization_reference,
    colorize,
    denoise,
    edit_with_teacher,
    inpaint,
    inpaint_with_teacher,
    inpainting_problem,
    interpolate_images,
    interpolate_noises,
    slerp,
    stroke_guided,
    super_resolution_problem,
    super_resolve,
)

__all__ = [
    "DEFAULT_EDIT_STEPS", "LUMINANCE", "STROKE_SIGMAS", "ChannelMixing", "EditProblem",
    "EditResult", "Identity", "LinearTransform", "PatchTransform", "check_images", "check_sigmas",
    "check_task_fits_model", "colorization_matrix", "colorization_problem", "colorization_reference", "colorize",
    "default_edit_sigmas", "denoise", "edit", "edit_with_teacher", "inpaint", "inpaint_with_teacher",
    "inpainting_problem", "interpolate_images", "interpolate_noises", "patch_mean_matrix", "slerp", "stroke_guided",
    "super_resolution_problem", "super_resolve",
]  # fmt: skip
