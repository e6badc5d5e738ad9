"""Does post-training int8 (`--dtype int8`: NNCF W8A8) pay on this CPU, and which layers hold it?

    python benchmarks/int8_openvino.py [--spec copgen-base] [--batch 2]    # speed and drift
    python benchmarks/int8_openvino.py --sensitivity [--spec copgen-mid]   # per layer group

Both build the runtime's own int8 denoiser (`openvino_backend.quantize_int8`, calibrated on
`Pipeline.chip_calls`: a `draft` run on the bundled chip) from random weights, with random VAEs.
Errors are relative to OpenVINO fp32 over whole calls, on held-out inputs: the denoiser calls of
another `draft` run (other seeds). The speed run interleaves fp32, bf16 and int8 round
by round (minima). The sensitivity run quantizes one layer group at a time, then everything,
then everything but `INT8_KEEP`. Random-weight drift does not predict the quality of trained
weights, whose activations have outliers. Issue 18's rule: ship int8 only if it is at least 1.3x
faster than bf16 per call.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import torch

from copgen_rt import specs
from copgen_rt.backends import openvino_backend as ov
from copgen_rt.bench.environment import machine_load
from copgen_rt.bench.models import (
    call_error,
    denoiser_flops,
    export_denoiser,
    mid_spec,
    random_denoiser,
    random_vae_pipeline,
    tile_drift,
)
from copgen_rt.files import write_text


def errors(fn, reference, calls, n: int) -> list[float]:
    return [call_error(fn(c[:n], c[n:]), reference(c[:n], c[n:])) for c in calls]


def sensitivity(spec, bf16, fp32, pipe, calls, out: Path) -> None:
    n = len(spec.modalities)
    d = spec.denoiser
    groups = (["patch_embeds", *(f"in_blocks.{i}" for i in range(d.depth // 2)), "mid_block",
               *(f"out_blocks.{i}" for i in range(d.depth // 2)), "decoder_preds"])
    rows = {"bf16": errors(bf16, fp32, calls, n)}
    for group in groups:  # quantize this group only: leave every node out whose name lacks it
        only = ov.quantize_int8(bf16, pipe.chip_calls, keep=(rf"^(?!.*{group}[/.]).*$",))
        rows[f"only {group}"] = errors(only, fp32, calls, n)
        print(f"  only {group:<16} {max(rows[f'only {group}']):.3g}", flush=True)
    rows["all layers"] = errors(ov.quantize_int8(bf16, pipe.chip_calls, keep=()), fp32, calls, n)
    shipped = ov.quantize_int8(bf16, pipe.chip_calls)
    rows["all but INT8_KEEP (shipped)"] = errors(shipped, fp32, calls, n)
    for name in ("all layers", "all but INT8_KEEP (shipped)"):
        print(f"  {name:<22} {max(rows[name]):.3g}")
    result = {"spec": spec.name, "openvino": ov.version(), "keep": list(ov.INT8_KEEP),
              "held_out_calls": len(calls), "rel_err_vs_fp32_per_call": rows}
    write_text(out / f"int8-sensitivity-{spec.name}.json", json.dumps(result, indent=1) + "\n")


def speed(spec, bf16, fp32, pipe, calls, batch: int, rounds: int, out: Path, load: str) -> None:
    n = len(spec.modalities)
    t = time.perf_counter()
    int8 = ov.quantize_int8(bf16, pipe.chip_calls)
    quantize_s = time.perf_counter() - t
    variants = {"openvino-fp32": fp32, "openvino-bf16": bf16, "openvino-int8": int8}
    call = calls[-1]  # the latest: where bf16 drifts most
    best: dict[str, float] = {}
    for round_ in range(rounds + 1):  # the first round warms up
        for name, fn in variants.items():
            start = time.perf_counter()
            fn(call[:n], call[n:])
            if round_:
                best[name] = min(best.get(name, math.inf), time.perf_counter() - start)
    drift = {name: errors(fn, fp32, calls, n) for name, fn in variants.items()}
    tiles = tile_drift(pipe, variants)
    flops = denoiser_flops(spec) * batch
    result = {
        "spec": spec.name, "batch": batch, "openvino": ov.version(), "load_before": load,
        "load_after": machine_load(),
        "kept_unquantized": list(ov.INT8_KEEP),
        "quantize_s (calibration included, once per model)": quantize_s,
        "ms": {k: v * 1e3 for k, v in best.items()},
        "gflops": {k: flops / v / 1e9 for k, v in best.items()},
        "rel_err_vs_fp32_per_held_out_call": drift,
        "tile_rel_err_vs_fp32 (exact preset, same noise, final latents)": tiles,
        "int8_speedup_vs_bf16": best["openvino-bf16"] / best["openvino-int8"],
        "ships": best["openvino-bf16"] / best["openvino-int8"] >= 1.3,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rel_err_vs_fp32_per_held_out_call"}, indent=1))
    write_text(out / f"int8-openvino-{spec.name}.json", json.dumps(result, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", default=None, help="default: copgen-base, copgen-mid with --sensitivity")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sensitivity", action="store_true")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    os.environ.setdefault("COPGEN_RT_CACHE", tempfile.mkdtemp(prefix="copgen-int8-bench-"))  # not yours
    name = args.spec or ("copgen-mid" if args.sensitivity else "copgen-base")
    spec = mid_spec() if name == "copgen-mid" else specs.get(name)
    load = machine_load()
    folder, component = export_denoiser(spec, random_denoiser(spec, "cpu", torch.float32))
    bf16 = ov.OpenVinoDenoiser.of_component(folder, component, "bf16")
    fp32 = ov.OpenVinoDenoiser.of_component(folder, component, "fp32")
    pipe = random_vae_pipeline(spec, bf16)
    calls = pipe.chip_calls(seeds=range(100, 100 + args.batch))  # held out: not the calibration's seeds
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.sensitivity:
        sensitivity(spec, bf16, fp32, pipe, calls, out)
    else:
        speed(spec, bf16, fp32, pipe, calls, args.batch, args.rounds, out, load)


if __name__ == "__main__":
    main()
