"""The README's Python examples run as written (blocks marked as needing real weights only compile)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"
NEEDS_REAL_WEIGHTS = "# needs real weights"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def test_readme_python_blocks_run_as_written(tmp_path, monkeypatch):
    """Every unmarked block runs, in README order and one namespace, on the bundled demo model
    and chip (its own asserts check the output shapes); marked blocks must at least compile."""
    blocks = python_blocks(README.read_text())
    runnable = [b for b in blocks if not b.startswith(NEEDS_REAL_WEIGHTS)]
    assert runnable, "the README has no runnable Python example"
    monkeypatch.chdir(tmp_path)  # whatever an example writes lands here
    namespace: dict = {"__name__": "__readme__"}
    for i, block in enumerate(blocks):
        code = compile(block, f"README.md python block {i + 1}", "exec")
        if block in runnable:
            exec(code, namespace)  # noqa: S102 - the README's own examples
