"""Bias + exact (erf) GELU on the fc1 output, the epilogue of the MLP's first Linear.

What is fused, and why: the fc1 GEMM runs in torch without its bias (`x @ W^T`). This kernel then
adds the bias and applies `0.5 h (1 + erf(h / sqrt(2)))` in fp32, reading and writing the
(tokens, 4D) activation once. That is the same memory traffic as torch's `addmm` (bias in the
cuBLAS epilogue) followed by `F.gelu`, not less. The saving comes only when this epilogue moves into
the GEMM itself; that is not done here. The kernel keeps the exact erf GELU (cuBLASLt's GELU
epilogue is the tanh approximation, which the reference model does not use) and computes it in
fp32 for fp16/bf16 storage.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from copgen_rt.kernels._runtime import interpreting

SQRT1_2 = tl.constexpr(0.7071067811865476)


@triton.jit
def _bias_gelu_kernel(x_ptr, bias_ptr, out_ptr, n_rows, n_cols,
                      BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """A (BLOCK_R, BLOCK_C) tile: the bias is one vector load per tile, and no per-element modulo."""
    rows = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    col_ok = cols < n_cols
    mask = (rows < n_rows)[:, None] & col_ok[None, :]
    offs = rows[:, None] * n_cols + cols[None, :]
    bias = tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    h = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32) + bias[None, :]
    gelu = 0.5 * h * (1.0 + tl.math.erf(h * SQRT1_2))
    tl.store(out_ptr + offs, gelu.to(out_ptr.dtype.element_ty), mask=mask)


def _launch(n_cols: int) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_C, num_warps): ~4k elements per GPU program, ~64k per interpreter program."""
    block_c = min(triton.next_power_of_2(n_cols), 1024)
    elements = 1 << 16 if interpreting() else 1 << 12
    return max(1, elements // block_c), block_c, 8


def bias_gelu(x_without_bias: Tensor, bias: Tensor, out: Tensor | None = None) -> Tensor:
    """gelu(x + bias) with the exact erf GELU; bias (N,) broadcasts over x's last dim N.

    Returns a contiguous tensor of x's shape and dtype. `out` may be a preallocated contiguous
    tensor, including x itself for an in-place update.
    """
    n_cols = x_without_bias.shape[-1]
    if bias.shape != (n_cols,):
        raise ValueError(f"bias must be ({n_cols},), got {tuple(bias.shape)}")
    x = x_without_bias.contiguous()
    if out is None:
        out = torch.empty_like(x)
    elif out.shape != x.shape or out.dtype != x.dtype or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous {tuple(x.shape)} {x.dtype} tensor")
    n_rows = x.numel() // n_cols
    block_r, block_c, num_warps = _launch(n_cols)
    _bias_gelu_kernel[(triton.cdiv(n_rows, block_r), triton.cdiv(n_cols, block_c))](
        x, bias, out, n_rows, n_cols, BLOCK_R=block_r, BLOCK_C=block_c, num_warps=num_warps)
    return out
