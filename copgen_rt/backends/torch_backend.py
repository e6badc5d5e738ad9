"""Eager PyTorch execution of the models, in the pipeline's device and precision."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from copgen_rt.backends.base import Engine
from copgen_rt.models import Autoencoder, Denoiser

if TYPE_CHECKING:
    from copgen_rt.specs import ModelSpec


class TorchDenoiser:
    name = "torch"

    def __init__(self, model: Denoiser):
        self.model = model
        self.forward: Callable[[list[Tensor], list[Tensor]], list[Tensor]] = model
        weight = model.mid_block.attn.qkv.weight  # every block has the model's device and dtype
        self.device, self.dtype = weight.device, weight.dtype

    @torch.inference_mode()
    def __call__(self, latents: list[Tensor], timesteps: list[Tensor]) -> list[Tensor]:
        low = self.dtype != torch.float32  # matmuls in low precision, norms and residuals fp32
        # no autocast weight cache: weights are stored in low precision already, and the cache
        # must be off for CUDA graph capture
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=low, cache_enabled=False):
            out = self.forward([x.to(self.device, torch.float32) for x in latents],
                             [t.to(self.device, torch.float32) for t in timesteps])
        return [o.float() for o in out]


class ReferenceStyleDenoiser:
    """Executes the way the reference implementation does, as a benchmark baseline: fp32 weights
    under `torch.autocast` with the device's default low precision (bf16 on CPU, fp16 on CUDA),
    weights cast at every call; `precision="fp32"` is its autocast-disabled path."""

    name = "eager-reference"

    def __init__(self, model: Denoiser, precision: str = "autocast"):
        self.model = model.float()
        self.device = next(model.parameters()).device
        self.autocast = precision == "autocast"

    @torch.inference_mode()
    def __call__(self, latents: list[Tensor], timesteps: list[Tensor]) -> list[Tensor]:
        with torch.autocast(self.device.type, enabled=self.autocast):
            out = self.model([x.to(self.device) for x in latents], [t.to(self.device) for t in timesteps])
        return [o.float() for o in out]


class TorchVAE:
    name = "torch"

    def __init__(self, model: Autoencoder):
        self.model = model
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.scale_factor = model.scale_factor

    @torch.inference_mode()
    def encode_moments(self, x: Tensor) -> Tensor:
        return self.model.encode_moments(x.to(self.device, self.dtype)).float()

    @torch.inference_mode()
    def decode(self, z: Tensor) -> Tensor:
        return self.model.decode(z.to(self.device, self.dtype)).float()


def _vae(spec: ModelSpec, key: str, vae: Autoencoder, checkpoint: Path, dtype: str) -> TorchVAE:
    return TorchVAE(vae)  # loaded in `dtype` already


ENGINE = Engine("torch", devices=("cpu", "cuda"), dtypes=("fp32", "fp16", "bf16"),
                vae_dtypes=("fp32", "fp16", "bf16"), make_denoiser=TorchDenoiser, make_vae=_vae)
