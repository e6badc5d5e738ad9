"""`copgen-rt bench`: throughput measured as ratios within one run, on this machine.

1. the GEMM limit of each precision (`gemm`): the best rate that torch, numpy (OpenBLAS),
   onnxruntime or OpenVINO reach at the denoiser's own GEMM shapes (qkv, proj, fc1, fc2 at the
   bench batch) and at a large square product (fp32, bf16; int8 u8 x s8, the VNNI pattern);
2. one denoiser call per engine and precision (`calls`: tiny, mid-size and base shapes: ms,
   GFLOP/s, fraction of the precision's limit, error vs fp32), variants interleaved round by round,
   against the reference-style eager execution;
3. full tiles per preset (`presets`: exact / fast / draft) with the automatic engine, their drift
   from exact on the same noise, and the reference-style eager execution on the same tiles;
4. `infer` on a generated scene (`scenes`) with the automatic engine and with reference-style
   eager: km2/s, the share of wall time in network calls (denoiser and VAEs), and peak memory for
   the scene and one four times its area (in subprocesses).

Timings are minima over repeats (`timing`; shared machines move by up to 20%; `uptime` load is
recorded before and after). Random weights throughout (`models`): speed does not depend on weight
values. Results (`report`): JSON + markdown + SVG under benchmarks/results/.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from copgen_rt import specs
from copgen_rt.bench.calls import VARIANTS, auto_variant, bench_denoiser
from copgen_rt.bench.environment import environment, machine_load
from copgen_rt.bench.gemm import gemm_limits, gemm_shapes
from copgen_rt.bench.models import denoiser_flops, mid_spec
from copgen_rt.bench.presets import bench_presets
from copgen_rt.bench.report import write_reports
from copgen_rt.bench.scenes import bench_scene
from copgen_rt.bench.targets import check_targets
from copgen_rt.device import choose

__all__ = ["denoiser_flops", "mid_spec", "run", "write_reports"]


def run(out_dir: Path, device: str = "cpu", quick: bool = False, log: Callable[[str], object] = print,
        base_only: bool = False) -> dict:
    """The default run (about 30 minutes on our busy 2-core CPU); `quick` is a smoke test on the
    tiny model; `base_only` skips the tiny and mid-size per-call tables."""
    choice = choose(device)
    log(choice.describe())
    demo, mid, base = specs.get("copgen-demo"), mid_spec(), specs.get("copgen-base")
    results: dict = {"environment": environment(device), "load_before": machine_load()}
    log(f"before measuring: {results['environment']['engine_choice']}")
    batch_spec = demo if quick else base
    # what `engine="auto"` runs here, per precision: the measurement `infer` uses (this machine's
    # cache, measured now where it is not there yet, on the model's short copy)
    results["auto"], results["tuning"] = {}, {}
    for dtype in dict.fromkeys([choice.dtype] if quick else [choice.dtype, "fp32"]):  # quick: what infer runs
        results["auto"][dtype], measured = auto_variant(device, batch_spec, dtype)
        if measured is not None:
            results["tuning"][dtype] = measured.to_json()
    cache = tempfile.mkdtemp(prefix="copgen-bench-cache-")  # first compiles measured, not imported
    previous_cache = os.environ.get("COPGEN_RT_CACHE")
    os.environ["COPGEN_RT_CACHE"] = cache
    try:
        limit_spec, square = (demo, 512) if quick else (base, 4096)
        log(f"GEMM limits ({limit_spec.name} shapes at batch 2, and {square}^3):")
        results["gemm"] = gemm_limits(gemm_shapes(limit_spec, 2, square), 2 if quick else 3, log)
        limits = results["gemm"]["limits"]
        everything = list(VARIANTS)
        log("denoiser forward (variants interleaved):")
        results["denoiser"] = []
        if quick:  # the static-batch and torch.compile variants compile: left out of the smoke test
            results["denoiser"] += bench_denoiser(
                demo, device, [2], [v for v in everything if "static" not in v and "compile" not in v],
                limits, 1, log
            )
        else:
            if not base_only:
                results["denoiser"] += bench_denoiser(demo, device, [1, 4], everything, limits, 3, log)
                results["denoiser"] += bench_denoiser(mid, device, [1, 4], everything, limits, 2, log)
            results["denoiser"] += bench_denoiser(
                base, device, [2], [v for v in everything if v != "onnxruntime-fp32"], limits, 2, log
            )
        log(f"calls per batch size ({batch_spec.name}, the automatic engine and the reference's default):")
        results["batches"] = bench_denoiser(batch_spec, device, [1, 2] if quick else [1, 2, 4, 8],
                                            [results["auto"][choice.dtype], "eager-reference"], limits,
                                            1 if quick else 3, log)  # 2 rounds once kept a 1.45x outlier
        log("tiles per preset:")
        # quick (a smoke test): the reference only on the fast preset, and on the small scene
        results["presets"] = bench_presets(demo if quick else mid, device, 1 if quick else 4, log,
                                           ("fast",) if quick else ("exact", "fast"))
        log("scenes (subprocesses, engines alternating):")
        sides = [160, 320] if quick else [256, 512]  # the second has 4x the area (quick: 1 and 4 tiles)
        results["scenes"] = bench_scene(
            "copgen-demo" if quick else "copgen-mid",
            device,
            ["auto", "eager-reference"],
            "draft" if quick else "fast",
            4,
            sides,
            log,
            1 if quick else None,
        )
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        if previous_cache is None:
            os.environ.pop("COPGEN_RT_CACHE", None)
        else:
            os.environ["COPGEN_RT_CACHE"] = previous_cache
    autos = [r for r in results["scenes"] if r["engine"] == "auto"]
    results["memory_ratio_4x_area"] = autos[-1]["peak_rss_mb"] / autos[0]["peak_rss_mb"]
    log(f"peak memory, 4x the area (automatic engine): {results['memory_ratio_4x_area']:.2f}x")
    results["load_after"] = machine_load()
    results["targets"] = check_targets(results, device, base)
    for t in results["targets"]:
        verdict = "met   " if t["met"] else "MISSED"
        log(f"  {verdict} {t['target']}: {t['value']:.2f}{t['unit']} (goal {t['goal']}{t['unit']})")
    write_reports(results, out_dir)
    return results
