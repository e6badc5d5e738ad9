"""Backends: one interface behind which each component runs.

A denoiser backend is called as `backend(latents, timesteps) -> list of eps` with lists in
canonical modality order, float32 in and out; a VAE backend has `encode_moments(x)` and
`decode(z)`. The sampler and pipeline only see these interfaces. Implementations: torch (eager),
triton (fused kernels), onnxruntime and tensorrt (exported components).
"""

from copgen_rt.backends.base import DenoiserBackend, VAEBackend
from copgen_rt.backends.torch_backend import TorchDenoiser, TorchVAE
from copgen_rt.models import Denoiser

DENOISER_BACKENDS = ("torch", "triton", "onnxruntime")


def make_denoiser_backend(name: str, model: Denoiser) -> DenoiserBackend:
    """A backend running a loaded `copgen_rt.Denoiser` (onnxruntime goes through an export)."""
    if name == "torch":
        return TorchDenoiser(model)
    if name == "triton":
        from copgen_rt.backends.triton_backend import TritonDenoiser

        return TritonDenoiser(model)
    raise ValueError(f"unknown denoiser backend {name!r}; choose {', '.join(DENOISER_BACKENDS)}")


__all__ = ["DenoiserBackend", "VAEBackend", "TorchDenoiser", "TorchVAE", "make_denoiser_backend"]
