"""Backends: one interface behind which each component runs.

A denoiser backend is called as `backend(latents, timesteps) -> list of eps` with lists in
canonical modality order, float32 in and out; a VAE backend has `encode_moments(x)` and
`decode(z)`. The sampler and pipeline only see these interfaces. Implementations: torch (eager),
torch-compile (inductor), triton (fused kernels), onnxruntime, openvino and tensorrt (exported
components). Which engine
runs what is chosen in `copgen_rt.device.choose_engine`.
"""

from __future__ import annotations

from pathlib import Path

from copgen_rt.backends.base import DenoiserBackend, VAEBackend
from copgen_rt.backends.torch_backend import TorchDenoiser, TorchVAE
from copgen_rt.export.manifest import Component
from copgen_rt.models import Autoencoder, Denoiser
from copgen_rt.specs import ModelSpec

DENOISER_BACKENDS = ("torch", "torch-compile", "triton")


def make_denoiser_backend(name: str, model: Denoiser) -> DenoiserBackend:
    """A backend running a loaded `copgen_rt.Denoiser` (onnxruntime goes through an export)."""
    if name == "torch":
        return TorchDenoiser(model)
    if name == "torch-compile":
        from copgen_rt.backends.torch_compile_backend import CompiledTorchDenoiser

        return CompiledTorchDenoiser(model)
    if name == "triton":
        from copgen_rt.backends.triton_backend import TritonDenoiser

        return TritonDenoiser(model)
    raise ValueError(f"unknown denoiser backend {name!r}; choose {', '.join(DENOISER_BACKENDS)}")


def denoiser_backend(engine: str, spec: ModelSpec, model: Denoiser, checkpoint: Path, dtype: str,
                     cuda_graphs: bool = True) -> DenoiserBackend:
    """The denoiser on `engine` (see `copgen_rt.device.choose_engine`); exported engines export the
    (fp32) model on first use and run it in `dtype`."""
    if engine == "onnxruntime":
        from copgen_rt.backends.onnxruntime_backend import cached_onnx_denoiser

        return cached_onnx_denoiser(spec, model, checkpoint)
    if engine == "openvino":
        from copgen_rt.backends.openvino_backend import cached_denoiser

        return cached_denoiser(spec, model, checkpoint, dtype)
    backend = make_denoiser_backend(engine, model)
    if cuda_graphs and isinstance(backend, TorchDenoiser) and backend.device.type == "cuda":
        from copgen_rt.backends.cuda_graphs import CudaGraphDenoiser

        return CudaGraphDenoiser(backend)
    return backend


def exported_denoiser(engine: str, folder: Path, component: Component, dtype: str,
                      static_batch: bool | None = None) -> DenoiserBackend:
    """The denoiser component of an export folder on onnxruntime (fp32) or openvino (`dtype`;
    `static_batch` None: the precision's default)."""
    if engine == "openvino":
        from copgen_rt.backends.openvino_backend import OpenVinoDenoiser

        return OpenVinoDenoiser.of_component(folder, component, dtype, static_batch)
    from copgen_rt.backends.onnxruntime_backend import OrtDenoiser

    return OrtDenoiser(folder / component.file, [t.name for t in component.inputs],
                       [t.name for t in component.outputs])


def scratch_export(spec: ModelSpec, model: Denoiser, folder: Path) -> Component:
    """The fp32 ONNX export of an in-memory denoiser into `folder`, unchecked (for measurements,
    whose own error figures check it)."""
    from copgen_rt.export.onnx import export_models

    return export_models(spec, model, {}, folder, weights={}, random_weights=True,
                         check="none").component("denoiser")


def scratch_denoiser(engine: str, spec: ModelSpec, model: Denoiser, dtype: str, folder: Path
                     ) -> DenoiserBackend:
    """`engine` running an in-memory fp32 model in `dtype`, with no checkpoint behind it (engine
    measurements): exported engines export it into `folder`, the others run a copy in `dtype`."""
    if engine in EXPORTED_ENGINES:
        return exported_denoiser(engine, folder, scratch_export(spec, model, folder), dtype)
    from copgen_rt.weights import Checkpoint, load_denoiser, parse_dtype

    weights = Checkpoint(folder, dict(model.state_dict()))
    return make_denoiser_backend(engine, load_denoiser(spec, weights, next(model.parameters()).device,
                                                       parse_dtype(dtype)))


def vae_backend(engine: str, spec: ModelSpec, key: str, vae: Autoencoder, checkpoint: Path,
                dtype: str) -> VAEBackend:
    if engine == "onnxruntime":
        from copgen_rt.backends.onnxruntime_backend import cached_onnx_vae

        return cached_onnx_vae(spec, key, vae, checkpoint)
    if engine == "openvino":
        from copgen_rt.backends.openvino_backend import cached_vae

        return cached_vae(spec, key, vae, checkpoint, dtype)
    if engine != "torch":
        raise ValueError(f"unknown VAE backend {engine!r}; choose torch, onnxruntime or openvino")
    return TorchVAE(vae)


EXPORTED_ENGINES = ("onnxruntime", "openvino")  # run an fp32 ONNX export, whatever their precision

__all__ = ["DenoiserBackend", "VAEBackend", "TorchDenoiser", "TorchVAE", "make_denoiser_backend",
           "denoiser_backend", "exported_denoiser", "scratch_export", "scratch_denoiser", "vae_backend",
           "EXPORTED_ENGINES"]
