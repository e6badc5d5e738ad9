"""copgen-rt: a production runtime for the COP-GEN family of multimodal diffusion models."""

__version__ = "0.1.0"  # first: modules imported below read it

from copgen_rt import specs  # noqa: E402
from copgen_rt.models import Autoencoder, Denoiser  # noqa: E402
from copgen_rt.pipeline import Pipeline  # noqa: E402
from copgen_rt.weights import RandomWeightsWarning  # noqa: E402

__all__ = ["Autoencoder", "Denoiser", "Pipeline", "RandomWeightsWarning", "specs", "__version__"]
