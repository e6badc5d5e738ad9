"""Scaled dot-product attention, the one form every model here uses."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(head_dim)) v over (..., tokens, head_dim) tensors.

    torch runs `F.scaled_dot_product_attention` (its fused kernels). An ONNX export writes
    `softmax((q * scale) @ k^T) @ v` with the scale a constant: torch's own export of
    scaled_dot_product_attention scales q and k^T by square roots computed from the shape, between
    k's Transpose and the MatMul, and OpenVINO then runs that Transpose as a node of its own in
    every attention instead of folding it into the MatMul."""
    if torch.onnx.is_in_onnx_export():
        scale = 1 / math.sqrt(q.shape[-1])  # a Python number: a constant in the graph
        return torch.softmax((q * scale) @ k.transpose(-2, -1), dim=-1) @ v
    return F.scaled_dot_product_attention(q, k, v)
