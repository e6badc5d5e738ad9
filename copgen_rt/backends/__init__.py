"""Backends: one interface behind which each component runs (`base`), built by the engine that
`copgen_rt.plan` chose for it from the records in `registry`.

A denoiser backend is called as `backend(latents, timesteps) -> list of eps` with lists in
canonical modality order, float32 in and out; a VAE backend has `encode_moments(x)` and
`decode(z)`. The sampler and pipeline only see these interfaces; nothing here branches on an
engine's name.
"""

from __future__ import annotations

from pathlib import Path

from copgen_rt.backends.base import DenoiserBackend, Engine, VAEBackend
from copgen_rt.backends.registry import ENGINES, engine
from copgen_rt.backends.torch_backend import TorchDenoiser, TorchVAE
from copgen_rt.export.manifest import Component
from copgen_rt.models import Autoencoder, Denoiser
from copgen_rt.specs import ModelSpec


def make_denoiser_backend(name: str, model: Denoiser) -> DenoiserBackend:
    """A backend running a loaded `copgen_rt.Denoiser` on an engine that runs the module."""
    build = engine(name).make_denoiser
    if build is None:
        runs = ", ".join(e.name for e in ENGINES.values() if e.make_denoiser is not None)
        raise ValueError(f"the {name} engine runs an export, not a module; choose {runs}")
    return build(model)


def denoiser_backend(name: str, spec: ModelSpec, model: Denoiser, checkpoint: Path, dtype: str,
                     cuda_graphs: bool = True) -> DenoiserBackend:
    """The denoiser on engine `name`: exported engines export the (fp32) model once per
    checkpoint and run it in `dtype`; on CUDA the torch module replays CUDA graphs."""
    chosen = engine(name)
    if chosen.cached_denoiser is not None:
        return chosen.cached_denoiser(spec, model, checkpoint, dtype)
    backend = make_denoiser_backend(name, model)
    if cuda_graphs and isinstance(backend, TorchDenoiser) and backend.device.type == "cuda":
        from copgen_rt.backends.cuda_graphs import CudaGraphDenoiser

        return CudaGraphDenoiser(backend)
    return backend


def exported_denoiser(name: str, folder: Path, component: Component, dtype: str,
                      static_batch: bool | None = None) -> DenoiserBackend:
    """The denoiser component of an export folder on engine `name` (`static_batch` None: the
    engine's default for `dtype`)."""
    build = engine(name).component_denoiser
    if build is None:
        raise ValueError(f"the {name} engine does not run exports")
    return build(folder, component, dtype, static_batch)


def scratch_export(spec: ModelSpec, model: Denoiser, folder: Path) -> Component:
    """The fp32 ONNX export of an in-memory denoiser into `folder`, unchecked (for measurements,
    whose own error figures check it)."""
    from copgen_rt.export.onnx import export_models

    return export_models(spec, model, {}, folder, weights={}, random_weights=True,
                         check="none").component("denoiser")


def scratch_denoiser(name: str, spec: ModelSpec, model: Denoiser, dtype: str, folder: Path
                     ) -> DenoiserBackend:
    """Engine `name` running an in-memory fp32 model in `dtype`, with no checkpoint behind it
    (engine measurements): exported engines export it into `folder`, the others run a copy in
    `dtype`."""
    if engine(name).exported:
        return exported_denoiser(name, folder, scratch_export(spec, model, folder), dtype)
    from copgen_rt.weights import Checkpoint, load_denoiser, parse_dtype

    weights = Checkpoint(folder, dict(model.state_dict()))
    return make_denoiser_backend(name, load_denoiser(spec, weights, next(model.parameters()).device,
                                                     parse_dtype(dtype)))


def vae_backend(name: str, spec: ModelSpec, key: str, vae: Autoencoder, checkpoint: Path,
                dtype: str) -> VAEBackend:
    build = engine(name).make_vae
    if build is None:
        raise ValueError(f"the {name} engine runs the denoiser only")
    return build(spec, key, vae, checkpoint, dtype)


__all__ = ["DenoiserBackend", "VAEBackend", "Engine", "ENGINES", "engine", "TorchDenoiser", "TorchVAE",
           "make_denoiser_backend", "denoiser_backend", "exported_denoiser", "scratch_export",
           "scratch_denoiser", "vae_backend"]
