"""Summarise a finished `mutmut run` (make mutation) per module: writes summary.json beside this file and prints the
Markdown table of README.md. Run from the repository root, after `mutmut run` (and recheck.py), with mutmut installed.

Each mutant's result is the exit code mutmut stored in mutants/<source>.meta; mutmut's own table names it. A survivor
that recheck.py found killed by a test outside the run's selection counts as killed by a re-check (recheck.json).
survivors.toml gives every remaining survivor a kind, `equivalent` (no test can tell it from the code on this
machine) or `left` (a gap in the tests), and the reason; a survivor without one is listed as unexplained.
"""

import json
import sys
import tomllib
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

HERE = Path(__file__).parent
STATUSES = ("killed", "survived", "timeout", "no tests", "suspicious", "segfault", "skipped", "not checked")


def module_results(mutants: Path) -> dict[str, dict]:
    """{module: {status counts, checked, survivors: [mutant names]}} from mutmut's .meta files."""
    results = {}
    for meta in sorted(mutants.rglob("*.py.meta")):
        source = meta.relative_to(mutants).with_suffix("")  # src/torch_consistency/x.py
        module = ".".join(source.with_suffix("").parts[1:])
        exit_codes = json.loads(meta.read_text())["exit_code_by_key"]
        if not exit_codes:
            continue
        statuses = {name: status_by_exit_code[code] for name, code in exit_codes.items()}
        counts = Counter(statuses.values())
        results[module] = {
            "mutants": len(statuses),
            **{status: counts.get(status, 0) for status in STATUSES},
            "checked": len(statuses) - counts["not checked"],
            "survivors": sorted(name for name, s in statuses.items() if s in ("survived", "no tests")),
        }
    return results


def explained(results: dict[str, dict], rechecked: dict[str, str | None], reasons: dict[str, str]) -> None:
    """Adds to each module: killed by a re-check, equivalent, left, unexplained (survivor names)."""
    for r in results.values():
        alive = [name for name in r["survivors"] if rechecked.get(name) is None]
        r["killed_by_recheck"] = len(r["survivors"]) - len(alive)
        r["equivalent"] = sum(reasons.get(name) == "equivalent" for name in alive)
        r["left"] = sum(reasons.get(name) == "left" for name in alive)
        r["unexplained"] = [name for name in alive if name not in reasons]
        killed = r["killed"] + r["timeout"] + r["killed_by_recheck"]
        r["killed_percent_of_non_equivalent"] = round(100 * killed / max(1, r["checked"] - r["equivalent"]), 1)


def survivor_kinds(path: Path) -> dict[str, str]:
    """{mutant: 'equivalent' | 'left'} from survivors.toml's groups."""
    if not path.exists():
        return {}
    return {name: group["kind"] for group in tomllib.loads(path.read_text())["group"] for name in group["mutants"]}


def percent_of(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "–"


def main() -> int:
    results = module_results(Path("mutants"))
    if not results:
        print("no mutmut results under mutants/: run `mutmut run` first", file=sys.stderr)
        return 1
    recheck = HERE / "recheck.json"
    explained(
        results, json.loads(recheck.read_text()) if recheck.exists() else {}, survivor_kinds(HERE / "survivors.toml")
    )
    (HERE / "summary.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    columns = ("mutants", "checked", "killed", "timeout", "killed_by_recheck", "equivalent", "left")
    print("| module | mutants | checked | killed | timeout | killed by a re-check | equivalent | left | unexplained "
          "| killed, of non-equivalent |")  # fmt: skip
    print("|---|" + "---:|" * 9)
    totals = Counter()
    for module, r in results.items():
        killed = r["killed"] + r["timeout"] + r["killed_by_recheck"]
        cells = " | ".join(str(r[c]) for c in columns)
        print(
            f"| {module} | {cells} | {len(r['unexplained'])} | {percent_of(killed, r['checked'] - r['equivalent'])} |"
        )
        totals.update({c: r[c] for c in columns})
        totals["unexplained"] += len(r["unexplained"])
    killed = totals["killed"] + totals["timeout"] + totals["killed_by_recheck"]
    cells = " | ".join(str(totals[c]) for c in columns)
    print(f"| **all** | {cells} | {totals['unexplained']} | "
          f"{percent_of(killed, totals['checked'] - totals['equivalent'])} |")  # fmt: skip
    for r in results.values():
        for name in r["unexplained"]:
            print(f"unexplained survivor: {name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
