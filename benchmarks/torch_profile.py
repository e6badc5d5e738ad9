"""Where one eager torch denoiser call spends its time, by aten op (issue 23: which part of the call
keeps torch from the bf16 GEMM rate on this CPU).

    python benchmarks/torch_profile.py [--spec copgen-base] [--batch 2] [--dtype bf16]

A random-weight denoiser in `--dtype` (the torch engine: weights stored in that precision, norms
and residuals in fp32) is called twice to warm up, then once under `torch.profiler`. Per aten op:
self time and share of the call; for the linear layers and the attention, the GFLOP/s their share
implies (FLOPs from `bench.models`). JSON and markdown under
benchmarks/results/, named by CPU.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from copgen_rt import specs
from copgen_rt.backends import TorchDenoiser
from copgen_rt.bench.environment import cpu_tag, machine_load
from copgen_rt.bench.models import attention_flops, denoiser_flops, random_denoiser
from copgen_rt.device import cpu_name
from copgen_rt.files import write_text
from copgen_rt.tuning import random_inputs

LINEAR_OPS = ("aten::addmm", "aten::mm", "mkldnn::_linear_pointwise")
ATTENTION_OPS = ("aten::_scaled_dot_product_flash_attention_for_cpu",)
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="copgen-base")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    load = machine_load()
    spec = specs.get(args.spec)
    backend = TorchDenoiser(random_denoiser(spec, "cpu", DTYPES[args.dtype]))
    inputs = random_inputs(spec, args.batch)
    for _ in range(2):
        backend(*inputs)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        backend(*inputs)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total_us = sum(e.self_cpu_time_total for e in events)
    ops = sorted(({"op": e.key, "calls": e.count, "self_ms": e.self_cpu_time_total / 1e3,
                   "share": e.self_cpu_time_total / total_us} for e in events), key=lambda r: -r["self_ms"])
    attention = attention_flops(spec) * args.batch
    linear = denoiser_flops(spec) * args.batch - attention  # the heads' small GEMMs count as linear

    def rate(names: tuple[str, ...], flops: float) -> float:
        ms = sum(r["self_ms"] for r in ops if r["op"] in names)
        return flops / (ms / 1e3) / 1e9 if ms else 0.0

    environment = {"cpu": cpu_name(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    result = {"environment": environment,
              "spec": spec.name, "batch": args.batch, "dtype": args.dtype, "load_before": load,
              "call_ms": total_us / 1e3, "linear_gflops": rate(LINEAR_OPS, linear),
              "attention_gflops": rate(ATTENTION_OPS, attention), "ops": ops}
    tag = cpu_tag()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"torch-profile-{tag}-{spec.name}-{args.dtype}"
    write_text(out / f"{name}.json", json.dumps(result, indent=1) + "\n")
    lines = [f"# Eager torch profile ({cpu_name()}, {spec.name}, batch {args.batch}, {args.dtype})", "",
             f"torch {torch.__version__}, {torch.get_num_threads()} threads. Load before `{load}`. "
             f"One profiled call: {total_us / 1e3:.0f} ms of op self time; linear layers at "
             f"{result['linear_gflops']:.0f} GFLOP/s, attention at "
             f"{result['attention_gflops']:.0f} GFLOP/s.", "",
             "| op | calls | self ms | share |", "|---|---|---|---|"]
    lines += [f"| {r['op']} | {r['calls']} | {r['self_ms']:.1f} | {r['share']:.1%} |" for r in ops[:15]]
    write_text(out / f"{name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
