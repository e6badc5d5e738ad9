"""copgen-rt: a production runtime for the COP-GEN family of multimodal diffusion models.

The public names load on first use, so that `copgen-rt` (and `import copgen_rt.__main__`) can
handle signals before torch is imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = ["Autoencoder", "Denoiser", "Pipeline", "RandomWeightsWarning", "specs", "__version__"]
_LAZY = {"Autoencoder": "copgen_rt.models", "Denoiser": "copgen_rt.models", "Pipeline": "copgen_rt.pipeline",
         "specs": "copgen_rt.specs", "RandomWeightsWarning": "copgen_rt.weights"}

if TYPE_CHECKING:
    from copgen_rt import specs
    from copgen_rt.models import Autoencoder, Denoiser
    from copgen_rt.pipeline import Pipeline
    from copgen_rt.weights import RandomWeightsWarning


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'copgen_rt' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    return module if name == "specs" else getattr(module, name)
