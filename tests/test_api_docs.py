"""docs/api.md: every ```python block runs, in order, in one fresh interpreter (the CD-loop block asserts that the
consistency error against the exact ODE falls during training)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).parents[1] / "docs" / "api.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)


def test_the_blocks_are_found():
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 7 and all(block.strip() for block in blocks)


@pytest.mark.slow
def test_every_example_of_the_api_document_runs(tmp_path):
    script = "\n\n".join(python_blocks(DOC.read_text()))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    before, after = map(float, re.search(r"consistency error ([\d.]+) -> ([\d.]+)", result.stdout).groups())
    assert after < 0.5 * before  # the CD loop on the Gaussian oracle learned the exact consistency function
    assert result.stdout.count("must") + result.stdout.count("mask") >= 2  # the two refusals were printed
