"""LayerNorm fused with what the post-LN U-ViT does right before and right after it.

Every block of the denoiser ends its two sublayers with `LN(x + sublayer(x))`, and out-blocks
start with `LN(skip_linear(cat[x, skip]))`. Under mixed precision the residual stream x is fp32,
the sublayer output is bf16/fp16, and the next Linear needs a bf16/fp16 copy of the normalised
result. Unfused, that is an add kernel, a LayerNorm kernel and a cast kernel, and each writes a full
tensor that the next one reads back (plus a concat copy for the skip).

`add_layernorm` reads x and y once (each in its own dtype) and keeps the row in registers. It
computes fp32 mean and variance, normalises, applies the affine weight and bias and, optionally, a
per-sample modulation `* (1 + scale) + shift` (adaLN-style). It then writes the result once, plus
optionally a second copy in another dtype: the input of the next Linear. The sum is never rounded
to a storage dtype before the statistics.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from copgen_rt.kernels._runtime import interpreting


@triton.jit
def _layernorm_rows(x_ptr, y_ptr, w_ptr, b_ptr, scale_ptr, shift_ptr, out_ptr, copy_ptr,
                    n_rows, dim, rows_per_sample, eps, s_x, s_y, s_scale, s_shift,
                    HAS_Y: tl.constexpr, HAS_MOD: tl.constexpr, HAS_COPY: tl.constexpr,
                    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """BLOCK_R rows per program, each whole row in registers; outputs are contiguous."""
    rows = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols < dim
    mask = (rows < n_rows)[:, None] & col_ok[None, :]

    h = tl.load(x_ptr + rows[:, None] * s_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_Y:
        h += tl.load(y_ptr + rows[:, None] * s_y + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(h, 1) / dim
    centered = tl.where(mask, h - mean[:, None], 0.0)
    rstd = tl.math.rsqrt(tl.sum(centered * centered, 1) / dim + eps)
    w = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    out = centered * rstd[:, None] * w[None, :] + b[None, :]
    if HAS_MOD:
        sample = rows // rows_per_sample
        scale = tl.load(scale_ptr + sample[:, None] * s_scale + cols[None, :], mask=mask, other=0.0)
        shift = tl.load(shift_ptr + sample[:, None] * s_shift + cols[None, :], mask=mask, other=0.0)
        out = out * (1.0 + scale.to(tl.float32)) + shift.to(tl.float32)
    offs = rows[:, None] * dim + cols[None, :]
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)
    if HAS_COPY:
        tl.store(copy_ptr + offs, out.to(copy_ptr.dtype.element_ty), mask=mask)


def _rows(t: Tensor, dim: int) -> Tensor:
    """(..., dim) -> (rows, dim) with unit feature stride (a view whenever possible)."""
    t = t.reshape(-1, dim)
    return t if t.stride(-1) == 1 else t.contiguous()


def _check_output(t: Tensor, x: Tensor, name: str) -> None:
    if t.shape != x.shape or not t.is_contiguous() or not t.is_floating_point():
        raise ValueError(f"{name} must be a contiguous floating-point {tuple(x.shape)} tensor, "
                         f"got {tuple(t.shape)} {t.dtype}")


def _launch(dim: int) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_D, num_warps): ~4k elements per GPU program, ~64k per interpreter program."""
    block_d = triton.next_power_of_2(dim)
    elements = 1 << 16 if interpreting() else 1 << 12
    block_r = max(1, elements // block_d)
    return block_r, block_d, min(16, max(4, block_r * block_d // 512))


def add_layernorm(x: Tensor, y: Tensor | None, weight: Tensor, bias: Tensor, eps: float = 1e-5,
                  scale: Tensor | None = None, shift: Tensor | None = None, *,
                  out: Tensor | None = None, copy_to: Tensor | None = None) -> Tensor:
    """LN(x + y) * weight + bias over the last dim in one pass; y=None normalises x alone.

    With `scale` and `shift` (both (B, D), B = x.shape[0]) the result is further modulated per
    sample as `LN(x + y) * (1 + scale) + shift` in the same kernel. x, y and the parameters may
    have different float dtypes; statistics are fp32. `out` (default: new, x's dtype) may be any
    preallocated contiguous float tensor of x's shape. `copy_to`, if given, receives the same
    result in its own dtype: under mixed precision, the bf16 input of the next Linear, written in
    the same pass instead of by a separate cast kernel. Returns `out`.
    """
    if (scale is None) != (shift is None):
        raise ValueError("scale and shift go together")
    if y is not None and y.shape != x.shape:
        raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} differ")
    dim = x.shape[-1]
    if weight.shape != (dim,) or bias.shape != (dim,):
        raise ValueError(f"weight and bias must be ({dim},)")
    x2 = _rows(x, dim)
    y2 = x2 if y is None else _rows(y, dim)
    n_rows = x2.shape[0]
    samples = 1
    if scale is not None and shift is not None:  # both or neither, checked above
        samples = x.shape[0]
        if x.dim() < 2 or scale.shape != (samples, dim) or shift.shape != (samples, dim):
            raise ValueError(f"scale and shift must be ({samples}, {dim}) for x {tuple(x.shape)}")
        scale, shift = _rows(scale, dim), _rows(shift, dim)
    if out is None:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    _check_output(out, x, "out")
    if copy_to is not None:
        _check_output(copy_to, x, "copy_to")

    block_r, block_d, num_warps = _launch(dim)
    unread = weight  # placeholder pointer for the absent optional inputs (their loads are compiled out)
    _layernorm_rows[(triton.cdiv(n_rows, block_r),)](
        x2, y2, weight, bias, unread if scale is None else scale, unread if shift is None else shift,
        out, out if copy_to is None else copy_to, n_rows, dim, n_rows // samples, eps,
        x2.stride(0), y2.stride(0), 0 if scale is None else scale.stride(0),
        0 if shift is None else shift.stride(0),
        HAS_Y=y is not None, HAS_MOD=scale is not None, HAS_COPY=copy_to is not None,
        BLOCK_R=block_r, BLOCK_D=block_d, num_warps=num_warps)
    return out


def skip_layernorm(x: Tensor, skip: Tensor, linear_weight: Tensor, linear_bias: Tensor,
                   ln_weight: Tensor, ln_bias: Tensor, eps: float = 1e-5, *,
                   out: Tensor | None = None, copy_to: Tensor | None = None) -> Tensor:
    """Out-block entry LN(skip_linear(cat[x, skip])) without the concat.

    The GEMM stays in torch (x, skip and the weight share one dtype), split over the halves of the
    (D, 2D) weight: `bias + x W[:, :D]^T` is one addmm, and `+ skip W[:, D:]^T` is an in-place
    addmm on the same buffer. The weight halves are strided views, so nothing is copied. In
    bf16/fp16 the sum is rounded after each half (one more rounding than a single GEMM). The
    LayerNorm is the fused kernel above, with `out` and `copy_to` as in `add_layernorm`
    (default output: x's dtype).
    """
    dim = x.shape[-1]
    if skip.shape != x.shape or linear_weight.shape != (dim, 2 * dim):
        raise ValueError(f"x, skip {tuple(x.shape)}, {tuple(skip.shape)} and weight "
                         f"{tuple(linear_weight.shape)} do not match a ({dim}, {2 * dim}) skip_linear")
    h = torch.addmm(linear_bias, x.reshape(-1, dim), linear_weight[:, :dim].t())
    h.addmm_(skip.reshape(-1, dim), linear_weight[:, dim:].t())
    return add_layernorm(h.view(x.shape), None, ln_weight, ln_bias, eps, out=out, copy_to=copy_to)
