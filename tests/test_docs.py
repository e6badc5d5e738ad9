"""The README's and every docs/*.md page's Python examples run as written, also a second time in
the same folder (blocks marked as needing real weights only compile), and every relative link
between those pages points to an existing file and heading."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
NEEDS_REAL_WEIGHTS = "# needs real weights"
FENCE = re.compile(r"^```.*?^```$", flags=re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *$", flags=re.MULTILINE)


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


PAGES_WITH_PYTHON = [page for page in PAGES if python_blocks(page.read_text())]


def run_blocks(page: Path) -> None:
    """Every unmarked block in page order, in one namespace (its own asserts check the outputs);
    marked blocks must at least compile."""
    namespace: dict = {"__name__": f"__{page.stem}__"}
    for i, block in enumerate(python_blocks(page.read_text())):
        code = compile(block, f"{name(page)} python block {i + 1}", "exec")
        if not block.startswith(NEEDS_REAL_WEIGHTS):
            exec(code, namespace)  # noqa: S102 - the page's own examples


def test_the_readme_has_a_runnable_python_example():
    blocks = python_blocks(README.read_text())
    assert [b for b in blocks if not b.startswith(NEEDS_REAL_WEIGHTS)], "no runnable Python example"


@pytest.mark.parametrize("page", PAGES_WITH_PYTHON, ids=name)
def test_python_blocks_run_as_written_twice_in_one_folder(page, tmp_path, monkeypatch):
    """On the bundled demo model and chip, in a fresh folder, then again in the same folder: a
    reader who runs an example twice finds its outputs there (issue 31: "already complete")."""
    monkeypatch.chdir(tmp_path)  # whatever an example writes lands here
    # `copgen-rt` in an example is this checkout's, installed beside the interpreter running the tests
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    run_blocks(page)
    run_blocks(page)


def prose(text: str) -> str:
    """The text outside code blocks and code spans, where links and headings are."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def anchors(page: Path) -> set[str]:
    """The heading anchors GitHub makes: lower case, punctuation dropped, spaces as hyphens,
    repeats numbered."""
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(prose(page.read_text())) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_anchors_follow_githubs_rule():
    page = ROOT / "docs" / "engines.md"
    assert {"amd-epyc-zen-5-issue-18", "export-onnx-tensorrt"} <= anchors(page)
    assert "decisions-on-the-references-quirks-spec-section-10" in anchors(ROOT / "docs" / "api.md")


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_relative_links_point_to_existing_files_and_headings(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (linked.suffix != ".md" or anchor not in anchors(linked)):
            broken.append(f"{target}: no such heading in {name(linked)}")
    assert not broken, f"{name(page)}: {broken}"


def test_every_docs_page_is_linked_from_the_readme_or_another_page():
    linked = {(page.parent / t.partition("#")[0]).resolve() for page in PAGES for t in relative_links(page)
              if t.partition("#")[0]}
    unlinked = [name(page) for page in PAGES[1:] if page.resolve() not in linked]
    assert not unlinked
