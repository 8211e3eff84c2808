"""Markdown tables of scores."""

from collections.abc import Sequence

from .evaluate import Score


def scores_table(scores: Sequence[Score], floor: Score, reference: Score | None = None) -> str:
    """A markdown table of W2 and MMD² per method and NFE, with ratios to `reference` and the data floor."""
    header = "| method | NFE | W2 | MMD² |"
    rule = "|---|---:|---:|---:|"
    if reference is not None:
        header += f" W2 / {reference.label} ({reference.nfe} NFE) |"
        rule += "---:|"
    lines = [header, rule]
    for s in [*scores, floor]:
        row = f"| {s.label} | {s.nfe or '–'} | {s.w2:.4f} | {s.mmd2:.5f} |"
        if reference is not None:
            row += f" {s.w2 / reference.w2:.2f} |"
        lines.append(row)
    return "\n".join(lines)
