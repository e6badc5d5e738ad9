"""`copgen-rt bench`: throughput measured as ratios within one run, on this machine.

1. the GEMM limit of each precision: the best rate that torch, numpy (OpenBLAS), onnxruntime or
   OpenVINO reach at the denoiser's own GEMM shapes (qkv, proj, fc1, fc2 at the bench batch) and
   at a large square product (fp32, bf16; int8 u8 x s8, the VNNI pattern);
2. one denoiser call per engine and precision (tiny, mid-size and base shapes: ms, GFLOP/s,
   fraction of the precision's limit, error vs fp32), variants interleaved round by round,
   against the reference-style eager execution;
3. full tiles per preset (exact / fast / draft) with the automatic engine, their drift from
   exact on the same noise, and the reference-style eager execution on the same tiles;
4. `infer` on a generated scene with the automatic engine and with reference-style eager: km2/s,
   the share of wall time in network calls (denoiser and VAEs), and peak memory for the scene and
   one four times its area (in subprocesses).

Timings are minima over repeats (shared machines move by up to 20%; `uptime` load is recorded
before and after). Random weights throughout: speed does not depend on weight values. Results:
JSON + markdown + SVG under benchmarks/results/.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from copgen_rt import __version__, specs
from copgen_rt.backends import TorchDenoiser
from copgen_rt.backends.torch_backend import ReferenceStyleDenoiser
from copgen_rt.device import choose, cpu_name
from copgen_rt.files import write_text
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


def random_denoiser(spec: ModelSpec, device: str, dtype: torch.dtype, seed: int = 0) -> Denoiser:
    with torch.device("meta"):
        shapes = Denoiser(spec)
    return load_denoiser(spec, Checkpoint(Path("random"), random_state_dict(shapes, seed)), device, dtype)


def _inputs(spec: ModelSpec, batch: int, device: str):
    g = torch.Generator().manual_seed(1)
    latents = [torch.randn(batch, *m.latent_shape, generator=g).to(device) for m in spec.modalities]
    times = [(torch.rand(batch, generator=g) * 1000).to(device) for _ in spec.modalities]
    return latents, times


# --- GEMM limits -------------------------------------------------------------------------------


def gemm_shapes(spec: ModelSpec, batch: int, square: int) -> dict[str, tuple[int, int, int]]:
    """(M, K, N) of the denoiser's Linear layers at `batch`, and one square product."""
    d, tokens = spec.denoiser.embed_dim, batch * spec.num_tokens
    hidden = int(d * spec.denoiser.mlp_ratio)
    return {"qkv": (tokens, d, 3 * d), "proj": (tokens, d, d), "fc1": (tokens, d, hidden),
            "fc2": (tokens, hidden, d), f"{square}^3": (square, square, square)}


