"""The denoiser through `torch.compile` (inductor) with freezing: the eager torch backend's graph
with its weights folded into constants and prepacked for oneDNN (AMX or AVX512-BF16 where the
CPU has them) and its pointwise ops fused into the surrounding kernels.

Compiled on the first call of each batch size (static shapes); inductor keeps what it compiled
under `<cache>/inductor/` (unless TORCHINDUCTOR_CACHE_DIR says otherwise), so a later process
compiles faster. Needs a C++ compiler on CPUs: without one the first call raises.
"""

from __future__ import annotations

import os

import torch

from copgen_rt.backends.base import Engine
from copgen_rt.backends.export_cache import cache_root
from copgen_rt.backends.torch_backend import TorchDenoiser
from copgen_rt.models import Denoiser

# set before this module loaded; else every engine points inductor at the cache root of its time (a
# bench's scratch cache is removed when the bench ends)
_INDUCTOR_CACHE_OF_THE_USER = os.environ.get("TORCHINDUCTOR_CACHE_DIR")


class CompiledTorchDenoiser(TorchDenoiser):
    name = "torch-compile"

    def __init__(self, model: Denoiser):
        super().__init__(model)
        if _INDUCTOR_CACHE_OF_THE_USER is None:  # inductor reads it when it compiles
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_root() / "inductor")
        # a scene's batches take a few sizes (full batches, the last one, a split after OOM):
        # recompiling for each stays far below dynamo's limit, and static shapes are faster
        self.forward = torch.compile(model, options={"freezing": True}, dynamic=False)


ENGINE = Engine("torch-compile", devices=("cpu",), dtypes=("fp32", "bf16"),
                make_denoiser=CompiledTorchDenoiser)
