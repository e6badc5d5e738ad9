"""One copgen-base denoiser call per engine and precision on a CUDA GPU, replayed as a CUDA graph.

    python benchmarks/gpu_calls.py [--out DIR] [--batch 8]

Random weights (speed does not depend on them). For each engine and precision: the call captured
as a CUDA graph (`CudaGraphDenoiser`, the runtime's own wrapper) and run eagerly, the best of 5
timed with CUDA events after 2 warm-ups, the peak GPU memory, and a check of its outputs against
eager torch fp32 on the same inputs (max |out - ref| / max |ref| over all outputs; limits in
LIMITS: the check fails the run). Rows that cannot run here are kept with the reason: without a
CUDA GPU (CPU machines, CI) every row is skipped, so this file runs anywhere. TensorRT is not in
the table: the lent GPU machine has none. Writes DIR/gpu-calls.json and .md (default DIR:
benchmarks/results/gpu-calls-<gpu>).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from copgen_rt.bench.timing import cuda_best_seconds

RESULTS = Path(__file__).parent / "results"
ENGINES = (("torch", "fp32"), ("torch", "bf16"), ("torch", "fp16"),
           ("triton", "fp32"), ("triton", "bf16"), ("triton", "fp16"), ("onnxruntime", "fp32"))
LIMITS = {"fp32": 1e-3, "bf16": 5e-2, "fp16": 5e-2}  # vs eager torch fp32, as benchmarks/gpu.py
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def skip_reason(engine: str) -> str | None:
    """Why this engine cannot run here, or None."""
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    if engine == "triton" and importlib.util.find_spec("triton") is None:
        return "Triton is not installed"
    if engine == "onnxruntime":
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            return "onnxruntime has no CUDAExecutionProvider here (onnxruntime-gpu is not installed)"
    return None




def _backend(engine: str, spec: Any, dtype: str) -> Any:
    from copgen_rt.backends import make_denoiser_backend
    from copgen_rt.backends.onnxruntime_backend import OrtDenoiser
    from copgen_rt.bench.models import export_denoiser, random_denoiser

    if engine == "onnxruntime":
        folder, component = export_denoiser(spec, random_denoiser(spec, "cpu", torch.float32))
        return OrtDenoiser(folder / component.file, [t.name for t in component.inputs],
                           [t.name for t in component.outputs], ["CUDAExecutionProvider"])
    return make_denoiser_backend(engine, random_denoiser(spec, "cuda", DTYPES[dtype]))


def measure(engine: str, dtype: str, spec: Any, inputs: tuple[list, list], reference: list) -> dict:
    from copgen_rt.backends.cuda_graphs import CudaGraphDenoiser
    from copgen_rt.bench.models import call_error

    row: dict[str, Any] = {"engine": engine, "precision": dtype}
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    backend = _backend(engine, spec, dtype)
    latents, timesteps = inputs
    row["eager_ms"] = cuda_best_seconds(lambda: backend(latents, timesteps)) * 1e3
    row["rel_err_vs_torch_fp32"] = call_error(backend(latents, timesteps), reference)
    if engine != "onnxruntime":  # a session is not captured: it runs its own CUDA graphs or none
        graphs = CudaGraphDenoiser(backend)
        row["cuda_graph_ms"] = cuda_best_seconds(lambda: graphs(latents, timesteps)) * 1e3
        row["cuda_graph_vs_eager"] = call_error(graphs(latents, timesteps), backend(latents, timesteps))
    row["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    row["passed"] = (row["rel_err_vs_torch_fp32"] <= LIMITS[dtype]
                     and row.get("cuda_graph_vs_eager", 0) <= 1e-3)
    return row


def markdown(out: dict) -> str:
    lines = [f"# One copgen-base call per engine and precision: {out['gpu']}", "",
             f"Batch {out['batch']}, random weights, best of 5 (CUDA events); error vs eager torch fp32.", "",
             "| engine | precision | CUDA graph ms | eager ms | rel err | graph vs eager | peak GPU MiB | "
             "result |", "|---|---|---|---|---|---|---|---|"]
    for r in out["rows"]:
        if "skipped" in r or "error" in r:
            why = r.get("skipped") or r.get("error")
            lines.append(f"| {r['engine']} | {r['precision']} | | | | | | {why} |")
            continue
        graph = f"{r['cuda_graph_ms']:.2f}" if "cuda_graph_ms" in r else "-"
        vs = f"{r['cuda_graph_vs_eager']:.1e}" if "cuda_graph_vs_eager" in r else "-"
        lines.append(f"| {r['engine']} | {r['precision']} | {graph} | {r['eager_ms']:.2f} | "
                     f"{r['rel_err_vs_torch_fp32']:.1e} | {vs} | {r['peak_gpu_mib']:.0f} | "
                     f"{'ok' if r['passed'] else 'FAILED'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for gpu-calls.json/.md")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args(argv)

    from copgen_rt import specs
    from copgen_rt.bench.environment import machine_tag

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA GPU"
    out: dict[str, Any] = {"gpu": gpu, "batch": args.batch, "torch": torch.__version__, "rows": []}
    start = time.perf_counter()
    spec = specs.get("copgen-base")
    inputs: tuple[list, list] = ([], [])
    reference: list = []
    for engine, dtype in ENGINES:
        why = skip_reason(engine)
        if why is not None:
            out["rows"].append({"engine": engine, "precision": dtype, "skipped": why})
            print(f"{engine} {dtype}: skipped ({why})", flush=True)
            continue
        if not reference:
            from copgen_rt.backends import TorchDenoiser
            from copgen_rt.bench.models import random_denoiser

            gen = torch.Generator().manual_seed(0)
            inputs = ([torch.randn(args.batch, *m.latent_shape, generator=gen).cuda()
                       for m in spec.modalities],
                      [(torch.rand(args.batch, generator=gen) * 1000).cuda() for _ in spec.modalities])
            reference = TorchDenoiser(random_denoiser(spec, "cuda", torch.float32))(*inputs)
        try:
            row = measure(engine, dtype, spec, inputs, reference)
        except Exception as err:  # a failure is this row's result; the others still run
            row = {"engine": engine, "precision": dtype, "error": f"{type(err).__name__}: {err}"[:300],
                   "passed": False}
        out["rows"].append(row)
        print(f"{engine} {dtype}: {json.dumps(row)}", flush=True)
    out["seconds"] = time.perf_counter() - start
    folder = args.out or RESULTS / f"gpu-calls-{machine_tag(gpu) if torch.cuda.is_available() else 'none'}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gpu-calls.json").write_text(json.dumps(out, indent=1) + "\n")
    (folder / "gpu-calls.md").write_text(markdown(out))
    failed = [f"{r['engine']} {r['precision']}" for r in out["rows"] if r.get("passed") is False]
    if failed:
        print(f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
