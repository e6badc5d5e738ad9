"""One denoiser call per engine and precision: ms, GFLOP/s, fraction of the precision's GEMM
limit, error vs fp32, against the reference-style eager execution."""

from __future__ import annotations

import functools
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch

from copgen_rt.backends import DenoiserBackend, TorchDenoiser, exported_denoiser, make_denoiser_backend
from copgen_rt.backends.torch_backend import ReferenceStyleDenoiser
from copgen_rt.bench.models import call_error, denoiser_flops, export_denoiser, random_denoiser
from copgen_rt.bench.timing import Rounds, interleaved
from copgen_rt.device import choose
from copgen_rt.export.manifest import Component
from copgen_rt.models import Denoiser
from copgen_rt.plan import resolve
from copgen_rt.specs import ModelSpec
from copgen_rt.tuning import Tuning, random_inputs

VARIANTS = {  # name -> (engine, precision); "low" is the device's native low precision
    "eager-reference": ("reference", "low"),
    "eager-reference-fp32": ("reference", "fp32"),
    "torch-fp32": ("torch", "fp32"),
    "torch-low": ("torch", "low"),
    "torch-compile-fp32": ("torch-compile", "fp32"),
    "torch-compile-low": ("torch-compile", "low"),
    "onnxruntime-fp32": ("onnxruntime", "fp32"),
    "openvino-fp32": ("openvino", "fp32"),
    "openvino-low": ("openvino", "low"),
    "openvino-fp32-static": ("openvino-static", "fp32"),
    "openvino-low-static": ("openvino-static", "low"),
}

# variant -> (backend, precision, seconds to build it)
Built = dict[str, tuple[DenoiserBackend, str, float]]


def auto_variant(device: str, spec: ModelSpec, dtype: str | None = None) -> tuple[str, Tuning | None]:
    """The VARIANTS name of what `infer` runs by default on this device for `spec` (at `dtype`),
    the engine `engine="auto"` measures fastest here (measured now where it was not yet), and
    that measurement."""
    from copgen_rt.backends.openvino_backend import STATIC_BATCH_PRECISIONS

    plan = resolve(spec, device, dtype=dtype)
    choice, measured = plan.engines, plan.tuning
    precision = "fp32" if choice.dtype == "fp32" else "low"
    if choice.denoiser == "openvino":
        static = "-static" if choice.dtype in STATIC_BATCH_PRECISIONS else ""
        return f"openvino-{precision}{static}", measured
    return f"{choice.denoiser}-{precision}", measured


def _build_variant(variant: str, spec: ModelSpec, models: dict[str, Denoiser],
                   export: Callable[[], tuple[Path, Component]],
                   device: str) -> tuple[DenoiserBackend, str] | None:
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
    if engine == "torch-compile" and device != "cpu":
        return None
    if engine in ("torch", "torch-compile"):
        if precision not in models:
            models[precision] = random_denoiser(
                spec, device, {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
            )
        return make_denoiser_backend(engine, models[precision]), precision
    if device != "cpu":
        return None
    if engine != "onnxruntime":
        try:
            from copgen_rt.backends.openvino_backend import require_openvino

            require_openvino()
        except ImportError:
            return None
    folder, component = export()
    return exported_denoiser("onnxruntime" if engine == "onnxruntime" else "openvino", folder, component,
                             precision, static_batch=engine == "openvino-static"), precision


def _measure_batch(built: Built, reference: Denoiser, spec: ModelSpec, batch: int, device: str,
                   repeats: int) -> tuple[Rounds[str], dict[str, float]]:
    """The variants interleaved at one batch, and each one's first-call error vs fp32 torch."""
    latents, times = random_inputs(spec, batch, device)
    expected = TorchDenoiser(reference)(latents, times)
    errors: dict[str, float] = {}

    def check(variant: str, out: list[torch.Tensor]) -> None:
        errors[variant] = call_error(out, expected)

    calls = {variant: functools.partial(fn, latents, times) for variant, (fn, _, _) in built.items()}
    return interleaved(calls, repeats, device, check), errors


def bench_denoiser(
    spec: ModelSpec, device: str, batches: list[int], variants: list[str], limits: dict, repeats: int,
    log: Callable[[str], object],
) -> list[dict]:
    """Each variant once per round, `repeats` rounds after a warm-up round (which also measures
    the first call, compile included for the static-batch variants): minima, interleaved."""
    rows = []
    flops = denoiser_flops(spec)
    models = {"fp32": random_denoiser(spec, device, torch.float32)}
    exported: list[tuple[Path, Component]] = []

    def export() -> tuple[Path, Component]:  # once per spec
        if not exported:
            exported.append(export_denoiser(spec, models["fp32"]))
        return exported[0]

    built: Built = {}
    for variant in variants:
        t = time.perf_counter()
        made = _build_variant(variant, spec, models, export, device)
        if made is not None:
            built[variant] = (*made, time.perf_counter() - t)
    for batch in batches:
        rounds, errors = _measure_batch(built, models["fp32"], spec, batch, device, repeats)
        for variant, (_fn, precision, build_s) in built.items():
            seconds = rounds.best(variant)
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
                "first_call_s": rounds.first[variant],
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
