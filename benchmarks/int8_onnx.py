"""The Q/DQ int8 denoiser for TensorRT (`copgen-rt export --dtype int8`) at copgen-base shapes:
its drift against fp32 on onnxruntime CPU, beside the OpenVINO int8 figures.

    python benchmarks/int8_onnx.py [--spec copgen-base] [--tile-preset draft]

Random weights (random-weight drift does not predict trained weights' drift: their activations
have outliers), random VAEs. Exactly the export's recipe (`export/int8.py`): calibrated on the
denoiser calls of a `draft` run on the bundled chip (seeds 0 and 1), `INT8_KEEP` left fp32; errors
per call on the held-out calls of another draft run (seeds 100 and 101), and per tile: the final
latents of one tile sampled through each graph with the same noise. Writes
benchmarks/results/int8-onnx-<spec>.json, with benchmarks/results/int8-openvino-<spec>.json's
figures beside it when that file exists. No timing: onnxruntime's CPU int8 is not what TensorRT
runs, and the TensorRT engine is not built here.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from copgen_rt import specs
from copgen_rt.backends.onnxruntime_backend import OrtDenoiser
from copgen_rt.bench.environment import machine_load
from copgen_rt.bench.models import export_denoiser, random_denoiser, random_vae_pipeline, tile_drift
from copgen_rt.export.int8 import INT8_FILE, drift, quantize_denoiser
from copgen_rt.files import write_text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", default="copgen-base")
    parser.add_argument("--tile-preset", default="draft", help="preset of the per-tile comparison")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    os.environ.setdefault("COPGEN_RT_CACHE", tempfile.mkdtemp(prefix="copgen-int8-onnx-"))  # not yours
    spec = specs.get(args.spec)
    load = machine_load()
    folder, component = export_denoiser(spec, random_denoiser(spec, "cpu", torch.float32))
    names_in, names_out = [t.name for t in component.inputs], [t.name for t in component.outputs]
    fp32 = OrtDenoiser(folder / component.file, names_in, names_out, ["CPUExecutionProvider"])
    pipe = random_vae_pipeline(spec, fp32)
    calibration, held_out = pipe.chip_calls(), pipe.chip_calls(seeds=(100, 101))
    start = time.perf_counter()
    info = quantize_denoiser(folder / component.file, folder / INT8_FILE, names_in, calibration)
    quantize_s = time.perf_counter() - start
    per_call = drift(folder / component.file, folder / INT8_FILE, names_in, names_out, held_out)
    int8 = OrtDenoiser(folder / INT8_FILE, names_in, names_out, ["CPUExecutionProvider"])
    tiles = tile_drift(pipe, {"fp32": fp32, "int8": int8}, preset=args.tile_preset)
    result = {"spec": spec.name, "load_before": load, "load_after": machine_load(),
              **{k: v for k, v in info.items() if k != "kept_fp32"}, "kept_fp32": len(info["kept_fp32"]),
              "quantize_s (calibration included)": quantize_s,
              "rel_err_vs_fp32_per_held_out_call": per_call, "max_rel_err_per_call": max(per_call),
              f"tile_rel_err_vs_fp32 ({args.tile_preset} preset, same noise, final latents)": tiles["int8"]}
    openvino = Path(args.out) / f"int8-openvino-{spec.name}.json"
    if openvino.is_file():
        ov = json.loads(openvino.read_text())
        result["openvino_int8_beside"] = {
            "source": openvino.name,
            "max_rel_err_per_call": {k: max(v) for k, v in ov["rel_err_vs_fp32_per_held_out_call"].items()},
            "tile_rel_err (exact preset)":
                ov["tile_rel_err_vs_fp32 (exact preset, same noise, final latents)"]}
    print(json.dumps({k: v for k, v in result.items() if k != "rel_err_vs_fp32_per_held_out_call"}, indent=1))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    write_text(Path(args.out) / f"int8-onnx-{spec.name}.json", json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
