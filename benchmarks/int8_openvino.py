"""Does post-training int8 (NNCF, W8A8) pay on this CPU? One denoiser call, int8 vs OpenVINO bf16.

The decision rule of issue 18: ship `--dtype int8` only if it is at least 1.3x faster than bf16
per call. Calibration inputs are the denoiser calls that the runtime makes when it samples from
the bundled Sentinel-2 L2A chip (random weights: encoded by random VAEs, sampled with the bf16
engine, `draft` preset). Variants are interleaved round by round; errors are against OpenVINO fp32
on the same inputs (a held-out call). Random-weight drift does not predict the quality of trained
weights, whose activations have outliers.

    python benchmarks/int8_openvino.py [--spec copgen-base] [--batch 2] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from copgen_rt import Pipeline, specs
from copgen_rt.backends import TorchVAE
from copgen_rt.backends.openvino_backend import OpenVinoDenoiser, _config, _core, version
from copgen_rt.bench import _call_error, _export_denoiser, denoiser_flops, mid_spec, random_denoiser
from copgen_rt.pipeline import Provenance
from copgen_rt.weights import random_state_dict


def calibration_calls(spec, bf16: OpenVinoDenoiser, batch: int) -> list[dict[str, np.ndarray]]:
    """The denoiser inputs of a `draft` run conditioned on the bundled chip (S2 L2A groups)."""
    import rasterio

    from copgen_rt.cli import default_scene
    from copgen_rt.models import Autoencoder

    with rasterio.open(default_scene()) as f:
        chip = torch.from_numpy(f.read().astype(np.float32))
    calls = []

    def spy(latents, timesteps):
        calls.append([*latents, *timesteps])
        return bf16(latents, timesteps)

    def load_vae(modality: str):
        with torch.device("meta"):
            shapes = Autoencoder(spec, modality)
        model = Autoencoder(spec, modality)
        model.load_state_dict(random_state_dict(shapes, 7))
        return TorchVAE(model.eval())

    pipe = Pipeline(spec, spy, load_vae, Provenance(spec.name, random=True), "cpu")
    bands = [m for m in spec.modalities if m.name.startswith("S2L2A")]
    order = {b: i for i, b in enumerate(("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09",
                                         "B11", "B12"))}
    conditions = {}
    for m in bands:
        x = chip[[order[b] for b in m.bands]]
        conditions[m.name] = torch.nn.functional.interpolate(x[None], size=spec.pixel_shape(m.name)[1:],
                                                             mode="area").repeat(batch, 1, 1, 1)
    generate = [
        m.name for m in spec.modalities if not m.name.startswith("S2L2A") and m.name != "3d_cartesian_lat_lon"
    ]
    conditions["3d_cartesian_lat_lon"] = torch.tensor([[48.0, 11.0]] * batch)
    pipe.generate(generate, conditions, preset="draft", seed=list(range(batch)), decode=False)
    names = [*(f"latent_{m.name}" for m in spec.modalities), *(f"t_{m.name}" for m in spec.modalities)]
    return [{n: t.float().numpy() for n, t in zip(names, call, strict=True)} for call in calls]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", default="copgen-base")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    import nncf

    spec = mid_spec() if args.spec == "copgen-mid" else specs.get(args.spec)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    model = random_denoiser(spec, "cpu", torch.float32)
    folder, component = _export_denoiser(spec, model)
    bf16 = OpenVinoDenoiser(folder, component, "bf16")
    fp32 = OpenVinoDenoiser(folder, component, "fp32")
    t = time.perf_counter()
    calls = calibration_calls(spec, bf16, args.batch)
    calibration_s = time.perf_counter() - t
    held_out, calibration = calls[-1], calls[:-1]
    t = time.perf_counter()
    quantized = nncf.quantize(
        _core().read_model(str(folder / component.file)),
        nncf.Dataset(calibration),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(calibration),
    )
    int8 = _core().compile_model(quantized, "CPU", _config("bf16")).create_infer_request()  # the rest in bf16
    quantize_s = time.perf_counter() - t
    names = [t.name for t in component.inputs]
    tensors = [torch.from_numpy(held_out[n]) for n in names]
    n = len(spec.modalities)
    latents, times = tensors[:n], tensors[n:]

    output_names = [t.name for t in component.outputs]

    def run_int8():  # outputs by name: quantization may reorder a model's results
        result = {port.get_any_name(): value for port, value in int8.infer(held_out).items()}
        return [torch.from_numpy(np.array(result[name])) for name in output_names]

    variants = {
        "openvino-fp32": lambda: fp32(latents, times),
        "openvino-bf16": lambda: bf16(latents, times),
        "openvino-int8": run_int8,
    }
    reference = variants["openvino-fp32"]()
    best, errors = {}, {}
    for round_ in range(args.rounds + 1):
        for name, fn in variants.items():
            t = time.perf_counter()
            out = fn()
            seconds = time.perf_counter() - t
            if round_ == 0:
                errors[name] = _call_error(out, reference)
            else:
                best[name] = min(best.get(name, math.inf), seconds)
    per_output = {
        name: float((o - r).norm() / r.norm())
        for name, o, r in zip(output_names, run_int8(), reference, strict=True)
    }
    flops = denoiser_flops(spec) * args.batch
    result = {
        "spec": spec.name,
        "batch": args.batch,
        "openvino": version(),
        "nncf": nncf.__version__,
        "load_before": load,
        "load_after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "calibration_calls": len(calibration),
        "calibration_s": calibration_s,
        "quantize_and_compile_s": quantize_s,
        "ms": {k: v * 1e3 for k, v in best.items()},
        "gflops": {k: flops / v / 1e9 for k, v in best.items()},
        "rel_err_vs_fp32": errors,
        "int8_rel_err_per_output": per_output,
        "int8_speedup_vs_bf16": best["openvino-bf16"] / best["openvino-int8"],
        "ships": best["openvino-bf16"] / best["openvino-int8"] >= 1.3,
    }
    print(json.dumps(result, indent=1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"int8-openvino-{spec.name}.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
