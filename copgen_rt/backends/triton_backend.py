"""The denoiser forward with the Triton kernels of `copgen_rt.kernels` (backend name "triton").

Each transformer block runs as follows; the Linear layers stay torch matmuls (cuBLAS):

    [out-blocks] skip_layernorm: split skip GEMM (no concat) + LayerNorm kernel
    qkv Linear -> attention_from_qkv (reads q/k/v in place, no permutes, no L x L scores)
    proj Linear -> add_layernorm (residual add + LN2 in one pass)
    fc1 GEMM without bias -> bias_gelu (bias + exact GELU, in place)
    fc2 Linear -> add_layernorm (residual add + LN3 in one pass)

The final LayerNorm uses the same kernel. The embedding (patch convs, time tokens, pos_embed) and
the prediction heads are the model's own `Denoiser.embed` and `Denoiser.heads`.

Precision follows TorchDenoiser. Matmuls and attention run in the dtype of the model's Linear
weights. The residual stream, LayerNorm statistics and LayerNorm outputs are fp32. With bf16/fp16
weights, each LayerNorm kernel also writes the bf16/fp16 copy that the next Linear reads, which
does autocast's cast in the same pass.

Importing this module needs no Triton. Constructing the backend without Triton raises an
ImportError that says how to install it.
"""

from __future__ import annotations

from types import ModuleType
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from copgen_rt.backends.base import Engine
from copgen_rt.models import Denoiser
from copgen_rt.models.denoiser import Block

# (fp32 residual stream, its copy in the matmul dtype; the same tensor when that is fp32)
Stream = tuple[Tensor, Tensor]


def _kernels() -> ModuleType:
    """copgen_rt.kernels, or an ImportError that says how to get Triton."""
    try:
        import copgen_rt.kernels as kernels
    except ImportError as err:
        raise ImportError("the triton denoiser backend needs Triton (pip install 'copgen-rt[gpu]'): "
                          f"{err}") from err
    return kernels


class TritonDenoiser:
    """Same call as TorchDenoiser: lists in canonical modality order, float32 in and out."""

    name = "triton"

    def __init__(self, model: Denoiser):
        self.kernels = _kernels()
        from copgen_rt.kernels._runtime import interpreting

        weight = model.mid_block.attn.qkv.weight
        if weight.device.type != "cuda" and not interpreting():
            raise RuntimeError(f"the triton backend needs the model on a CUDA GPU, not {weight.device} "
                               "(TRITON_INTERPRET=1 runs the kernels on CPU, slowly, for testing)")
        self.model = model
        self.device, self.dtype = weight.device, weight.dtype

    @torch.inference_mode()
    def __call__(self, latents: list[Tensor], timesteps: list[Tensor]) -> list[Tensor]:
        m = self.model
        x = m.embed([x.to(self.device) for x in latents],
                    [t.to(self.device, torch.float32) for t in timesteps])
        stream = (x, x.to(self.dtype))
        skips = []
        for blk in m.in_blocks:
            stream = self._block(cast(Block, blk), stream)
            skips.append(stream[1])
        stream = self._block(m.mid_block, stream)
        for blk in m.out_blocks:
            stream = self._block(cast(Block, blk), stream, skips.pop())
        _, x = self._layernorm(stream[0], None, m.norm)
        return m.heads(x)

    def _outputs(self, like: Tensor) -> tuple[Tensor, Tensor | None]:
        """A new fp32 stream tensor and, under mixed precision, one for its matmul-dtype copy."""
        out = torch.empty(like.shape, dtype=torch.float32, device=like.device)
        if self.dtype == torch.float32:
            return out, None
        return out, torch.empty(like.shape, dtype=self.dtype, device=like.device)

    def _layernorm(self, x: Tensor, y: Tensor | None, norm: nn.LayerNorm) -> Stream:
        """LN(x + y) as a new stream; the matmul-dtype copy comes out of the same kernel."""
        out, low = self._outputs(x)
        self.kernels.add_layernorm(x, y, norm.weight, norm.bias, norm.eps, out=out, copy_to=low)
        return out, out if low is None else low

    def _skip_layernorm(self, blk: Block, x_low: Tensor, skip: Tensor | None) -> Stream:
        """LN1(skip_linear(cat[x, skip])) as a new stream, from the matmul-dtype x and skip."""
        if blk.skip_linear is None or skip is None:
            raise ValueError("an out-block needs the skip tokens of its in-block")
        out, low = self._outputs(x_low)
        self.kernels.skip_layernorm(x_low, skip, blk.skip_linear.weight, blk.skip_linear.bias,
                                    blk.norm1.weight, blk.norm1.bias, blk.norm1.eps, out=out, copy_to=low)
        return out, out if low is None else low

    def _block(self, blk: Block, stream: Stream, skip: Tensor | None = None) -> Stream:
        k = self.kernels
        x, x_low = self._skip_layernorm(blk, stream[1], skip) if blk.skip_linear is not None else stream
        attn = blk.attn
        qkv = F.linear(x_low, attn.qkv.weight, attn.qkv.bias)
        h = F.linear(k.attention_from_qkv(qkv, attn.num_heads), attn.proj.weight, attn.proj.bias)
        x, x_low = self._layernorm(x, h, blk.norm2)
        mlp = blk.mlp
        h = F.linear(x_low, mlp.fc1.weight)
        h = F.linear(k.bias_gelu(h, mlp.fc1.bias, out=h), mlp.fc2.weight, mlp.fc2.bias)
        return self._layernorm(x, h, blk.norm3)


ENGINE = Engine("triton", devices=("cuda",), dtypes=("fp32", "fp16", "bf16"), requires="triton",
                install="pip install 'copgen-rt[gpu]'", make_denoiser=TritonDenoiser)
