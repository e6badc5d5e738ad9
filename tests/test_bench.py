from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from copgen_rt import bench, specs

ROOT = Path(__file__).resolve().parents[1]


def test_flop_count_matches_the_reference_measurement():
    # ../reference/cpu-speed.md: base 535.7 GFLOP, mid 38.2 GFLOP per sample per call
    assert bench.denoiser_flops(specs.get("copgen-base")) / 1e9 == pytest.approx(535.7, rel=1e-3)
    assert bench.denoiser_flops(bench.mid_spec()) / 1e9 == pytest.approx(38.2, rel=1e-3)


def test_quick_bench_writes_reports(tmp_path, monkeypatch):
    """The quick bench (the smallest run of every section: matmul peak, each denoiser variant,
    presets at batch 1, scenes of 1 and 4 tiles in subprocesses) fills every field of the JSON
    report and writes the table and the chart, and leaves none of its scratch folders behind."""
    import tempfile

    scratch = tmp_path / "tmp"  # its own temporary folder: other tests run beside it (xdist)
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # its subprocesses'
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    out = tmp_path / "out"
    out.mkdir()
    results = bench.run(out, device="cpu", quick=True, log=lambda line: None)
    assert not list(scratch.glob("copgen-*"))
    stem = next(out.glob("bench-*.json"))
    data = json.loads(stem.read_text())
    gemm = data["gemm"]
    assert {"torch", "numpy"} <= set(gemm["rates"]["fp32"]) and set(gemm["rates"]["fp32"]["numpy"]) == set(
        gemm["shapes"]
    )
    # the limit of a precision is the best engine at the best shape, whichever library that is
    for precision, engines in gemm["rates"].items():
        assert gemm["limits"][precision] == max(max(r.values()) for r in engines.values()) > 0
    variants = {r["variant"] for r in data["denoiser"]}
    assert {"torch-fp32", "onnxruntime-fp32", "eager-reference", "eager-reference-fp32"} <= variants
    assert all(r["ms"] > 0 and r["fraction_of_limit"] > 0 for r in data["denoiser"])
    assert all(r["rel_err_vs_fp32"] < 1e-4 for r in data["denoiser"] if r["precision"] == "fp32")
    presets = {(r["engine"], r["preset"]): r for r in results["presets"]}
    assert presets[("auto", "exact")]["drift_from_exact"] == 0.0
    # speeds are reported, never asserted (a busy machine decides them); the draft preset's result
    # differs from the exact one's, which is what its speed is traded for
    assert "speedup_vs_auto_exact" in presets[("auto", "draft")]
    assert presets[("auto", "draft")]["drift_from_exact"] > 0
    assert {r["engine"] for r in results["scenes"]} == {"auto", "eager-reference"}
    assert all(0 < r["network_share"] <= 1 for r in results["scenes"])
    assert data["targets"] and all(isinstance(t["met"], bool) for t in data["targets"])
    assert "load average" in data["load_before"]
    assert stem.with_suffix(".md").exists() and stem.with_suffix(".svg").read_text().startswith("<svg")


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "benchmarks").glob("*.py")))
def test_every_benchmark_script_imports(script):
    """The scripts under benchmarks/ run rarely (some only on a GPU or another CPU kind): a moved
    module must not break them unnoticed."""
    path = ROOT / "benchmarks" / script
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


@pytest.mark.parametrize("name, flags, tag", [
    ("Intel(R) Xeon(R) Processor", {"avx512f", "amx_bf16"}, "intel-xeon-amx"),
    ("Intel(R) Xeon(R) Platinum 8480+", {"avx512f"}, "intel-xeon"),
    ("AMD EPYC 9B45 128-Core Processor", {"avx512_bf16"}, "amd-epyc"),
    ("", set(), "cpu"),
])
def test_results_are_named_by_cpu_kind(monkeypatch, name, flags, tag):
    import importlib

    environment = importlib.import_module("copgen_rt.bench.environment")
    monkeypatch.setattr(environment, "cpu_name", lambda: name)
    monkeypatch.setattr(environment, "cpu_flags", lambda: flags)
    assert environment.cpu_tag() == tag
