"""Linear layers, with GELU where the MLP has it: one form for every denoiser engine."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def linear(layer: nn.Linear, x: Tensor, gelu: bool = False) -> Tensor:
    """`layer(x)`, then GELU (erf) where `gelu`.

    With bf16 weights on a CPU with bf16 units (the torch engine; the caller's autocast), one
    oneDNN call adds the bias and applies GELU to the fp32 accumulator in the GEMM's epilogue. Eager
    `addmm` first copies the bias into its output, and GELU is another pass over the MLP's 4x-wide
    activations: 4% and 9% of a copgen-base call in two interleaved runs on an Intel Xeon with AMX.
    Exports and torch.compile trace the plain form, which they fuse themselves."""
    if _fused_here(layer.weight):
        low = layer.weight.dtype
        return torch.ops.mkldnn._linear_pointwise(x.to(low), layer.weight, layer.bias,
                                                  "gelu" if gelu else "none", [], "none" if gelu else "")
    y = layer(x)  # the module call, not F.linear: exports name their nodes by module scope
    return F.gelu(y) if gelu else y


def _fused_here(weight: Tensor) -> bool:
    return (weight.dtype == torch.bfloat16 and weight.device.type == "cpu" and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling() and not torch.onnx.is_in_onnx_export()
            and _onednn_bf16())


@functools.cache
def _onednn_bf16() -> bool:
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
