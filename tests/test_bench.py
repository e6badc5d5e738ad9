from __future__ import annotations

import json

import pytest

from copgen_rt import bench, specs


def test_flop_count_matches_the_reference_measurement():
    # ../reference/cpu-speed.md: base 535.7 GFLOP, mid 38.2 GFLOP per sample per call
    assert bench.denoiser_flops(specs.get("copgen-base")) / 1e9 == pytest.approx(535.7, rel=1e-3)
    assert bench.denoiser_flops(bench.mid_spec()) / 1e9 == pytest.approx(38.2, rel=1e-3)


def test_quick_bench_writes_reports(tmp_path):
    """The quick bench (the smallest run of every section: matmul peak, each denoiser variant,
    presets at batch 1, scenes of 1 and 4 tiles in subprocesses) fills every field of the JSON
    report and writes the table and the chart."""
    results = bench.run(tmp_path, device="cpu", quick=True, log=lambda line: None)
    stem = next(tmp_path.glob("bench-*.json"))
    data = json.loads(stem.read_text())
    assert data["peak_gflops"]["fp32"] > 0
    variants = {r["variant"] for r in data["denoiser"]}
    assert {"torch-fp32", "onnxruntime-fp32", "eager-reference"} <= variants
    assert all(r["ms"] > 0 and r["fraction_of_peak"] > 0 for r in data["denoiser"])
    presets = {r["preset"]: r for r in results["presets"]}
    assert presets["exact"]["drift_from_exact"] == 0.0 and presets["draft"]["speedup_vs_exact"] > 2
    assert 0 < results["scenes"][0]["network_share"] <= 1
    assert [r["tiles"] for r in results["scenes"]] == [1, 4] and results["memory_ratio_4x_area"] > 0
    assert stem.with_suffix(".md").exists() and stem.with_suffix(".svg").read_text().startswith("<svg")
