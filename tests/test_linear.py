"""models.linear: the fused oneDNN form (bf16 weights on CPUs with bf16 units) against the plain
linear + GELU it replaces."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from copgen_rt.models import linear as linear_module
from copgen_rt.models.linear import linear

pytestmark = pytest.mark.skipif(not linear_module._onednn_bf16(),
                                reason="this CPU has no oneDNN bf16 support: the plain form runs")


@pytest.mark.parametrize("gelu", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_fused_matches_plain_in_bf16(monkeypatch, gelu, bias):
    calls = []
    real = torch.ops.mkldnn._linear_pointwise
    monkeypatch.setattr(linear_module.torch.ops.mkldnn, "_linear_pointwise",
                        lambda *a: calls.append(a[3]) or real(*a), raising=False)
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 96, bias=bias).to(torch.bfloat16)
    x = torch.randn(3, 10, 64)  # the fp32 residual stream, as the blocks pass it
    with torch.inference_mode():
        fused = linear(layer, x, gelu=gelu)
        exact = F.linear(x, layer.weight.float(), None if layer.bias is None else layer.bias.float())
        exact = F.gelu(exact) if gelu else exact
    assert calls == ["gelu" if gelu else "none"]
    assert fused.dtype == torch.bfloat16 and fused.shape == (3, 10, 96)
    # one bf16 rounding of x and of the output: within a few bf16 ulps of the fp32 result
    assert (fused.float() - exact).abs().max() <= 2e-2 * exact.abs().max()


def test_plain_form_where_fusion_does_not_apply():
    layer = torch.nn.Linear(8, 8)
    x = torch.randn(2, 8)
    with torch.inference_mode():  # fp32 weights: the parity path stays plain torch
        assert torch.equal(linear(layer, x, gelu=True), F.gelu(layer(x)))
    bf16 = layer.to(torch.bfloat16)
    assert not linear_module._fused_here(bf16.weight)  # gradients on: no fused op (it has no backward)