def _onnx_matmul(m: int, k: int, n: int, integer: bool) -> bytes:
    """A one-node ONNX model: A (input) times B (a weight, as in a Linear); MatMulInteger u8 x s8."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if integer:
        b = numpy_helper.from_array(rng.integers(-128, 127, (k, n), dtype=np.int8), "B")
        node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    else:
        b = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "B")
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        a_type = y_type = TensorProto.FLOAT
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("A", a_type, [m, k])],
                              [helper.make_tensor_value_info("Y", y_type, [m, n])], [b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _gemm_runners(m: int, k: int, n: int) -> dict[tuple[str, str], Callable[[], object]]:
    """(precision, engine) -> one product of this shape, for every engine present in-process."""
    import numpy as np

    a, b = torch.randn(m, k), torch.randn(k, n)
    ab, bb = a.bfloat16(), b.bfloat16()
    a8 = torch.randint(-128, 127, (m, k), dtype=torch.int8)
    b8 = torch.randint(-128, 127, (k, n), dtype=torch.int8)
    runners: dict[tuple[str, str], Callable[[], object]] = {
        ("fp32", "torch"): lambda: a @ b,
        ("bf16", "torch"): lambda: ab @ bb,
    }
    if m > 16 and k % 8 == 0 and n % 8 == 0:  # torch._int_mm's shape rule
        runners[("int8", "torch")] = lambda: torch._int_mm(a8, b8)
    a_np, a_u8 = a.numpy(), np.random.default_rng(1).integers(0, 255, (m, k), dtype=np.uint8)
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        for precision, integer, feed in (("fp32", False, a_np), ("int8", True, a_u8)):
            session = ort.InferenceSession(
                _onnx_matmul(m, k, n, integer), options, providers=["CPUExecutionProvider"]
            )
            runners[(precision, "onnxruntime")] = functools.partial(session.run, None, {"A": feed})
    except ImportError:
        pass
    try:
        import openvino as ov

        from copgen_rt.backends.openvino_backend import _config

        with tempfile.TemporaryDirectory(prefix="copgen-bench-gemm-") as tmp:
            (Path(tmp) / "gemm.onnx").write_bytes(_onnx_matmul(m, k, n, False))
            model = ov.Core().read_model(str(Path(tmp) / "gemm.onnx"))
        for precision in ("fp32", "bf16"):
            if precision == "bf16" and choose("cpu").dtype != "bf16":
                continue
            request = ov.Core().compile_model(model, "CPU", _config(precision)).create_infer_request()
            runners[(precision, "openvino")] = functools.partial(request.infer, {"A": a_np},
                                                                 share_inputs=True)
    except ImportError:
        pass
    return runners


NUMPY_GEMM = r"""
import json, sys, time
import numpy as np, threadpoolctl
shapes, repeats = json.loads(sys.argv[1]), int(sys.argv[2])
rates = {}
for name, (m, k, n) in shapes.items():
    a, b = np.random.rand(m, k).astype(np.float32), np.random.rand(k, n).astype(np.float32)
    a @ b
    best = min((lambda t: (a @ b, time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(repeats))
    rates[name] = 2 * m * k * n / best / 1e9
info = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
blas = {k: info[0].get(k) for k in ("internal_api", "version", "architecture")} if info else None
print(json.dumps({"rates": rates, "blas": blas}))
"""


def _numpy_gemm(shapes: dict[str, tuple[int, int, int]], repeats: int) -> dict:
    """numpy (OpenBLAS) fp32 rates, in a subprocess without OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE:
    some machines set them for old OpenBLAS builds, which slows a current one (its own kernel
    choice is recorded)."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    out = subprocess.run(
        [sys.executable, "-c", NUMPY_GEMM, json.dumps(shapes), str(repeats)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def gemm_limits(shapes: dict[str, tuple[int, int, int]], repeats: int, log) -> dict:
    """GFLOP/s per precision, engine and shape (engines interleaved round by round), and the limit
    of each precision: the best rate of any engine at any of the shapes."""
    rates: dict[str, dict[str, dict[str, float]]] = {}
    for name, (m, k, n) in shapes.items():
        runners = _gemm_runners(m, k, n)
        best = {key: math.inf for key in runners}
        for fn in runners.values():
            fn()  # warm-up
        for _ in range(repeats):
            for key, fn in runners.items():
                t = time.perf_counter()
                fn()
                best[key] = min(best[key], time.perf_counter() - t)
        for (precision, engine), seconds in best.items():
            rates.setdefault(precision, {}).setdefault(engine, {})[name] = 2 * m * k * n / seconds / 1e9
        del runners
    numpy_rates = _numpy_gemm(shapes, repeats)
    rates["fp32"]["numpy"] = numpy_rates["rates"]
    limits = {p: max(max(by_shape.values()) for by_shape in engines.values()) for p, engines in rates.items()}
    for precision, engines in rates.items():
        best_engine = max(engines, key=lambda e: max(engines[e].values()))
        log(
            f"  {precision} limit {limits[precision]:.0f} GFLOP/s ({best_engine}); "
            + ", ".join(f"{e} {min(r.values()):.0f}-{max(r.values()):.0f}" for e, r in engines.items())
        )
    return {
        "shapes": {k: list(v) for k, v in shapes.items()},
        "rates": rates,
        "limits": limits,
        "numpy_blas": numpy_rates["blas"],
    }


# --- one denoiser call per engine -------------------------------------------------------------

VARIANTS = {  # name -> (engine, precision); "low" is the device's native low precision
    "eager-reference": ("reference", "low"),
    "eager-reference-fp32": ("reference", "fp32"),
    "torch-fp32": ("torch", "fp32"),
    "torch-low": ("torch", "low"),
    "onnxruntime-fp32": ("onnxruntime", "fp32"),
    "openvino-fp32": ("openvino", "fp32"),
    "openvino-low": ("openvino", "low"),
    "openvino-fp32-static": ("openvino-static", "fp32"),
    "openvino-low-static": ("openvino-static", "low"),
}


def _export_denoiser(spec: ModelSpec, model: Denoiser) -> tuple[Path, object]:
    """The fp32 ONNX export of a model in a scratch folder (checked by the bench's own error figures)."""
    from copgen_rt.export.onnx import export_models

    folder = Path(tempfile.mkdtemp(prefix="copgen-bench-onnx-"))
    manifest = export_models(spec, model, {}, folder, weights={}, random_weights=True, check="none")
    return folder, manifest.component("denoiser")


def _build_variant(variant: str, spec: ModelSpec, models: dict, export: Callable[[], tuple], device: str):
    """(backend, precision) for one variant; None where this machine cannot run it."""
    engine, precision = VARIANTS[variant]
    low = choose(device).dtype
    if precision == "low":
        if engine.startswith("openvino") and low != "bf16" or low == "fp32":
            return None
        precision = low
    if engine == "reference":
        return ReferenceStyleDenoiser(
            models["fp32"], "autocast" if precision != "fp32" else "fp32"
        ), precision
    if engine == "torch":
        if precision not in models:
            models[precision] = random_denoiser(
                spec, device, {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
            )
        return TorchDenoiser(models[precision]), precision
    if device != "cpu":
        return None
    if engine == "onnxruntime":
        from copgen_rt.backends.onnxruntime_backend import OrtDenoiser

        folder, component = export()
        return OrtDenoiser(
            folder / component.file, [t.name for t in component.inputs], [t.name for t in component.outputs]
        ), precision
    try:
        from copgen_rt.backends.openvino_backend import OpenVinoDenoiser, require_openvino

        require_openvino()
    except ImportError:
        return None
    folder, component = export()
    return OpenVinoDenoiser.of_component(folder, component, precision,
                                         static_batch=engine == "openvino-static"), precision


def _call_error(out: list, ref: list) -> float:
    a, b = (torch.cat([t.double().flatten() for t in ts]) for ts in (out, ref))
    return float((a - b).norm() / b.norm())


def bench_denoiser(
    spec: ModelSpec, device: str, batches: list[int], variants: list[str], limits: dict, repeats: int, log
) -> list[dict]:
    """Each variant once per round, `repeats` rounds after a warm-up round (which also measures
    the first call, compile included for the static-batch variants): minima, interleaved."""
    rows = []
    flops = denoiser_flops(spec)
    models = {"fp32": random_denoiser(spec, device, torch.float32)}
    exported: list = []

    def export():  # once per spec
        if not exported:
            exported.append(_export_denoiser(spec, models["fp32"]))
        return exported[0]

    built = {}
    for variant in variants:
        t = time.perf_counter()
        made = _build_variant(variant, spec, models, export, device)
        if made is not None:
            built[variant] = (*made, time.perf_counter() - t)
    for batch in batches:
        latents, times = _inputs(spec, batch, device)
        reference = TorchDenoiser(models["fp32"])(latents, times)
        best: dict[str, float] = {}
        first: dict[str, float] = {}
        errors: dict[str, float] = {}
        for round_ in range(repeats + 1):
            for variant, (fn, _precision, _) in built.items():
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                t = time.perf_counter()
                out = fn(latents, times)
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - t
                if round_ == 0:
                    first[variant], errors[variant] = seconds, _call_error(out, reference)
                else:
                    best[variant] = min(best.get(variant, math.inf), seconds)
        for variant, (_fn, precision, build_s) in built.items():
            seconds = best[variant]
            rate = flops * batch / seconds / 1e9
            limit = limits.get(precision, limits["fp32"])
            row = {
                "spec": spec.name,
                "variant": variant,
                "precision": precision,
                "batch": batch,
                "ms": seconds * 1e3,
                "gflops": rate,
                "fraction_of_limit": rate / limit,
                "rel_err_vs_fp32": errors[variant],
                "first_call_s": first[variant],
                "build_s": build_s,
            }
            log(
                f"  {spec.name:<12} {variant:<22} b{batch:<3} {seconds * 1e3:9.1f} ms  {rate:7.1f} GFLOP/s  "
                f"{rate / limit:5.0%} of {precision} limit  err {errors[variant]:.1e}  build {build_s:.1f} s"
            )
            rows.append(row)
    if exported:
        shutil.rmtree(exported[0][0], ignore_errors=True)
    return rows


def _times(ratio: float | None) -> str:
    return f"{ratio:.2f}x" if ratio is not None else "-"


def bench_presets(spec: ModelSpec, device: str, batch: int, log,
                  reference_presets: tuple[str, ...] = ("exact", "fast")) -> list[dict]:
    """Whole tiles (all modalities generated from an S2 L2A condition, final latents) per preset with
    the automatic engine, and the reference-style eager execution on the same tiles for
    `reference_presets`."""
    from copgen_rt.pipeline import Pipeline
    from copgen_rt.provenance import Provenance

    model = random_denoiser(spec, device, torch.float32)
    auto = _auto_denoiser(spec, model, device)
    engines = {"auto": auto, "eager-reference": ReferenceStyleDenoiser(model)}
    cond = [n for n in spec.names if n.startswith("S2L2A")] + ["3d_cartesian_lat_lon"]
    gen = [n for n in spec.names if n not in cond]
    g = torch.Generator().manual_seed(3)
    latents = {n: torch.randn(batch, *spec.modality(n).latent_shape, generator=g) for n in cond}
    rows: list[dict[str, Any]] = []
    exact = None
    for preset in ("exact", "fast", "draft"):
        for engine, denoiser in engines.items():
            if engine != "auto" and preset not in reference_presets:
                continue
            pipe = Pipeline(spec, denoiser, provenance=Provenance(spec.name, random=True), device=device)
            result: dict[str, torch.Tensor] = {}

            def run(pipe=pipe, result=result, preset=preset):
                result.update(pipe.generate(gen, latents, conditions_are_latents=True, preset=preset,
                                            seed=list(range(batch)), decode=False))

            seconds = _time(run, repeats=1, warmup=0)
            flat = torch.cat([result[n].flatten(1) for n in gen], 1)
            exact = flat if exact is None else exact
            drift = float((flat - exact).norm() / exact.norm())
            row = {
                "spec": spec.name,
                "engine": engine,
                "engine_detail": getattr(denoiser, "name", "?"),
                "preset": preset,
                "batch": batch,
                "seconds_per_tile": seconds / batch,
                "drift_from_exact": drift,
            }
            log(
                f"  {spec.name:<12} {engine:<16} preset {preset:<6} {seconds / batch:8.2f} s/tile  "
                f"drift from auto exact {drift:.2e}"
            )
            rows.append(row)
    auto_exact = rows[0]["seconds_per_tile"]
    for row in rows:
        row["speedup_vs_auto_exact"] = auto_exact / row["seconds_per_tile"]
        ref = next((r for r in rows if r["engine"] == "eager-reference" and r["preset"] == row["preset"]),
                   None)
        row["speedup_vs_reference"] = ref["seconds_per_tile"] / row["seconds_per_tile"] if ref else None
    return rows


def _auto_denoiser(spec: ModelSpec, model: Denoiser, device: str):
    """The denoiser on the automatic engine of this device (copgen_rt.device.choose_engine)."""
    from copgen_rt.device import choose_engine

    choice = choose_engine(device)
    if choice.denoiser == "openvino":
        from copgen_rt.backends.openvino_backend import OpenVinoDenoiser

        folder, component = _export_denoiser(spec, model)
        return OpenVinoDenoiser.of_component(folder, component, choice.dtype)
    low = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[choice.dtype]
    return TorchDenoiser(random_denoiser(spec, device, low))


SCENE_SCRIPT = r"""
import json, time
from pathlib import Path
import numpy as np, torch
from copgen_rt.bench import peak_rss_mb, scene_pipeline
from copgen_rt.scenes.inputs.open import open_input
from copgen_rt.scenes.job import SceneJob, SceneOptions
from copgen_rt.scenes.run import run_scene
from copgen_rt.scenes.synthetic import smooth_s2, write_raster
side = {side}
tmp = Path({tmp!r})
path = write_raster(tmp / f"scene{{side}}.tif", smooth_s2(side, side))
pipe, timers = scene_pipeline({spec!r}, {device!r}, {engine!r}, tmp / "weights")
opts = SceneOptions(preset={preset!r}, batch_size={batch}, overwrite=True)
job = SceneJob(pipe.spec, [open_input(path)], tmp / f"out{{side}}-{engine}", opts)
t = time.perf_counter(); result = run_scene(job, pipe); wall = time.perf_counter() - t
print(json.dumps({{"side_px": side, "tiles": result.tiles, "wall_s": wall, "denoiser_s": timers["denoiser"],
                   "vae_s": timers["vae"], "peak_rss_mb": peak_rss_mb(),
                   "km2": (side * 10 / 1000) ** 2, "engine_detail": timers["engine"],
                   "compiles": timers.get("compiles")}}))
"""


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), MB. Not getrusage's ru_maxrss, which a child
    inherits from its parent across fork and exec, so that it would report the bench's own peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scene_pipeline(spec_name: str, device: str, engine: str, weights: Path):
    """A pipeline with random weights (written to `weights` once) whose denoiser and VAE calls are
    timed. engine "auto": what `infer` runs by default (Pipeline.from_weights, every VAE loaded,
    exported and compiled before the clock starts); "eager-reference": the reference's execution
    (fp32 weights under autocast) with torch fp32 VAEs."""
    from copgen_rt.backends import TorchVAE
    from copgen_rt.pipeline import Pipeline
    from copgen_rt.provenance import Provenance
    from copgen_rt.weights import load_autoencoder, make_random_weights, read_checkpoint, resolve_weights

    spec = mid_spec() if spec_name == "copgen-mid" else specs.get(spec_name)
    if not (weights / "weights.json").exists():
        make_random_weights(spec, weights)
    files = resolve_weights(spec, weights)
    timers: dict = {"denoiser": 0.0, "vae": 0.0}
    if engine == "auto":
        assert files.denoiser is not None  # make_random_weights wrote it
        loaded = Pipeline.from_weights(spec, files.denoiser, vaes=dict(files.vaes), device=device,
                                       dtype="auto")
        inner, vaes = loaded.denoiser, {m.name: loaded.vae(m.name) for m in spec.modalities if m.vae}
        timers["engine"] = loaded.engines.describe() if loaded.engines else "?"
        if "copgen_rt.backends.openvino_backend" in sys.modules:
            timers["compiles"] = sys.modules["copgen_rt.backends.openvino_backend"].STATS.compiles
    else:
        assert files.denoiser is not None
        inner = ReferenceStyleDenoiser(load_denoiser(spec, read_checkpoint(files.denoiser), device))
        vaes = {
            m.name: TorchVAE(load_autoencoder(spec, m.name, read_checkpoint(files.vaes[m.vae]), device))
            for m in spec.modalities
            if m.vae
        }
        timers["engine"] = "eager-reference (autocast) denoiser, torch fp32 VAEs"

    class TimedDenoiser:
        name = inner.name

        def __call__(self, latents: list[torch.Tensor], timesteps: list[torch.Tensor]) -> list[torch.Tensor]:
            t = time.perf_counter()
            out = inner(latents, timesteps)
            timers["denoiser"] += time.perf_counter() - t
            return out

    class TimedVAE:
        name = "timed"

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

    pipe = Pipeline(
        spec,
        TimedDenoiser(),
        lambda modality: TimedVAE(vaes[modality]),
        Provenance(spec.name, random=True),
        device,
    )
    return pipe, timers


def bench_scene(spec_name: str, device: str, engines: list[str], preset: str, batch: int, sides: list[int],
                log, compare_sides: int | None = None) -> list[dict]:
    """Each scene size with each engine, one subprocess each, engines alternating; the engines
    after the first run only on the first `compare_sides` sizes (default: all)."""
    import os

    rows = []
    with tempfile.TemporaryDirectory(prefix="copgen-bench-scene-") as tmp:
        for k, side in enumerate(sides):
            for engine in engines if compare_sides is None or k < compare_sides else engines[:1]:
                code = SCENE_SCRIPT.format(
                    side=side,
                    tmp=tmp,
                    spec=spec_name,
                    device=device,
                    engine=engine,
                    preset=preset,
                    batch=batch,
                )
                out = subprocess.run(
                    [sys.executable, "-c", code],
                    capture_output=True,
                    text=True,
                    check=True,
                    env=dict(os.environ),
                )
                row = json.loads(out.stdout.strip().splitlines()[-1])
                row.update(
                    {
                        "spec": spec_name,
                        "preset": preset,
                        "engine": engine,
                        "network_share": (row["denoiser_s"] + row["vae_s"]) / row["wall_s"],
                        "km2_per_s": row["km2"] / row["wall_s"],
                    }
                )
                log(
                    f"  scene {side}x{side} px ({row['tiles']} tiles, {spec_name}, {preset}, {engine}): "
                    f"{row['wall_s']:.1f} s, network {row['network_share']:.1%}, "
                    f"{row['km2_per_s']:.3f} km2/s, peak RSS {row['peak_rss_mb']:.0f} MB"
                )
                rows.append(row)
    for row in rows:
        ref = next((r for r in rows if r["side_px"] == row["side_px"] and r["engine"] == engines[-1]), None)
        row["speedup_vs_" + engines[-1]] = row["km2_per_s"] / ref["km2_per_s"] if ref else None
    return rows


def _load() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "uptime unavailable"


def environment(device: str) -> dict:
    import numpy

    from copgen_rt.device import choose_engine, cpu_flags

    env = {
        "copgen_rt": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "device": device,
        "precision_choice": choose(device).describe(),
        "engine_choice": choose_engine(device).describe(),
        "cpu_isa": sorted(f for f in cpu_flags() if f.startswith(("avx512", "amx", "avx2", "fma"))),
    }
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name()
    from copgen_rt.export.onnx import runtime_versions

    return env | runtime_versions()


def auto_variant(device: str) -> str:
    """The VARIANTS name of what `infer` runs by default on this device."""
    from copgen_rt.backends.openvino_backend import STATIC_BATCH_PRECISIONS
    from copgen_rt.device import choose_engine

    choice = choose_engine(device)
    precision = "fp32" if choice.dtype == "fp32" else "low"
    if choice.denoiser == "openvino":
        return f"openvino-{precision}" + ("-static" if choice.dtype in STATIC_BATCH_PRECISIONS else "")
    return f"torch-{precision}"


def check_targets(results: dict, device: str) -> list[dict]:
    """The issue-18 targets, each with its measured value: met or missed."""
    base = {r["variant"]: r for r in results["denoiser"] if r["spec"] == "copgen-base"}
    auto = auto_variant(device)
    targets = []

    def add(name: str, value: float | None, goal: float, unit: str = "x") -> None:
        if value is not None:
            targets.append({"target": name, "value": value, "goal": goal, "met": value >= goal, "unit": unit})

    ratio = lambda a, b: base[b]["ms"] / base[a]["ms"] if a in base and b in base else None  # noqa: E731
    add(
        f"automatic engine ({auto}) vs the reference's CPU default, per call",
        ratio(auto, "eager-reference"),
        1.5,
    )
    if auto in base:
        add(
            "automatic engine, fraction of the same precision's GEMM limit",
            base[auto]["fraction_of_limit"],
            0.85,
            "",
        )
    from copgen_rt.backends.openvino_backend import STATIC_BATCH_PRECISIONS

    fp32 = "openvino-fp32" + ("-static" if "fp32" in STATIC_BATCH_PRECISIONS else "")
    add(f"fp32 ({fp32}) vs the reference's fp32, per call", ratio(fp32, "eager-reference-fp32"), 1.8)
    scenes = results.get("scenes", [])
    for row in (r for r in scenes if r["engine"] == "auto"):
        add(
            f"scene {row['side_px']} px, automatic engine vs reference-style eager, km2/s",
            row.get("speedup_vs_eager-reference"),
            1.4,
        )
        add(
            f"scene {row['side_px']} px, automatic engine, share of wall time in network calls",
            row["network_share"],
            0.95,
            "",
        )
    later = [r for r in scenes if r["engine"] == "auto"][1:]
    if later and later[0].get("compiles") is not None:
        targets.append(
            {
                "target": "a second run compiles nothing (compiles in the second auto scene process)",
                "value": later[0]["compiles"],
                "goal": 0,
                "met": later[0]["compiles"] == 0,
                "unit": "",
            }
        )
    return targets


def run(out_dir: Path, device: str = "cpu", quick: bool = False, log=print, base_only: bool = False) -> dict:
    """The default run (about 30 minutes on our busy 2-core CPU); `quick` is a smoke test on the
    tiny model; `base_only` skips the tiny and mid-size per-call tables."""
    import os

    choice = choose(device)
    log(choice.describe())
    demo, mid, base = specs.get("copgen-demo"), mid_spec(), specs.get("copgen-base")
    results: dict = {"environment": environment(device), "load_before": _load()}
    log(results["environment"]["engine_choice"])
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
        if quick:  # the static-batch variants compile once more each: left out of the smoke test
            results["denoiser"] += bench_denoiser(
                demo, device, [2], [v for v in everything if "static" not in v], limits, 1, log
            )
        else:
            if not base_only:
                results["denoiser"] += bench_denoiser(demo, device, [1, 4], everything, limits, 3, log)
                results["denoiser"] += bench_denoiser(mid, device, [1, 4], everything, limits, 2, log)
            results["denoiser"] += bench_denoiser(
                base, device, [2], [v for v in everything if v != "onnxruntime-fp32"], limits, 2, log
            )
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
    results["load_after"] = _load()
    results["targets"] = check_targets(results, device)
    for t in results["targets"]:
        verdict = "met   " if t["met"] else "MISSED"
        log(f"  {verdict} {t['target']}: {t['value']:.2f}{t['unit']} (goal {t['goal']}{t['unit']})")
    write_reports(results, out_dir)
    return results


def write_reports(results: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    env = results["environment"]
    tag = "".join(c if c.isalnum() else "-" for c in env.get("gpu") or env["cpu"]).strip("-").lower()
    stem = out_dir / f"bench-{tag}"
    write_text(stem.with_suffix(".json"), json.dumps(results, indent=1) + "\n")
    gemm = results["gemm"]
    lines = [
        f"# copgen-rt bench ({env['cpu']}, {env['device']}, {env['threads']} threads)",
        "",
        f"Engine choice: {env['engine_choice']}",
        "",
        f"Machine load (shared machine; compare ratios within this run): before `{results['load_before']}`, "
        f"after `{results['load_after']}`.",
        "",
        "GEMM limit per precision (best of every engine at the shapes "
        f"{', '.join(f'{k} {v[0]}x{v[1]}x{v[2]}' for k, v in gemm['shapes'].items())}), GFLOP/s:",
        "",
        "| precision | limit | " + " | ".join(["engine: min-max over shapes"]) + " |",
        "|---|---|---|",
    ]
    for precision, engines in gemm["rates"].items():
        detail = ", ".join(f"{e} {min(r.values()):.0f}-{max(r.values()):.0f}" for e, r in engines.items())
        lines.append(f"| {precision} | {gemm['limits'][precision]:.0f} | {detail} |")
    lines += [
        "",
        f"numpy BLAS: {gemm.get('numpy_blas')}",
        "",
        "| spec | variant | precision | batch | ms | GFLOP/s | of limit | rel. err vs fp32 | build s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["denoiser"]:
        lines.append(
            f"| {r['spec']} | {r['variant']} | {r['precision']} | {r['batch']} | {r['ms']:.1f} | "
            f"{r['gflops']:.1f} | {r['fraction_of_limit']:.0%} | {r['rel_err_vs_fp32']:.1e} | "
            f"{r['build_s']:.1f} |"
        )
    lines += [
        "",
        "| spec | engine | preset | s/tile | vs auto exact | vs reference, same preset | "
        "drift from auto exact |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["presets"]:
        vs_ref = _times(r['speedup_vs_reference'])
        lines.append(
            f"| {r['spec']} | {r['engine']} | {r['preset']} | {r['seconds_per_tile']:.2f} | "
            f"{r['speedup_vs_auto_exact']:.2f}x | {vs_ref} | {r['drift_from_exact']:.1e} |"
        )
    lines += [
        "",
        "| scene | engine | tiles | wall s | network share | km2/s | vs reference | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["scenes"]:
        lines.append(
            f"| {r['side_px']} px ({r['spec']}, {r['preset']}) | {r['engine']} | {r['tiles']} | "
            f"{r['wall_s']:.1f} | {r['network_share']:.1%} | {r['km2_per_s']:.3f} | "
            f"{_times(r['speedup_vs_eager-reference'])} | {r['peak_rss_mb']:.0f} |"
        )
    lines += ["", "| target | measured | goal | |", "|---|---|---|---|"]
    for t in results.get("targets", []):
        lines.append(
            f"| {t['target']} | {t['value']:.2f}{t['unit']} | {t['goal']}{t['unit']} | "
            f"{'met' if t['met'] else '**missed**'} |"
        )
    lines += [""] + [f"Note: {note}" for note in results.get("notes", [])]
    write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    write_text(stem.with_suffix(".svg"), _svg_bars(results["denoiser"]))
    return stem


def _svg_bars(rows: list[dict]) -> str:
    """Fraction of the GEMM limit per (spec, variant, batch) as a horizontal bar chart."""
    height = 22 * len(rows) + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="760" height="{height}" font-family="sans-serif" '
        'font-size="12">',
        '<text x="10" y="18">denoiser forward: fraction of the GEMM limit of its precision</text>',
    ]
    for i, r in enumerate(rows):
        y = 30 + 22 * i
        width = max(1.0, 400 * min(r["fraction_of_limit"], 1.5))
        parts.append(f'<text x="10" y="{y + 14}">{r["spec"]} {r["variant"]} b{r["batch"]}</text>')
        parts.append(f'<rect x="320" y="{y}" width="{width:.0f}" height="16" fill="#4a7ab5"/>')
        parts.append(f'<text x="{325 + width:.0f}" y="{y + 13}">{r["fraction_of_limit"]:.0%}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
