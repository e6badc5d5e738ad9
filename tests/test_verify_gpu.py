"""The CPU-side parts of benchmarks/verify_gpu.sh: its wheel list, its time limits, and its Python
running with the GPU parts skipped. (That the wheel list resolves needs PyPI: the `pip download`
command of benchmarks/gpu_wheels.txt, run as docs/gpu.md says.)"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "verify_gpu.sh"
WHEELS = ROOT / "benchmarks" / "gpu_wheels.txt"
# on the lent GPU machine already (torch, numpy, onnx, onnxruntime), or not wanted there (OpenVINO is
# a CPU engine; the hub client only downloads weights, and the machine has no network)
ON_THE_MACHINE = {"torch", "numpy", "onnx", "openvino", "huggingface-hub"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def pinned() -> dict[str, str]:
    lines = [ln.strip() for ln in WHEELS.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    pins = dict(ln.split("==") for ln in lines)
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", n) and v for n, v in pins.items()), lines
    return {_name(n): v for n, v in pins.items()}


def test_wheel_list_covers_what_the_machine_lacks():
    pins = pinned()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = {_name(r) for r in project["dependencies"]} - ON_THE_MACHINE
    assert needed <= set(pins), needed - set(pins)
    assert {"pytest", "pytest-timeout", "affine", "cligj"} <= set(pins)  # the tests; rasterio's own


def test_script_fetches_installs_and_fits_the_time_limit():
    text = SCRIPT.read_text()
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    fetch = "pip download --no-deps --only-binary=:all: --python-version 3.11"
    assert fetch in text and fetch in WHEELS.read_text() and "-r benchmarks/gpu_wheels.txt" in text
    assert "/.whl/" in (ROOT / ".gitignore").read_text().splitlines()
    limits = [int(s) for s in re.findall(r"^step [\w-]+ (\d+) ", text, re.M)]
    assert len(limits) == 3 and sum(limits) <= 440  # < 8 minutes with the GPU's start-up
    assert 'OUT=${OUT:-' in text and "--out \"$OUT\"" in text and "tests/test_gpu.py" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the calls run: verify_gpu.sh does that")
def test_gpu_calls_run_without_a_gpu(tmp_path):
    path = ROOT / "benchmarks" / "gpu_calls.py"
    spec = importlib.util.spec_from_file_location("gpu_calls", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--out", str(tmp_path)]) == 0
    out = json.loads((tmp_path / "gpu-calls.json").read_text())
    assert [(r["engine"], r["precision"]) for r in out["rows"]] == list(module.ENGINES)
    assert all(r["skipped"] == "no CUDA GPU" for r in out["rows"])
    assert "no CUDA GPU" in (tmp_path / "gpu-calls.md").read_text()
