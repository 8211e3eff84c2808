"""Re-check the survivors of a `mutmut run` against more test files, the way mutmut itself runs a mutant.

    python docs/results/mutation/recheck.py --modules torch_consistency.training torch_consistency.trigflow -- \
        tests/test_guidance.py tests/test_conditional.py tests/test_training.py \
        -k "not test_eval_reports_the_label_rate_per_step_count"

Run from the repository root after `mutmut run`. mutmut's generated code under mutants/src switches each function to
the mutant named by the environment variable MUTANT_UNDER_TEST; this runs pytest (the fast tests, `-m "not slow"`)
with the given arguments (test files, -k ...) for every surviving mutant with that variable set, and writes
recheck.json beside this file: {mutant: the first test that failed, or null when the mutant survives them too}.

Why: a run checks each mutant only against the test files of `pytest_add_cli_args_test_selection` in
pyproject.toml (the run's time grows with them); tests elsewhere may kill what survived there.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from mutmut.stats import status_by_exit_code
from tqdm import tqdm

HERE = Path(__file__).parent


def survivors(mutants: Path, modules: list[str]) -> list[str]:
    """The mutants of `modules` (dotted prefixes) whose stored result is 'survived' or 'no tests'."""
    names = []
    for meta in sorted(mutants.rglob("*.py.meta")):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if status_by_exit_code[code] in ("survived", "no tests") and name.startswith(tuple(modules)):
                names.append(name)
    return names


def first_failure(mutant: str, pytest_arguments: list[str]) -> str | None:
    """The first test selected by `pytest_arguments` that fails with `mutant` switched on, or None when all pass."""
    environment = {**os.environ, "MUTANT_UNDER_TEST": mutant, "PYTHONPATH": str(Path("mutants/src").resolve())}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-rf", "-m", "not slow", "-p", "no:cacheprovider"]
    result = subprocess.run(
        [*command, *pytest_arguments], cwd="mutants", env=environment, capture_output=True, text=True
    )
    if result.returncode == 5:  # pytest selected no test: the arguments are wrong, the mutant is not killed
        raise SystemExit(f"pytest {' '.join(pytest_arguments)} selects no test")
    failed = [line.split()[1] for line in result.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return failed[0] if failed else None if result.returncode == 0 else f"pytest exit code {result.returncode}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modules", nargs="+", default=["torch_consistency"], help="re-check these modules' survivors")
    parser.add_argument("pytest_arguments", nargs="+", help="after --: test files and pytest options")
    args = parser.parse_args()
    pytest_arguments = args.pytest_arguments
    done = json.loads((HERE / "recheck.json").read_text()) if (HERE / "recheck.json").exists() else {}
    pending = [name for name in survivors(Path("mutants"), args.modules) if name not in done]
    for mutant in tqdm(pending, desc="re-checking survivors"):
        done[mutant] = first_failure(mutant, pytest_arguments)
        (HERE / "recheck.json").write_text(json.dumps(done, indent=1, ensure_ascii=False) + "\n")
    killed = sum(value is not None for value in done.values())
    print(f"{killed} of {len(done)} survivors killed by pytest {' '.join(pytest_arguments)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
