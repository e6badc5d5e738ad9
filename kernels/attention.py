"""Flash-style attention forward that reads q, k and v straight from the fused qkv projection.

What is fused, and why: the torch path splits the qkv Linear output with a permute, runs SDPA,
then transposes and copies the result back to (B, L, D) for the proj Linear. Here one kernel does
all of it. It indexes q, k and v inside the (B, L, 3 * H * D) tensor through its strides, computes
QK^T, an online (running max / running sum) softmax and PV block by block, and writes
(B, L, H * D) in the layout the proj Linear reads. Neither the L x L scores nor any transposed copy
of q, k or v is ever materialised.

Numerics: scores, softmax statistics and the output accumulator are fp32 for every input dtype.
For fp16/bf16 the probabilities are rounded to the input dtype before the PV product, as in
FlashAttention, so that both products run on tensor cores. fp32 inputs use IEEE fp32 products
(not TF32).

Shapes: any sequence length (the last key block and the last query block are masked) and any
head_dim up to 128. The head dim is padded inside the kernel to the next power of two (at least
16) with masked loads: 72 runs as 128. The caller's tensors are never padded.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from copgen_rt.kernels._runtime import interpreting

LOG2E = math.log2(math.e)
MAX_HEAD_DIM = 128
DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def all_configs() -> list[triton.Config]:
    """Every GPU launch configuration the autotuner may try (before the per-target pruning)."""
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
            for m, n, w, s in ((128, 64, 8, 3), (128, 32, 4, 3), (64, 64, 4, 3), (64, 32, 4, 2))]


def config_name(cfg: triton.Config) -> str:
    return f"M{cfg.kwargs['BLOCK_M']} N{cfg.kwargs['BLOCK_N']} w{cfg.num_warps} s{cfg.num_stages}"


def block_d(head_dim: int) -> int:
    """The head dim as the kernel runs it: the next power of two, at least 16 (tl.dot's minimum)."""
    return max(16, triton.next_power_of_2(head_dim))


def _configs() -> list[triton.Config]:
    if interpreting():  # a few large numpy programs; no CUDA timing for autotuning
        return [triton.Config({"BLOCK_M": 128, "BLOCK_N": 128})]
    return all_configs()


# Configs left out of the autotune list on a compute capability, by (BLOCK_D, element bytes of q/k/v):
# the ones that spill registers or cannot run there when compiled ahead of time at the copgen
# base/large/huge shapes (benchmarks/triton_aot.py prints this table; benchmarks/results/
# triton-aot.md). fp16 and bf16 compile to the same tensor-core shapes (2 bytes). With fp32 inputs
# (4 bytes, IEEE fp32 dots lowered to FMAs) every config spills on every target, down to 16 x 16
# tiles on one warp: there only the configs that cannot run at all (shared memory over the sm_80/87
# per-block limit) are left out; fp32 on the GPU is the reference path, bf16 the fast one.
# sm_90 keeps every config.
_SM8X_UNFIT = {(64, 2): frozenset({"M128 N32 w4 s3"}),
               (128, 2): frozenset({"M128 N32 w4 s3", "M64 N32 w4 s2", "M64 N64 w4 s3"}),
               (128, 4): frozenset({"M128 N64 w8 s3", "M64 N64 w4 s3"})}
UNFIT: dict[tuple[int, int], dict[tuple[int, int], frozenset[str]]] = {(8, 0): _SM8X_UNFIT,
                                                                      (8, 7): _SM8X_UNFIT}


def fits(cfg: triton.Config, capability: tuple[int, int], head_block: int, element_bytes: int) -> bool:
    """Whether `cfg` stays in the autotune list on a GPU of this compute capability."""
    unfit = UNFIT.get((capability[0], capability[1]), {}).get((head_block, element_bytes), frozenset())
    return config_name(cfg) not in unfit


def _prune_for_target(configs: list[triton.Config], named_args: dict,
                      **kwargs: object) -> list[triton.Config]:
    """Triton's early_config_prune: the configs that fit this GPU (at least one, the smallest)."""
    qkv = named_args["qkv_ptr"]
    capability = torch.cuda.get_device_capability(qkv.device)
    head_block = int(kwargs.get("BLOCK_D", named_args.get("BLOCK_D", 0)))  # type: ignore[call-overload]
    kept = [c for c in configs if fits(c, capability, head_block, qkv.element_size())]
    return kept or configs[-1:]


@triton.jit
def _dot(a, b, acc, UPCAST: tl.constexpr):
    """acc + a @ b (just a @ b when acc is None) with fp32 accumulation.

    UPCAST works around the Triton interpreter, which multiplies bfloat16 bit patterns as
    integers. Widening bf16 to fp32 is exact, so the products are the same as on a GPU.
    """
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision="ieee")


