"""The networks: the U-ViT denoiser and the KL autoencoder, both built from spec data."""

from copgen_rt.models.autoencoder import Autoencoder
from copgen_rt.models.denoiser import Denoiser

__all__ = ["Autoencoder", "Denoiser"]
