"""Triton kernels for the denoiser (installed as `copgen_rt.kernels`).

attention_from_qkv: flash-style attention read straight from the fused qkv projection output.
add_layernorm / skip_layernorm: residual add (or split skip GEMM) + LayerNorm (+ modulation).
bias_gelu: bias + exact-erf GELU epilogue of the MLP's fc1.
"""

from copgen_rt.kernels.attention import attention_from_qkv
from copgen_rt.kernels.gelu import bias_gelu
from copgen_rt.kernels.layernorm import add_layernorm, skip_layernorm

__all__ = ["attention_from_qkv", "add_layernorm", "skip_layernorm", "bias_gelu"]
