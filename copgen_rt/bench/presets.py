"""Full tiles per preset (exact / fast / draft) with the automatic engine, their drift from exact
on the same noise, and the reference-style eager execution on the same tiles."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from copgen_rt.backends import DenoiserBackend, scratch_denoiser
from copgen_rt.backends.torch_backend import ReferenceStyleDenoiser
from copgen_rt.bench.models import random_denoiser, scratch_folder
from copgen_rt.bench.timing import timed
from copgen_rt.models import Denoiser
from copgen_rt.plan import resolve
from copgen_rt.specs import ModelSpec


def bench_presets(spec: ModelSpec, device: str, batch: int, log: Callable[[str], object],
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
            seconds, result = timed(functools.partial(
                pipe.generate, gen, latents, conditions_are_latents=True, preset=preset,
                seed=list(range(batch)), decode=False), device)
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


def _auto_denoiser(spec: ModelSpec, model: Denoiser, device: str) -> DenoiserBackend:
    """`model` on the engine `infer` runs by default on this device (on CPUs, the one `auto`
    measures fastest)."""
    plan = resolve(spec, device)
    return scratch_denoiser(plan.engines.denoiser, spec, model, plan.dtype, scratch_folder("bench-auto-"))
