"""Summarise a finished `mutmut run` (make mutation) per module: writes summary.json beside this file and prints the
Markdown table of README.md. Run from the repository root, after `mutmut run`, with mutmut installed.

Each mutant's result is the exit code mutmut stored in mutants/<source>.meta; mutmut's own table names it.
"""

import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

HERE = Path(__file__).parent
STATUSES = ("killed", "survived", "timeout", "no tests", "suspicious", "segfault", "skipped", "not checked")


def module_results(mutants: Path) -> dict[str, dict]:
    """{module: {status counts, killed_percent, survivors: [mutant names]}} from mutmut's .meta files."""
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
            "killed_percent": round(100 * (counts["killed"] + counts["timeout"]) / len(statuses), 1),
            "checked": len(statuses) - counts["not checked"],
            "survivors": sorted(name for name, status in statuses.items() if status != "killed"),
        }
    return results


def percent_of(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "–"


def main() -> int:
    results = module_results(Path("mutants"))
    if not results:
        print("no mutmut results under mutants/: run `mutmut run` first", file=sys.stderr)
        return 1
    (HERE / "summary.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    print("| module | mutants | checked | killed | timeout | survived | other | killed or timed out, of checked |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    totals = Counter()
    for module, r in results.items():
        other = r["checked"] - r["killed"] - r["timeout"] - r["survived"]
        print(f"| {module} | {r['mutants']} | {r['checked']} | {r['killed']} | {r['timeout']} | {r['survived']} | "
              f"{other} | {percent_of(r['killed'] + r['timeout'], r['checked'])} |")  # fmt: skip
        totals.update({key: r[key] for key in ("mutants", "checked", "killed", "timeout", "survived")})
        totals["other"] += other
    killed = percent_of(totals["killed"] + totals["timeout"], totals["checked"])
    print(f"| **all** | {totals['mutants']} | {totals['checked']} | {totals['killed']} | {totals['timeout']} | "
          f"{totals['survived']} | {totals['other']} | {killed} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
