"""`copgen-rt bench`: throughput measured as ratios within one run, on this machine.

1. the device's matmul peak (large square matmuls, fp32 and the native low precision);
2. one denoiser call per backend and precision for the tiny, a mid-size and the base spec
   (ms, GFLOP/s, fraction of peak), against the reference-style eager execution;
3. full tiles per preset (exact / fast / draft) with their drift from exact on the same noise;
4. `infer` on a generated scene: km2/s, the share of wall time in network calls (denoiser and
   VAEs), and peak memory for the scene and one four times its area (in subprocesses).

Timings are minima over repeats (shared machines move by up to 20%). Random weights throughout:
speed does not depend on weight values. Results: JSON + markdown + SVG under benchmarks/results/.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from copgen_rt import __version__, specs
from copgen_rt.backends import DenoiserBackend, TorchDenoiser
from copgen_rt.backends.torch_backend import ReferenceStyleDenoiser
from copgen_rt.device import choose, cpu_name
from copgen_rt.models import Denoiser
from copgen_rt.specs import ModelSpec
from copgen_rt.weights import Checkpoint, load_denoiser, random_state_dict


def mid_spec() -> ModelSpec:
    """A mid-size denoiser (384 wide, 8 deep) with the demo's small VAEs (a full-size VAE decode
    costs ~3 s per modality per tile on a 2-core CPU, which would swamp the scene benchmark)."""
    base = specs.get("copgen-base")
    return base.replace(name="copgen-mid", vaes=specs.get("copgen-demo").vaes,
                        denoiser=dataclasses.replace(base.denoiser, embed_dim=384, depth=8, num_heads=6))


def denoiser_flops(spec: ModelSpec) -> float:
    """FLOPs (multiply-add = 2) of one denoiser call for one sample: linear layers + attention."""
    d, L = spec.denoiser.embed_dim, spec.num_tokens
    hidden = int(d * spec.denoiser.mlp_ratio)
    half = spec.denoiser.depth // 2
    per_block = 3 * d * d + d * d + 2 * d * hidden  # qkv, proj, fc1, fc2 (per token)
    linear = (2 * half + 1) * per_block + half * 2 * d * d  # + skip_linear in out-blocks
    attention = (2 * half + 1) * 2 * L * L * d  # QK^T and AV
    heads = sum(m.num_tokens * (m.latent_shape[0] * m.patch_size ** 2) * d * 2 for m in spec.modalities)
    return 2.0 * (linear * L + attention + heads / 2)


def _time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    best = math.inf
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def matmul_peak(device: str, dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n ** 3 / _time(lambda: a @ b, repeats, warmup=2) / 1e9


def random_denoiser(spec: ModelSpec, device: str, dtype: torch.dtype, seed: int = 0) -> Denoiser:
    with torch.device("meta"):
        shapes = Denoiser(spec)
    return load_denoiser(spec, Checkpoint(Path("random"), random_state_dict(shapes, seed)), device, dtype)


def _inputs(spec: ModelSpec, batch: int, device: str):
    g = torch.Generator().manual_seed(1)
    latents = [torch.randn(batch, *m.latent_shape, generator=g).to(device) for m in spec.modalities]
    times = [(torch.rand(batch, generator=g) * 1000).to(device) for _ in spec.modalities]
    return latents, times


def bench_denoiser(spec: ModelSpec, device: str, batches: list[int], variants: list[str], peak: dict,
                   repeats: int, log) -> list[dict]:
    rows = []
    flops = denoiser_flops(spec)
    low = choose(device).dtype if choose(device).dtype != "fp32" else None
    models = {"fp32": random_denoiser(spec, device, torch.float32)}
    for variant in variants:
        if variant == "torch-low" and low is None:
            continue
        for batch in batches:
            latents, times = _inputs(spec, batch, device)
            fn: DenoiserBackend
            if variant == "torch-fp32":
                fn, precision = TorchDenoiser(models["fp32"]), "fp32"
            elif variant == "torch-low" and low is not None:
                if low not in models:
                    models[low] = random_denoiser(spec, device, {"bf16": torch.bfloat16,
                                                                  "fp16": torch.float16}[low])
                fn, precision = TorchDenoiser(models[low]), low
            elif variant == "onnxruntime-fp32":
                fn, precision = _ort_denoiser(spec, models["fp32"]), "fp32"
            elif variant == "eager-reference":  # autocast: bf16 on CPUs, fp16 on GPUs
                fn = ReferenceStyleDenoiser(models["fp32"])
                precision = "fp16" if device.startswith("cuda") else "bf16"
            elif variant == "eager-reference-fp32":
                fn, precision = ReferenceStyleDenoiser(models["fp32"], "fp32"), "fp32"
            else:
                raise ValueError(variant)
            seconds = _time(functools.partial(fn, latents, times), repeats)
            rate = flops * batch / seconds / 1e9
            ref_peak = peak.get(precision, peak["fp32"])
            row = {"spec": spec.name, "variant": variant, "precision": precision, "batch": batch,
                   "ms": seconds * 1e3, "gflops": rate, "fraction_of_peak": rate / ref_peak}
            log(f"  {spec.name:<12} {variant:<22} b{batch:<3} {seconds * 1e3:9.1f} ms  "
                f"{rate:7.1f} GFLOP/s  {rate / ref_peak:5.0%} of {precision} peak")
            rows.append(row)
    return rows


def _ort_denoiser(spec: ModelSpec, model: Denoiser):
    from copgen_rt.backends.onnxruntime_backend import OrtDenoiser
    from copgen_rt.export.onnx import denoiser_io, export_models

    folder = Path(tempfile.mkdtemp(prefix="copgen-bench-onnx-"))
    export_models(spec, model, {}, folder, weights={}, random_weights=True, check="none")
    ins, outs = denoiser_io(spec)
    return OrtDenoiser(folder / "denoiser.onnx", [t.name for t in ins], [t.name for t in outs])


def bench_presets(spec: ModelSpec, device: str, batch: int, log) -> list[dict]:
    """Whole tiles (all modalities generated from an S2 L2A condition) per preset."""
    from copgen_rt.pipeline import Pipeline
    from copgen_rt.provenance import Provenance

    model = random_denoiser(spec, device, torch.float32)
    pipe = Pipeline(spec, TorchDenoiser(model), provenance=Provenance(spec.name, random=True), device=device)
    cond = [n for n in spec.names if n.startswith("S2L2A")] + ["3d_cartesian_lat_lon"]
    gen = [n for n in spec.names if n not in cond]
    g = torch.Generator().manual_seed(3)
    latents = {n: torch.randn(batch, *spec.modality(n).latent_shape, generator=g) for n in cond}
    rows: list[dict[str, Any]] = []
    exact = None
    for preset in ("exact", "fast", "draft"):
        result: dict[str, torch.Tensor] = {}

        def run(preset: str = preset, result: dict[str, torch.Tensor] = result) -> None:
            result.update(pipe.generate(gen, latents, conditions_are_latents=True, preset=preset,
                                        seed=list(range(batch)), decode=False))

        seconds = _time(run, repeats=1, warmup=0)
        flat = torch.cat([result[n].flatten(1) for n in gen], 1)
        exact = flat if exact is None else exact
        drift = float((flat - exact).norm() / exact.norm())
        row = {"spec": spec.name, "preset": preset, "batch": batch, "seconds_per_tile": seconds / batch,
               "drift_from_exact": drift}
        log(f"  {spec.name:<12} preset {preset:<6} {seconds / batch:8.2f} s/tile  drift {drift:.2e}")
        rows.append(row)
    for row in rows:
        row["speedup_vs_exact"] = rows[0]["seconds_per_tile"] / row["seconds_per_tile"]
    return rows


SCENE_SCRIPT = r"""
import json, resource, time
from pathlib import Path
import numpy as np, torch
from copgen_rt.bench import scene_pipeline
from copgen_rt.scenes.reader import open_input
from copgen_rt.scenes.job import SceneJob, SceneOptions
from copgen_rt.scenes.run import run_scene
from copgen_rt.scenes.synthetic import smooth_s2, write_raster
side = {side}
tmp = Path({tmp!r})
path = write_raster(tmp / f"scene{{side}}.tif", smooth_s2(side, side))
pipe, timers = scene_pipeline({spec!r}, {device!r}, {dtype!r})
opts = SceneOptions(preset={preset!r}, batch_size={batch}, overwrite=True)
job = SceneJob(pipe.spec, [open_input(path)], tmp / f"out{{side}}", opts)
t = time.perf_counter(); result = run_scene(job, pipe); wall = time.perf_counter() - t
print(json.dumps({{"side_px": side, "tiles": result.tiles, "wall_s": wall, "denoiser_s": timers["denoiser"],
                   "vae_s": timers["vae"],
                   "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "km2": (side * 10 / 1000) ** 2}}))
"""


def scene_pipeline(spec_name: str, device: str, dtype: str):
    """A pipeline with random weights whose denoiser and VAE calls are timed."""
    from copgen_rt.backends import TorchVAE
    from copgen_rt.models import Autoencoder
    from copgen_rt.pipeline import Pipeline
    from copgen_rt.provenance import Provenance

    spec = mid_spec() if spec_name == "copgen-mid" else specs.get(spec_name)
    timers = {"denoiser": 0.0, "vae": 0.0}
    precision = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    inner = TorchDenoiser(random_denoiser(spec, device, precision))

    class TimedDenoiser:
        name = inner.name

        def __call__(self, latents: list[torch.Tensor], timesteps: list[torch.Tensor]) -> list[torch.Tensor]:
            t = time.perf_counter()
            out = inner(latents, timesteps)
            timers["denoiser"] += time.perf_counter() - t
            return out

    class TimedVAE:
        def __init__(self, vae):
            self.vae = vae

        def encode_moments(self, x):
            t = time.perf_counter()
            out = self.vae.encode_moments(x)
            timers["vae"] += time.perf_counter() - t
            return out

        def decode(self, z):
            t = time.perf_counter()
            out = self.vae.decode(z)
            timers["vae"] += time.perf_counter() - t
            return out

    def load_vae(modality: str):
        with torch.device("meta"):
            shapes = Autoencoder(spec, modality)
        model = Autoencoder(spec, modality)
        model.load_state_dict(random_state_dict(shapes, 7))
        return TimedVAE(TorchVAE(model.to(device).eval()))

    pipe = Pipeline(spec, TimedDenoiser(), load_vae, Provenance(spec.name, random=True), device)
    return pipe, timers


def bench_scene(spec_name: str, device: str, dtype: str, preset: str, batch: int, sides: list[int],
                log) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="copgen-bench-scene-") as tmp:
        for side in sides:
            code = SCENE_SCRIPT.format(side=side, tmp=tmp, spec=spec_name, device=device,
                                       dtype=dtype, preset=preset, batch=batch)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row.update({"spec": spec_name, "preset": preset, "dtype": dtype,
                        "network_share": (row["denoiser_s"] + row["vae_s"]) / row["wall_s"],
                        "km2_per_s": row["km2"] / row["wall_s"]})
            log(f"  scene {side}x{side} px ({row['tiles']} tiles, {spec_name}, {preset}, {dtype}): "
                f"{row['wall_s']:.1f} s, network {row['network_share']:.1%}, "
                f"{row['km2_per_s']:.3f} km2/s, peak RSS {row['peak_rss_mb']:.0f} MB")
            rows.append(row)
    return rows


def environment(device: str) -> dict:
    import numpy

    env = {"copgen_rt": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
           "python": platform.python_version(), "cpu": cpu_name(), "threads": torch.get_num_threads(),
           "device": device, "precision_choice": choose(device).describe()}
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name()
    try:
        import onnxruntime

        env["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return env


def run(out_dir: Path, device: str = "cpu", quick: bool = False, log=print) -> dict:
    """The default run (under 15 minutes on our 2-core CPU); `quick` is a smoke test."""
    choice = choose(device)
    log(choice.describe())
    peak = {"fp32": matmul_peak(device, torch.float32, n=1024 if quick else 2048)}
    if choice.dtype != "fp32":
        low = {"bf16": torch.bfloat16, "fp16": torch.float16}[choice.dtype]
        peak[choice.dtype] = matmul_peak(device, low, n=1024 if quick else 2048)
    log("matmul peak: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peak.items()))
    demo, mid, base = specs.get("copgen-demo"), mid_spec(), specs.get("copgen-base")
    variants = ["torch-fp32", "torch-low", "onnxruntime-fp32", "eager-reference", "eager-reference-fp32"]
    results: dict = {"environment": environment(device), "peak_gflops": peak, "denoiser": []}
    log("denoiser forward:")
    if quick:
        results["denoiser"] += bench_denoiser(demo, device, [2], variants, peak, 1, log)
    else:
        results["denoiser"] += bench_denoiser(demo, device, [1, 4], variants, peak, 3, log)
        results["denoiser"] += bench_denoiser(mid, device, [1, 4], variants, peak, 2, log)
        results["denoiser"] += bench_denoiser(base, device, [2], ["torch-fp32", "torch-low",
                                                                  "eager-reference"], peak, 1, log)
    log("tiles per preset:")
    results["presets"] = bench_presets(demo if quick else mid, device, 1 if quick else 4, log)
    log("scenes (subprocesses):")
    sides = [160, 320] if quick else [256, 512]  # the second has 4x the area (quick: 1 and 4 tiles)
    results["scenes"] = bench_scene("copgen-demo" if quick else "copgen-mid", device, choice.dtype,
                                    "draft" if quick else "fast", 4, sides, log)
    small, large = results["scenes"][0], results["scenes"][-1]
    results["memory_ratio_4x_area"] = large["peak_rss_mb"] / small["peak_rss_mb"]
    log(f"peak memory, 4x the area: {results['memory_ratio_4x_area']:.2f}x")
    write_reports(results, out_dir)
    return results


def write_reports(results: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = "".join(c if c.isalnum() else "-" for c in results["environment"].get("gpu") or
                  results["environment"]["cpu"]).strip("-").lower()
    stem = out_dir / f"bench-{tag}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [f"# copgen-rt bench ({results['environment']['cpu']}, {results['environment']['device']})", "",
             "Peak: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in results["peak_gflops"].items()), "",
             "| spec | variant | precision | batch | ms | GFLOP/s | of peak |",
             "|---|---|---|---|---|---|---|"]
    for r in results["denoiser"]:
        lines.append(f"| {r['spec']} | {r['variant']} | {r['precision']} | {r['batch']} | {r['ms']:.1f} | "
                     f"{r['gflops']:.1f} | {r['fraction_of_peak']:.0%} |")
    lines += ["", "| spec | preset | s/tile | speed-up | drift from exact |", "|---|---|---|---|---|"]
    for r in results["presets"]:
        lines.append(f"| {r['spec']} | {r['preset']} | {r['seconds_per_tile']:.2f} | "
                     f"{r['speedup_vs_exact']:.1f}x | {r['drift_from_exact']:.1e} |")
    lines += ["", "| scene | tiles | wall s | network share | km2/s | peak RSS MB |",
              "|---|---|---|---|---|---|"]
    for r in results["scenes"]:
        lines.append(f"| {r['side_px']} px ({r['spec']}, {r['preset']}) | {r['tiles']} | {r['wall_s']:.1f} | "
                     f"{r['network_share']:.1%} | {r['km2_per_s']:.3f} | {r['peak_rss_mb']:.0f} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    stem.with_suffix(".svg").write_text(_svg_bars(results["denoiser"]))
    return stem


def _svg_bars(rows: list[dict]) -> str:
    """Fraction of peak per (spec, variant, batch) as a horizontal bar chart."""
    height = 22 * len(rows) + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="760" height="{height}" '
             'font-family="sans-serif" font-size="12">',
             '<text x="10" y="18">denoiser forward: fraction of matmul peak</text>']
    for i, r in enumerate(rows):
        y = 30 + 22 * i
        width = max(1.0, 400 * min(r["fraction_of_peak"], 1.5))
        parts.append(f'<text x="10" y="{y + 14}">{r["spec"]} {r["variant"]} b{r["batch"]}</text>')
        parts.append(f'<rect x="320" y="{y}" width="{width:.0f}" height="16" fill="#4a7ab5"/>')
        parts.append(f'<text x="{325 + width:.0f}" y="{y + 13}">{r["fraction_of_peak"]:.0%}</text>')
    parts.append("</svg>")
    return "\n".join(parts)

