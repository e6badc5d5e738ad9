"""Per-call drift of the bf16 engines from fp32 along a real sampling trajectory.

    python benchmarks/bf16_drift.py

The fp32 OpenVINO pipeline samples the bundled real chip (its S2 L2A groups and location ->
every other modality, `draft`) with the demo model; the denoiser's inputs at each network call
are recorded (`Pipeline.chip_calls`), then every engine is called on exactly those inputs.
Relative error = ||out - out_fp32|| / ||out_fp32|| over the whole call's output, per call, and
per output modality at the worst call. Writes
benchmarks/results/bf16_drift.{json,md}. Random weights: the drift of trained weights (whose
activations have outliers) is not predicted by these numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from copgen_rt import Pipeline, demo
from copgen_rt.backends.torch_backend import ReferenceStyleDenoiser
from copgen_rt.files import write_text

OUT = Path(__file__).parent / "results"


def rel_err(out: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    a, b = (torch.cat([t.double().flatten() for t in ts]) for ts in (out, ref))
    return float((a - b).norm() / b.norm())


def main() -> None:
    weights = demo.weights_path()
    fp32 = Pipeline.from_pretrained("copgen-demo", weights, engine="openvino", dtype="fp32")
    engines = {
        "openvino-bf16": Pipeline.from_pretrained("copgen-demo", weights, engine="openvino",
                                                  dtype="bf16").denoiser,
        "torch-bf16": Pipeline.from_pretrained("copgen-demo", weights, engine="torch",
                                               dtype="bf16").denoiser,
    }
    torch_fp32 = Pipeline.from_pretrained("copgen-demo", weights, engine="torch", dtype="fp32")
    engines["reference-autocast"] = ReferenceStyleDenoiser(torch_fp32.denoiser.model, "autocast")
    n = len(fp32.spec.modalities)
    calls = [(c[:n], c[n:]) for c in fp32.chip_calls(seeds=(0,))]
    names = fp32.spec.names
    rows = []
    for call, (latents, times) in enumerate(calls):
        reference = fp32.denoiser(latents, times)
        row = {"call": call, "t": [float(t[0]) for t in times][0]}
        for engine, fn in engines.items():
            out = fn(latents, times)
            row[engine] = rel_err(out, reference)
            row[f"{engine} per modality"] = {n: rel_err([o], [r]) for n, o, r in zip(names, out, reference,
                                                                                  strict=True)}
        rows.append(row)
        print(f"call {call:2d}: " + "  ".join(f"{e} {row[e]:.2e}" for e in engines))
    OUT.mkdir(exist_ok=True)
    write_text(OUT / "bf16_drift.json", json.dumps({"preset": "draft", "rows": rows}, indent=1) + "\n")
    lines = ["| call | " + " | ".join(engines) + " |", "|---|" + "---|" * len(engines)]
    lines += [f"| {r['call']} | " + " | ".join(f"{r[e]:.2e}" for e in engines) + " |" for r in rows]
    worst = max(rows, key=lambda r: r["openvino-bf16"])
    lines += ["", f"Worst openvino-bf16 call ({worst['call']}), per output modality:", ""]
    lines += [f"- {n}: openvino-bf16 {v:.2e}, torch-bf16 {worst['torch-bf16 per modality'][n]:.2e}"
              for n, v in worst["openvino-bf16 per modality"].items()]
    write_text(OUT / "bf16_drift.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
