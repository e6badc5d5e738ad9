"""copgen-rt: a production runtime for the COP-GEN family of multimodal diffusion models."""

from copgen_rt import specs
from copgen_rt.models import Autoencoder, Denoiser
from copgen_rt.pipeline import Pipeline

__version__ = "0.1.0"
__all__ = ["Autoencoder", "Denoiser", "Pipeline", "specs", "__version__"]
