"""`evaluate`: score a checkpoint at several step counts against held-out data (what `cm eval` runs).

Vectors: the MMD at five kernel widths, the exact W2 and, for Gaussian mixtures, mode coverage and the consistency
error against the exact ODE. Images: FD (on classifier or Inception features), KID, precision/recall and, for
class-conditional models, the requested-label rate (run_images.py). Every option is checked against the checkpoint
before any data is read or model trained.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import Checkpoint, load_checkpoint, received_data
from ..errors import ConfigError
from ..files import check_output_folder, write_json_atomic, write_text_atomic
from .options import DEFAULT_CACHE, Evaluation, EvaluationOptions


def evaluate(
    run_or_checkpoint: str | Path,
    out: str | Path | None = None,
    *,
    steps: Sequence[int] = (1, 2, 4),
    teacher_steps: Sequence[int] = (18,),
    num: int | None = None,
    weights: str | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    features: str = "classifier",
    inception_weights: str | Path | None = None,
    allow_torchscript: bool = False,
    cache: str | Path = DEFAULT_CACHE,
    reference_stats: str | Path | None = None,
    guidance: float | None = None,
    search_sigmas: bool = False,
    data_path: str | Path | None = None,
) -> Evaluation:
    """Score the checkpoint (or a run's newest) at `steps` consistency steps (a teacher at `teacher_steps` Karras
    levels) on `num` samples (default 10000) against held-out data, beside the data floor; with `out`, write
    results.json, results.md and pictures there. Images use `features` (classifier: trained once on the labelled
    data and cached in `cache`; inception: `inception_weights`, TorchScript only with `allow_torchscript`) or FD
    against `reference_stats`. `search_sigmas` stores the best 2- and 3-step σ's in the checkpoint first."""
    options = EvaluationOptions(
        run_or_checkpoint, None if out is None else Path(out), tuple(steps), tuple(teacher_steps), num, weights, seed,
        device, features, None if inception_weights is None else Path(inception_weights), allow_torchscript,
        Path(cache), None if reference_stats is None else Path(reference_stats), guidance, search_sigmas,
        None if data_path is None else Path(data_path),
    )  # fmt: skip
    if options.out is not None:
        check_output_folder(options.out, "out")
    checkpoint = load_checkpoint(options.checkpoint)
    check_evaluation_options(options, checkpoint)
    checkpoint.config.data = received_data(checkpoint.config, options.checkpoint, options.data_path)
    if len(checkpoint.sample_shape) == 3:
        from .run_images import run_images

        return run_images(options, checkpoint)
    return run_vectors(options, checkpoint)


def check_evaluation_options(args: EvaluationOptions, checkpoint: Checkpoint) -> None:
    """ConfigError for options that do not fit the checkpoint (checked before any data is read or model trained)."""
    from ..generate import sampling_guidance

    for name, counts, least in (("steps", args.steps, 1), ("teacher_steps", args.teacher_steps, 2)):
        if not counts or any(count < least for count in counts):
            raise ConfigError(f"{name} must be a non-empty list of counts of at least {least}, got {list(counts)}")
    if args.num is not None and args.num < 2:
        raise ConfigError(f"num must be at least 2, got {args.num}")
    if args.features not in ("classifier", "inception"):
        raise ConfigError(f"features must be classifier or inception, got {args.features!r}")
    checkpoint.weight_set(args.weights)
    sampling_guidance(checkpoint.config, checkpoint.parameterization, checkpoint.num_classes, args.guidance)
    if len(checkpoint.sample_shape) != 3:
        image_options = {"--features inception": args.features == "inception", "--inception-weights":
                         args.inception_weights, "--reference-stats": args.reference_stats}  # fmt: skip
        given = [name for name, value in image_options.items() if value]
        if given:
            raise ConfigError(f"{given[0]} applies to image checkpoints; {checkpoint.path} makes vectors")
    else:
        check_output_folder(args.cache, "--cache")
        if args.num is not None and args.num < 4:
            raise ConfigError(f"--num must be at least 4 for images (precision/recall: 3 neighbours), got {args.num}")
    if args.features == "inception" and args.inception_weights is None:
        raise ConfigError("--features inception needs --inception-weights PATH (see cm eval --help)")
    if args.features != "inception" and (args.inception_weights is not None or args.allow_torchscript):
        raise ConfigError("--inception-weights and --allow-torchscript go with --features inception")
    if args.search_sigmas:
        from .timepoints import check_searchable

        check_searchable(checkpoint)


def run_vectors(args: EvaluationOptions, checkpoint: Checkpoint) -> Evaluation:
    from ..data import build_vectors
    from ..plots import save_scatter_grid
    from .evaluate import consistency_error_of, data_floor, evaluate_checkpoint
    from .report import scores_table

    num = args.num or 10_000
    dataset = build_vectors(checkpoint.config.data)
    if args.search_sigmas:
        search_and_store_sigmas(checkpoint, dataset, num, args)
    scores, samples = evaluate_checkpoint(
        checkpoint, dataset, label=checkpoint.config.train.method, steps=args.steps,
        teacher_levels=args.teacher_steps, num_samples=num, seed=args.seed, guidance=args.guidance,
    )  # fmt: skip
    floor = data_floor(dataset, num, args.seed)
    error = consistency_error_of(checkpoint, dataset, num_samples=min(num, 500), seed=args.seed)
    results = {
        "checkpoint": str(checkpoint.path),
        "step": checkpoint.step,
        "num_samples": num,
        "data_floor": floor.to_dict(),
        "scores": [s.to_dict() for s in scores],
        "consistency_error": None if error is None else {"mean": error.mean, **vars(error)},
    }
    text = f"# Evaluation of {checkpoint.path} (step {checkpoint.step})\n\n{scores_table(scores, floor)}\n"
    if error is not None:
        text += f"\nMean consistency error against the exact ODE: {error.mean:.4g}\n"
    if args.out is not None:
        write_json_atomic(args.out / "results.json", results)
        write_text_atomic(args.out / "results.md", text)
        save_scatter_grid({name: x[:2000] for name, x in samples.items()}, args.out / "samples.png")
    return Evaluation(results, text, args.out)


def search_and_store_sigmas(checkpoint: Checkpoint, dataset: Any, num: int, args: EvaluationOptions) -> None:
    """Greedy ternary search of the 2- and 3-step σ's on the signed MMD² of the scores; stored in the checkpoint."""
    from ..checkpoint import store_sampling_sigmas
    from .evaluate import search_metric
    from .timepoints import search_checkpoint_sigmas

    found = search_checkpoint_sigmas(checkpoint, search_metric(dataset, num, args.seed), num, args.seed, args.device)
    store_sampling_sigmas(checkpoint, found)
    print(f"stored in {checkpoint.path}: " + ", ".join(f"{n} steps {v}" for n, v in found.items()))
