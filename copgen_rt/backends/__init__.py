"""Backends: one interface behind which each component runs (torch here; export adds more).

A denoiser backend is called as `backend(latents, timesteps) -> list of eps` with lists in
canonical modality order, float32 in and out; a VAE backend has `encode_moments(x)` and
`decode(z)`. The sampler and pipeline only see these interfaces.
"""

from copgen_rt.backends.base import DenoiserBackend, VAEBackend
from copgen_rt.backends.torch_backend import TorchDenoiser, TorchVAE

__all__ = ["DenoiserBackend", "VAEBackend", "TorchDenoiser", "TorchVAE"]
