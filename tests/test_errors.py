"""One error tree (`copgen_rt.errors`): every class carries the exit code docs/cli.md documents, the
built-ins that mean the same map to the same codes, and every message is one line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from copgen_rt import errors

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _documented_codes() -> dict[int, str]:
    text = DOCS.read_text()
    table = text[text.index("## Exit codes"):]
    return {int(code): meaning for code, meaning in re.findall(r"^\| (\d+) \| (.+?) \|$", table, re.M)}


@pytest.mark.parametrize("error, code, words", [
    (errors.InputError, 3, "bad input"),
    (errors.SceneError, 3, "bad input"),
    (errors.MaskError, 3, "bad input"),
    (errors.CheckpointError, 4, "checkpoint"),
    (errors.OutputExistsError, 5, "output exists"),
    (errors.MissingDependencyError, 6, "optional package is missing"),
    (errors.ExportError, 7, "export failed"),
    (errors.TensorRTIncompatible, 7, "export failed"),
    (errors.OutputWriteError, 9, "cannot be written"),
    (errors.OutputBusyError, 10, "another run"),
])
def test_every_class_carries_its_documented_exit_code(error, code, words):
    assert issubclass(error, errors.CopgenError) and error.exit_code == code
    assert errors.exit_code(error("x")) == code
    assert words in _documented_codes()[code]


def test_the_codes_of_the_module_are_the_documented_ones():
    constants = {v for k, v in vars(errors).items() if k.startswith("EXIT_")}
    assert constants <= set(_documented_codes())
    assert errors.EXIT_SCENES_FAILED == 8 and "at least one failed" in _documented_codes()[8]


@pytest.mark.parametrize("error, code", [
    (ValueError("v"), 3), (KeyError("k"), 3), (FileNotFoundError("f"), 3), (PermissionError("p"), 3),
    (FileExistsError("e"), 5), (ImportError("i"), 6), (RuntimeError("r"), 1), (MemoryError(), 9),
    (OSError(36, "File name too long"), 9), (RuntimeError("std::bad_alloc"), 9),
])
def test_built_ins_map_to_the_codes_of_what_they_mean(error, code):
    assert errors.exit_code(error) == code


def test_one_line_and_the_command_line_report():
    # ours whole, on one line: a newline (of a path, say) escaped, never a second line
    assert errors.one_line(errors.SceneError("a\nb.tif: no CRS")) == "a\\nb.tif: no CRS"
    assert errors.one_line(KeyError("S9")) == "S9"  # a KeyError's key, unquoted
    assert errors.command_line_report(ValueError("bad --overlap")) == (3, "bad --overlap")
    code, line = errors.command_line_report(MemoryError())
    assert code == 9 and line.startswith("out of memory")
    code, line = errors.command_line_report(RuntimeError("boom\ntraceback"))
    assert code == 1 and line == "internal error: RuntimeError: boom (set COPGEN_RT_DEBUG=1 for a traceback)"
    assert errors.first_line(RuntimeError("x" * 500)) == "x" * errors.ONE_LINE_LIMIT
