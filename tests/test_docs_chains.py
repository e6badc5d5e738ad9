"""docs/chains.md: its Python examples run as written (blocks that need STAC Items or an openEO
backend only compile)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_docs import python_blocks

PAGE = Path(__file__).parents[1] / "docs" / "chains.md"


def test_chains_page_python_blocks(tmp_path, monkeypatch):
    pytest.importorskip("rioxarray")
    pytest.importorskip("dask")
    blocks = python_blocks(PAGE.read_text())
    runnable = [b for b in blocks if not b.startswith("# needs ")]
    assert runnable and len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__chains__"}
    for i, block in enumerate(blocks):
        code = compile(block, f"docs/chains.md python block {i + 1}", "exec")
        if block in runnable:
            exec(code, namespace)  # noqa: S102 - the page's own examples
    assert (tmp_path / "s1.tif").exists() and (tmp_path / "dem.tif").exists()
