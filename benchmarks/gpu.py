"""Check and time the GPU path in one call (< 10 minutes on an H100).

    python benchmarks/gpu.py [--quick]

Checks (fail loudly): bf16 denoiser vs fp32, CUDA-graph replay vs eager, the Triton backend vs
torch (when Triton is installed), on copgen-base shapes with random weights.
Times: the bf16 matmul peak; one denoiser call at batch 1..64 for eager bf16, bf16 + CUDA graphs,
Triton and the reference-style eager mode (fp32 weights under fp16 autocast), with TFLOP/s and
the fraction of the peak; a whole tile per preset; a 10.68 km Major TOM cell through `run_scene`
in exact and fast mode against the reference-style eager mode.
Writes benchmarks/results/gpu-<gpu>.json and .md. Without a CUDA GPU it measures nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from copgen_rt.bench.timing import cuda_best_seconds

RESULTS = Path(__file__).parent / "results"


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())




def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller batches, no cell")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing measured")
        return 0

    from copgen_rt import specs
    from copgen_rt.backends import TorchDenoiser, make_denoiser_backend
    from copgen_rt.backends.cuda_graphs import CudaGraphDenoiser
    from copgen_rt.backends.torch_backend import ReferenceStyleDenoiser
    from copgen_rt.bench.environment import environment
    from copgen_rt.bench.gemm import matmul_peak
    from copgen_rt.bench.models import denoiser_flops, random_denoiser
    from copgen_rt.bench.presets import bench_presets

    t_start = time.perf_counter()
    device = "cuda"
    spec = specs.get("copgen-base")
    out: dict = {"environment": environment(device), "checks": {}, "denoiser": [], "tiles": [], "cell": []}
    peak = matmul_peak(device, torch.bfloat16, n=8192, repeats=10)
    out["bf16_peak_tflops"] = peak / 1e3
    print(f"{torch.cuda.get_device_name()}: bf16 matmul peak {peak / 1e3:.0f} TFLOP/s")

    fp32 = random_denoiser(spec, device, torch.float32)
    bf16 = random_denoiser(spec, device, torch.bfloat16)
    backends = {"eager-bf16": TorchDenoiser(bf16), "cudagraph-bf16": CudaGraphDenoiser(TorchDenoiser(bf16)),
                "eager-reference": ReferenceStyleDenoiser(fp32)}
    try:
        backends["triton-bf16"] = make_denoiser_backend("triton", bf16)
    except ImportError as e:
        print(f"triton backend skipped: {e}")

    g = torch.Generator().manual_seed(0)
    lat = [torch.randn(8, *m.latent_shape, generator=g).cuda() for m in spec.modalities]
    ts = [(torch.rand(8, generator=g) * 1000).cuda() for _ in spec.modalities]
    reference = TorchDenoiser(fp32)(lat, ts)
    eager = backends["eager-bf16"](lat, ts)
    checks = {"bf16_vs_fp32": max(rel(a, b) for a, b in zip(eager, reference, strict=True))}
    checks["cudagraph_vs_eager"] = max(rel(a, b) for a, b in
                                       zip(backends["cudagraph-bf16"](lat, ts), eager, strict=True))
    if "triton-bf16" in backends:
        checks["triton_vs_eager"] = max(rel(a, b) for a, b in
                                        zip(backends["triton-bf16"](lat, ts), eager, strict=True))
    out["checks"] = checks
    print("checks:", json.dumps(checks))
    limits = {"bf16_vs_fp32": 5e-2, "cudagraph_vs_eager": 1e-3, "triton_vs_eager": 5e-2}
    failed = [k for k, v in checks.items() if not v <= limits[k]]

    flops = denoiser_flops(spec)
    for batch in ([1, 8, 32] if args.quick else [1, 2, 4, 8, 16, 32, 64]):
        lat = [torch.randn(batch, *m.latent_shape, device=device) for m in spec.modalities]
        ts = [torch.rand(batch, device=device) * 1000 for _ in spec.modalities]
        for name, backend in backends.items():
            seconds = cuda_best_seconds(lambda backend=backend, lat=lat, ts=ts: backend(lat, ts))
            tflops = flops * batch / seconds / 1e12
            row = {"backend": name, "batch": batch, "ms": seconds * 1e3, "tflops": tflops,
                   "fraction_of_bf16_peak": tflops * 1e3 / peak}
            out["denoiser"].append(row)
            print(f"  {name:<16} b{batch:<3} {seconds * 1e3:8.2f} ms {tflops:7.1f} TFLOP/s "
                  f"{row['fraction_of_bf16_peak']:5.1%} of peak")

    out["tiles"] = bench_presets(spec, device, 8 if args.quick else 32, print)
    if not args.quick:
        out["cell"] = cell(spec, print)
    out["seconds"] = time.perf_counter() - t_start
    write(out)
    if failed:
        print(f"FAILED checks: {', '.join(failed)}")
        return 1
    return 0


def cell(spec, log) -> list[dict]:
    """A 10.68 km cell (1068 px at 10 m) from an S2 L2A scene: ours vs reference-style eager."""
    from copgen_rt.backends.torch_backend import ReferenceStyleDenoiser
    from copgen_rt.bench.models import random_denoiser
    from copgen_rt.bench.scenes import scene_pipeline
    from copgen_rt.scenes.inputs.open import open_input
    from copgen_rt.scenes.job import SceneJob, SceneOptions
    from copgen_rt.scenes.run import run_scene
    from copgen_rt.scenes.synthetic import smooth_s2, write_raster

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = write_raster(Path(tmp) / "cell.tif", smooth_s2(1068, 1068))
        for mode, preset in [("ours", "exact"), ("ours", "fast"), ("eager-reference", "exact")]:
            pipe, timers = scene_pipeline(spec.name, "cuda", "bf16")
            if mode == "eager-reference":
                pipe.denoiser = ReferenceStyleDenoiser(random_denoiser(spec, "cuda", torch.float32))
            job = SceneJob(spec, [open_input(path)], Path(tmp) / f"{mode}-{preset}",
                           SceneOptions(preset=preset, batch_size=32, overwrite=True))
            torch.cuda.synchronize()
            t = time.perf_counter()
            result = run_scene(job, pipe)
            torch.cuda.synchronize()
            wall = time.perf_counter() - t
            rows.append({"mode": mode, "preset": preset, "tiles": result.tiles, "wall_s": wall})
            log(f"  cell {mode:<16} {preset:<6} {wall:7.1f} s ({result.tiles} tiles)")
    base = next(r["wall_s"] for r in rows if r["mode"] == "eager-reference")
    for r in rows:
        r["speedup_vs_reference_eager"] = base / r["wall_s"]
    return rows


def write(out: dict) -> None:
    from copgen_rt.bench.environment import machine_tag

    RESULTS.mkdir(exist_ok=True)
    name = machine_tag(out["environment"]["gpu"])
    (RESULTS / f"gpu-{name}.json").write_text(json.dumps(out, indent=1) + "\n")
    lines = [f"# GPU bench: {out['environment']['gpu']}", "",
             f"bf16 peak {out['bf16_peak_tflops']:.0f} TFLOP/s",
             "", "| backend | batch | ms | TFLOP/s | of bf16 peak |", "|---|---|---|---|---|"]
    lines += [f"| {r['backend']} | {r['batch']} | {r['ms']:.2f} | {r['tflops']:.1f} | "
              f"{r['fraction_of_bf16_peak']:.1%} |" for r in out["denoiser"]]
    lines += ["", "| cell mode | preset | wall s | speed-up vs reference eager |", "|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r['preset']} | {r['wall_s']:.1f} | {r['speedup_vs_reference_eager']:.1f}x |"
              for r in out["cell"]]
    (RESULTS / f"gpu-{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
