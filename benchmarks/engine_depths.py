"""Does `auto`'s short copy rank the CPU engines, and the batch sizes, as the full model does? (issue 23)

    python benchmarks/engine_depths.py [--spec copgen-base] [--depths 2,4,20] [--dtype bf16]
    python benchmarks/engine_depths.py --batches 1,2,4,8 [--depths 2,20]

For each depth (blocks = depth + 1: in-blocks, the mid-block, out-blocks; `copgen_rt.tuning`
measures depth 2), a random-weight denoiser of the spec's width, heads and tokens runs on eager
torch and on OpenVINO with a static and a dynamic batch axis, at the tuning's batch, interleaved
round by round. Per engine: median and best seconds per call, and per block. With `--batches`:
eager torch's seconds per tile at each batch, interleaved, and the page faults per call (glibc
returns blocks above its mmap threshold, at most 32 MiB, to the system on every free, and a large
activation then faults its pages in again on every call; to compare, run with
`GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1073741824`, which the results
record). JSON and markdown under benchmarks/results/, named by CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import tempfile
from pathlib import Path

import torch

from copgen_rt import specs
from copgen_rt.backends import exported_denoiser, make_denoiser_backend, scratch_export
from copgen_rt.bench.environment import cpu_tag, machine_load
from copgen_rt.bench.models import random_denoiser
from copgen_rt.bench.timing import interleaved
from copgen_rt.device import cpu_name
from copgen_rt.files import write_text
from copgen_rt.tuning import ENGINE_BATCH, random_inputs

ROUNDS = 7
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def measure(spec: specs.ModelSpec, dtype: str) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="copgen-depths-") as scratch:
        folder = Path(scratch)
        component = scratch_export(spec, random_denoiser(spec, "cpu", torch.float32), folder)
        engines = {"torch": make_denoiser_backend("torch", random_denoiser(spec, "cpu", DTYPES[dtype])),
                   "openvino-static": exported_denoiser("openvino", folder, component, dtype, True),
                   "openvino-dynamic": exported_denoiser("openvino", folder, component, dtype, False)}
        inputs = random_inputs(spec, ENGINE_BATCH)
        rounds = interleaved({e: lambda b=b: b(*inputs) for e, b in engines.items()}, ROUNDS)
    blocks = spec.denoiser.depth + 1
    return {e: {"median_s": statistics.median(s), "best_s": min(s), "median_s_per_block":
                statistics.median(s) / blocks} for e, s in rounds.seconds.items()}


def measure_batches(spec: specs.ModelSpec, dtype: str, batches: list[int]) -> dict[int, dict[str, float]]:
    backend = make_denoiser_backend("torch", random_denoiser(spec, "cpu", DTYPES[dtype]))
    feeds = {b: random_inputs(spec, b) for b in batches}
    faults = {b: 0 for b in batches}

    def call(b: int) -> None:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        backend(*feeds[b])
        faults[b] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    # the first call of each batch allocates for the first time: its faults are not counted
    rounds = interleaved({b: lambda b=b: call(b) for b in batches}, ROUNDS,
                         on_first=lambda b, _: faults.__setitem__(b, 0))
    return {b: {"median_s_per_tile": statistics.median(s) / b, "best_s_per_tile": min(s) / b,
                "page_faults_per_call": faults[b] / ROUNDS} for b, s in rounds.seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="copgen-base")
    parser.add_argument("--depths", default="2,4,20")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--batches", help="eager torch per tile at these batch sizes, e.g. 1,2,4,8")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    if args.batches:
        return main_batches(args)
    load = machine_load()
    full = specs.get(args.spec)
    results = {}
    for depth in (int(d) for d in args.depths.split(",")):
        spec = full.replace(denoiser=dataclasses.replace(full.denoiser, depth=depth))
        results[depth + 1] = measure(spec, args.dtype)
        print(depth + 1, "blocks:", ", ".join(f"{e} {r['median_s'] * 1e3:.0f} ms"
                                              for e, r in results[depth + 1].items()), flush=True)
    environment = {"cpu": cpu_name(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    result = {"environment": environment, "spec": full.name, "dtype": args.dtype, "batch": ENGINE_BATCH,
              "rounds": ROUNDS, "load_before": load, "load_after": machine_load(), "by_blocks": results}
    name = f"engine-depths-{cpu_tag()}-{full.name}-{args.dtype}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / f"{name}.json", json.dumps(result, indent=1) + "\n")
    engines = list(next(iter(results.values())))
    lines = [f"# CPU engines by depth ({cpu_name()}, {full.name} width, {args.dtype}, batch {ENGINE_BATCH})",
             "", f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {ROUNDS} "
             f"interleaved rounds (best in brackets). Load before `{load}`, after `{result['load_after']}`.",
             "", "| blocks | " + " | ".join(f"{e} ms" for e in engines) + " | fastest |",
             "|---|" + "---|" * (len(engines) + 1)]
    for blocks, row in results.items():
        fastest = min(row, key=lambda e: row[e]["median_s"])
        cells = [f"{row[e]['median_s'] * 1e3:.0f} ({row[e]['best_s'] * 1e3:.0f})" for e in engines]
        lines.append(f"| {blocks} | " + " | ".join(cells) + f" | {fastest} |")
    write_text(out / f"{name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def main_batches(args: argparse.Namespace) -> None:
    load = machine_load()
    full = specs.get(args.spec)
    batches = [int(b) for b in args.batches.split(",")]
    results = {}
    for depth in (int(d) for d in args.depths.split(",")):
        spec = full.replace(denoiser=dataclasses.replace(full.denoiser, depth=depth))
        results[depth + 1] = measure_batches(spec, args.dtype, batches)
        print(depth + 1, "blocks, ms per tile:", ", ".join(f"b{b} {r['median_s_per_tile'] * 1e3:.1f}"
                                                          for b, r in results[depth + 1].items()), flush=True)
    tunables = os.environ.get("GLIBC_TUNABLES")
    environment = {"cpu": cpu_name(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                   "GLIBC_TUNABLES": tunables}
    result = {"environment": environment, "spec": full.name, "dtype": args.dtype, "rounds": ROUNDS,
              "load_before": load, "load_after": machine_load(), "by_blocks": results}
    allocator = "" if tunables is None else "-glibc-tunables"
    name = f"batch-depths-{cpu_tag()}-{full.name}-{args.dtype}{allocator}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / f"{name}.json", json.dumps(result, indent=1) + "\n")
    lines = [f"# Eager torch per tile by batch and depth ({cpu_name()}, {full.name} width, {args.dtype})",
             "", f"torch {torch.__version__}, {torch.get_num_threads()} threads, GLIBC_TUNABLES="
             f"{tunables or 'unset'}, median of {ROUNDS} interleaved rounds. Load before `{load}`, after "
             f"`{result['load_after']}`.", "",
             "| blocks | " + " | ".join(f"b{b} ms/tile (page faults/call)" for b in batches) + " | fastest |",
             "|---|" + "---|" * (len(batches) + 1)]
    for blocks, row in results.items():
        fastest = min(row, key=lambda b: row[b]["median_s_per_tile"])
        cells = [f"{row[b]['median_s_per_tile'] * 1e3:.1f} ({row[b]['page_faults_per_call']:.0f})"
                 for b in batches]
        lines.append(f"| {blocks} | " + " | ".join(cells) + f" | b{fastest} |")
    write_text(out / f"{name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
