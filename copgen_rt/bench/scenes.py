"""`infer` on a generated scene with the automatic engine and with reference-style eager: km2/s,
the share of wall time in network calls (denoiser and VAEs), and peak memory, each scene in a
subprocess of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from copgen_rt import specs
from copgen_rt.backends import DenoiserBackend, VAEBackend
from copgen_rt.backends.torch_backend import ReferenceStyleDenoiser
from copgen_rt.bench.models import mid_spec
from copgen_rt.weights import load_denoiser

if TYPE_CHECKING:
    from copgen_rt.pipeline import Pipeline

T = TypeVar("T")

SCENE_SCRIPT = r"""
import json, time
from pathlib import Path
import numpy as np, torch
from copgen_rt.bench.scenes import peak_rss_mb, scene_pipeline
from copgen_rt.scenes.inputs.open import open_input
from copgen_rt.scenes.job import SceneJob, SceneOptions
from copgen_rt.scenes.run import run_scene
from copgen_rt.scenes.synthetic import smooth_s2, write_raster
side = {side}
tmp = Path({tmp!r})
path = write_raster(tmp / f"scene{{side}}.tif", smooth_s2(side, side))
pipe, timers = scene_pipeline({spec!r}, {device!r}, {engine!r}, tmp / "weights")
# scene-anchored tiles: a scene of 4x the area has 4x the tiles (Earth-anchored ones add a margin of
# tiles that depends on where the scene lies), as in the results of earlier versions
opts = SceneOptions(preset={preset!r}, batch_size={batch}, overwrite=True, tiling="scene")
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


def _clocked(timers: dict[str, Any], key: str, fn: Callable[..., T], *args: object) -> T:
    """fn(*args), its wall time added to timers[key]."""
    t = time.perf_counter()
    out = fn(*args)
    timers[key] += time.perf_counter() - t
    return out


class _TimedDenoiser:
    def __init__(self, inner: DenoiserBackend, timers: dict[str, Any]):
        self.inner, self.timers, self.name = inner, timers, inner.name

    def __call__(self, latents: list[torch.Tensor], timesteps: list[torch.Tensor]) -> list[torch.Tensor]:
        return _clocked(self.timers, "denoiser", self.inner, latents, timesteps)


class _TimedVAE:
    name = "timed"

    def __init__(self, vae: VAEBackend, timers: dict[str, Any]):
        self.vae, self.timers = vae, timers

    def encode_moments(self, x: torch.Tensor) -> torch.Tensor:
        return _clocked(self.timers, "vae", self.vae.encode_moments, x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return _clocked(self.timers, "vae", self.vae.decode, z)


def scene_pipeline(spec_name: str, device: str, engine: str,
                   weights: Path) -> tuple[Pipeline, dict[str, Any]]:
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
    timers: dict[str, Any] = {"denoiser": 0.0, "vae": 0.0}
    assert files.denoiser is not None  # make_random_weights wrote it
    inner: DenoiserBackend
    vaes: dict[str, VAEBackend]
    if engine == "auto":
        loaded = Pipeline.from_weights(spec, files.denoiser, vaes=dict(files.vaes), device=device,
                                       dtype="auto")
        inner, vaes = loaded.denoiser, {m.name: loaded.vae(m.name) for m in spec.modalities if m.vae}
        timers["engine"] = loaded.plan.engines.describe() if loaded.plan else "?"
        if "copgen_rt.backends.openvino_backend" in sys.modules:
            timers["compiles"] = sys.modules["copgen_rt.backends.openvino_backend"].STATS.compiles
    else:
        inner = ReferenceStyleDenoiser(load_denoiser(spec, read_checkpoint(files.denoiser), device))
        vaes = {
            m.name: TorchVAE(load_autoencoder(spec, m.name, read_checkpoint(files.vaes[m.vae]), device))
            for m in spec.modalities
            if m.vae
        }
        timers["engine"] = "eager-reference (autocast) denoiser, torch fp32 VAEs"
    pipe = Pipeline(
        spec,
        _TimedDenoiser(inner, timers),
        lambda modality: _TimedVAE(vaes[modality], timers),
        Provenance(spec.name, random=True),
        device,
    )
    return pipe, timers


def bench_scene(spec_name: str, device: str, engines: list[str], preset: str, batch: int, sides: list[int],
                log: Callable[[str], object], compare_sides: int | None = None) -> list[dict]:
    """Each scene size with each engine, one subprocess each, engines alternating; the engines
    after the first run only on the first `compare_sides` sizes (default: all)."""
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
