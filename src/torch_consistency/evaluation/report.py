"""Markdown tables of scores."""

from collections.abc import Sequence

from .evaluate import Score


def scores_table(scores: Sequence[Score], floor: Score, reference: Score | None = None) -> str:
    """A markdown table per method and NFE: MMD (with its ratio to `reference`), exact W2
    and, for Gaussian mixtures, the share of samples inside a component and the components covered."""
    mixture = floor.precision is not None
    header, rule = "| method | NFE | MMD |", "|---|---:|---:|"
    if reference is not None:
        header += f" MMD / {reference.label} ({reference.nfe} NFE) |"
        rule += "---:|"
    header += " W2 |"
    rule += "---:|"
    if mixture:
        header += " in a component | components covered |"
        rule += "---:|---:|"
    lines = [header, rule]
    for s in [*scores, floor]:
        row = f"| {s.label} | {s.nfe or '–'} | {s.mmd:.4f} |"
        if reference is not None:
            row += f" {s.mmd / reference.mmd:.2f} |"
        row += f" {s.w2:.4f} |"
        if mixture:
            row += f" {s.precision:.1%} | {s.covered} |"
        lines.append(row)
    return "\n".join(lines)
