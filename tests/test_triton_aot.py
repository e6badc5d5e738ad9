"""A Triton kernel compiled ahead of time for Jetson Orin (sm_87), no GPU needed: CI notices a kernel
that stops compiling, and a config the sm_87 autotune list keeps that spills registers there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="Triton is not installed (pip install 'copgen-rt[gpu]')")

ROOT = Path(__file__).resolve().parents[1]


def test_attention_compiles_for_jetson_orin_without_spills(tmp_path):
    # a fresh process: tests/test_kernels.py binds the kernels to Triton's CPU interpreter, which
    # cannot compile for a GPU target
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    args = ["--models", "copgen-base", "--targets", "87", "--dtypes", "bf16", "--kernels", "attention",
            "--configs", "M64 N32 w4 s2", "--out", str(tmp_path / "aot")]
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "triton_aot.py"), *args],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads((tmp_path / "aot.json").read_text())["rows"]
    assert row["compiled"], row["error"]
    assert row["in_autotune_list"] and row["verdict"] == "ok", row  # kept on sm_87, so it must fit
    assert 0 < row["registers"] <= 255 and row["shared_bytes"] > 0 and 0 < row["occupancy"] <= 1