@triton.jit
def _attend_block(acc, m_i, l_i, q, kt_ptrs, v_ptrs, start_n, seq_len, stride_l, qk_scale,
                  offs_n, d_mask, MASK_KEYS: tl.constexpr, UPCAST: tl.constexpr):
    """Fold one block of keys/values into the running (acc, max, sum) of the online softmax."""
    keys = start_n + offs_n
    if MASK_KEYS:
        key_ok = keys < seq_len
        kt = tl.load(kt_ptrs + start_n * stride_l, mask=d_mask[:, None] & key_ok[None, :], other=0.0)
        v = tl.load(v_ptrs + start_n * stride_l, mask=key_ok[:, None] & d_mask[None, :], other=0.0)
    else:
        kt = tl.load(kt_ptrs + start_n * stride_l, mask=d_mask[:, None], other=0.0)
        v = tl.load(v_ptrs + start_n * stride_l, mask=d_mask[None, :], other=0.0)
    s = _dot(q, kt, None, UPCAST) * qk_scale
    if MASK_KEYS:
        s = tl.where(key_ok[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    p = tl.exp2(s - m_new[:, None])  # qk_scale carries log2(e)
    alpha = tl.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = _dot(p.to(v.dtype), v, acc * alpha[:, None], UPCAST)
    return acc, m_new, l_i


@triton.autotune(configs=_configs(), key=["seq_len", "batch", "num_heads", "HEAD_DIM"],
                 prune_configs_by=None if interpreting() else {"early_config_prune": _prune_for_target})
@triton.jit
def _attention_fwd(qkv_ptr, out_ptr, seq_len, batch, num_heads, qk_scale,
                   s_qkv_b, s_qkv_l, s_qkv_f, s_out_b, s_out_l, s_out_f,
                   HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, UPCAST: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """One (query block, sample * head) program.

    `batch` is only an autotuning key: the best tile size depends on how many programs there are
    to fill the GPU.
    """
    sample = tl.program_id(1) // num_heads
    head = tl.program_id(1) % num_heads
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_DIM
    row_mask = offs_m < seq_len

    # feature layout of the qkv Linear output: (3, heads, head_dim)
    q_base = qkv_ptr + sample.to(tl.int64) * s_qkv_b + head * HEAD_DIM * s_qkv_f
    k_base = q_base + num_heads * HEAD_DIM * s_qkv_f
    v_base = k_base + num_heads * HEAD_DIM * s_qkv_f
    q = tl.load(q_base + offs_m[:, None] * s_qkv_l + offs_d[None, :] * s_qkv_f,
                mask=row_mask[:, None] & d_mask[None, :], other=0.0)
    kt_ptrs = k_base + offs_d[:, None] * s_qkv_f + offs_n[None, :] * s_qkv_l  # K^T tile
    v_ptrs = v_base + offs_n[:, None] * s_qkv_l + offs_d[None, :] * s_qkv_f

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    full_end = (seq_len // BLOCK_N) * BLOCK_N
    for start_n in range(0, full_end, BLOCK_N):
        acc, m_i, l_i = _attend_block(acc, m_i, l_i, q, kt_ptrs, v_ptrs, start_n, seq_len, s_qkv_l,
                                      qk_scale, offs_n, d_mask, False, UPCAST)
    if full_end < seq_len:
        acc, m_i, l_i = _attend_block(acc, m_i, l_i, q, kt_ptrs, v_ptrs, full_end, seq_len, s_qkv_l,
                                      qk_scale, offs_n, d_mask, True, UPCAST)

    out = acc / l_i[:, None]
    out_ptrs = (out_ptr + sample.to(tl.int64) * s_out_b + offs_m[:, None] * s_out_l
                + (head * HEAD_DIM + offs_d[None, :]) * s_out_f)
    tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=row_mask[:, None] & d_mask[None, :])


def attention_from_qkv(qkv: Tensor, num_heads: int, out: Tensor | None = None) -> Tensor:
    """softmax(q k^T / sqrt(head_dim)) v for every head, read from the qkv Linear output.

    qkv: (B, L, 3 * num_heads * head_dim) with feature layout (3, heads, head_dim), any strides,
    fp16/bf16/fp32. Returns (B, L, num_heads * head_dim) in qkv's dtype with head-major features,
    the torch model's `sdpa(q, k, v).transpose(1, 2).reshape(B, L, D)`. `out` may be a
    preallocated tensor of that shape and dtype.
    """
    if qkv.dim() != 3 or qkv.shape[-1] % (3 * num_heads):
        raise ValueError(f"qkv must be (B, L, 3 * {num_heads} * head_dim), got {tuple(qkv.shape)}")
    if qkv.dtype not in DTYPES:
        raise TypeError(f"attention supports {DTYPES}, got {qkv.dtype}")
    batch, seq_len, features = qkv.shape
    head_dim = features // (3 * num_heads)
    if head_dim > MAX_HEAD_DIM:
        raise ValueError(f"head_dim {head_dim} > {MAX_HEAD_DIM} is not supported")
    shape = (batch, seq_len, num_heads * head_dim)
    if out is None:
        out = qkv.new_empty(shape)
    elif tuple(out.shape) != shape or out.dtype != qkv.dtype:
        raise ValueError(f"out must be {shape} {qkv.dtype}, got {tuple(out.shape)} {out.dtype}")

    def grid(meta: dict) -> tuple[int, int]:
        return triton.cdiv(seq_len, meta["BLOCK_M"]), batch * num_heads

    _attention_fwd[grid](
        qkv, out, seq_len, batch, num_heads, head_dim ** -0.5 * LOG2E, *qkv.stride(), *out.stride(),
        HEAD_DIM=head_dim, BLOCK_D=block_d(head_dim),
        UPCAST=interpreting() and qkv.dtype == torch.bfloat16)
    return out
