"""Triton kernels against PyTorch on a CUDA GPU, at COP-GEN's real shapes.

    python benchmarks/kernels_gpu.py

It first measures the GPU's bf16 matmul peak (a large torch.mm) and its device-to-device copy
bandwidth. Then, for copgen-base (d 1024, 16 heads of 64), copgen-large (d 1152, 16 heads of 72)
and copgen-huge (d 1536, 24 heads of 64), at 834 tokens and batch 1..64, it times:
  - attention (bf16): Triton `attention_from_qkv` vs SDPA (flash backend) vs eager softmax(QK^T)V;
  - residual + LayerNorm at the model's mixed precision (fp32 stream + bf16 sublayer output ->
    fp32 stream + bf16 copy for the next Linear), and a bf16 variant with per-sample modulation;
  - the out-block skip_linear + LayerNorm vs torch (cat, Linear, LayerNorm, cast);
  - bias + GELU alone, and with the fc1 GEMM (torch: addmm + gelu);
  - the whole denoiser forward, TorchDenoiser vs TritonDenoiser, with random weights from
    `copgen_rt.weights.random_state_dict` (via `copgen_rt.bench.models.random_denoiser`), loaded as the
    pipeline loads bf16 weights (bf16 matmuls, fp32 norms and residual stream).
Each kernel is also checked against an fp32 torch reference. The denoiser is checked in bf16 and
fp32 against the fp32 torch forward at batch 2. Results go to
benchmarks/results/kernels-<gpu>.json and .md. Compute-bound rows report TFLOP/s and the fraction
of the measured bf16 peak. Memory-bound rows report GB/s and the fraction of the measured copy
bandwidth. The script stops starting new measurements after BUDGET_S, so it ends within 10
minutes. It exits 1 if any check failed. Without a CUDA GPU it prints one line and exits 0.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

RESULTS = Path(__file__).parent / "results"
MODELS = ("copgen-base", "copgen-large", "copgen-huge")
BATCHES = (1, 2, 4, 8, 16, 32, 64)
CHECK_BATCH = 2
DEVICE = "cuda"
DTYPE = torch.bfloat16
BUDGET_S = float(os.environ.get("COPGEN_KERNEL_BENCH_BUDGET_S", 480.0))
# max |out - ref| / max |ref| against fp32 references
KERNEL_TOL = 2e-2
FP32_NET_TOL = 1e-4
START = time.monotonic()


def over_budget() -> bool:
    return time.monotonic() - START > BUDGET_S


def bench_ms(fn: Callable[[], object]) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=25, rep=100))


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-30))


def measure_ceilings() -> dict[str, float]:
    """Measured bf16 matmul peak (8192^3 torch.mm) and device-to-device copy bandwidth."""
    n = 8192
    a, b = (torch.randn(n, n, device=DEVICE, dtype=DTYPE) for _ in range(2))
    mm_ms = bench_ms(lambda: torch.mm(a, b))
    src = torch.empty(1 << 28, device=DEVICE, dtype=torch.uint8)
    dst = torch.empty_like(src)
    copy_ms = bench_ms(lambda: dst.copy_(src))
    return {"bf16_mm_tflops": 2 * n ** 3 / mm_ms / 1e9, "copy_gbps": 2 * src.numel() / copy_ms / 1e6}


class Report:
    """Rows of measurements and checks, plus the ceilings they are compared with."""

    def __init__(self, ceilings: dict[str, float]):
        self.ceilings = ceilings
        self.rows: list[dict] = []

    def timed(self, model: str, batch: int, op: str, impl: str, fn: Callable[[], object], *,
              flops: float | None = None, nbytes: float | None = None,
              err: float | None = None, tol: float | None = None) -> None:
        row = {"model": model, "batch": batch, "op": op, "impl": impl}
        if err is not None:
            row.update(max_rel_err=err, tol=tol, ok=err < tol)
        if over_budget():
            row["skipped"] = "timing skipped: time budget"
        else:
            ms = bench_ms(fn)
            row["ms"] = ms
            if flops is not None:
                row["tflops"] = flops / ms / 1e9
                row["frac_bf16_peak"] = row["tflops"] / self.ceilings["bf16_mm_tflops"]
            if nbytes is not None:
                row["gbps"] = nbytes / ms / 1e6
                row["frac_copy_bw"] = row["gbps"] / self.ceilings["copy_gbps"]
        self.rows.append(row)
        print(_row_line(row), flush=True)

    def check(self, model: str, batch: int, op: str, impl: str, err: float, tol: float | None) -> None:
        """An error row; with tol=None it is recorded for comparison only."""
        row = {"model": model, "batch": batch, "op": op, "impl": impl, "max_rel_err": err}
        if tol is not None:
            row.update(tol=tol, ok=err < tol)
        self.rows.append(row)
        print(_row_line(row), flush=True)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r.get("ok") is False]


def _fmt(row: dict, key: str, spec: str) -> str:
    return format(row[key], spec) if key in row else ""


def _row_line(row: dict) -> str:
    cells = [row["model"], str(row["batch"]), row["op"], row["impl"], _fmt(row, "ms", ".3f"),
             _fmt(row, "tflops", ".1f"), _fmt(row, "frac_bf16_peak", ".1%"), _fmt(row, "gbps", ".0f"),
             _fmt(row, "frac_copy_bw", ".1%"), _fmt(row, "max_rel_err", ".1e"),
             " ".join(filter(None, [{True: "ok", False: "FAIL"}.get(row.get("ok")), row.get("skipped")]))]
    return "| " + " | ".join(cells) + " |"


HEADER = ["model", "B", "op", "impl", "ms", "TFLOP/s", "% bf16 peak", "GB/s", "% copy BW",
          "max rel err", "check"]
TABLE_HEAD = "| " + " | ".join(HEADER) + " |\n|" + "---|" * len(HEADER)


def markdown(report: Report, device: str) -> str:
    c = report.ceilings
    lines = [f"# Triton kernels vs PyTorch on {device}", "",
             f"Measured ceilings: bf16 torch.mm 8192^3 = {c['bf16_mm_tflops']:.0f} TFLOP/s; "
             f"device copy = {c['copy_gbps']:.0f} GB/s. 834 tokens; kernels in bf16 unless the op "
             "says otherwise; no CUDA graphs (small batches include launch overhead).", "",
             TABLE_HEAD]
    return "\n".join(lines + [_row_line(r) for r in report.rows]) + "\n"


def bench_attention(report: Report, name: str, d: int, heads: int, batch: int, tokens: int) -> None:
    """Triton attention straight from a bf16 qkv tensor vs SDPA flash and eager attention."""
    from copgen_rt.kernels import attention_from_qkv

    head_dim = d // heads
    qkv = torch.randn(batch, tokens, 3 * d, device=DEVICE, dtype=DTYPE)
    q, k, v = qkv.view(batch, tokens, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    ref = ref.transpose(1, 2).reshape(batch, tokens, d)
    flops = 4 * batch * heads * tokens ** 2 * head_dim
    report.timed(name, batch, "attention", "triton", lambda: attention_from_qkv(qkv, heads), flops=flops,
                 err=rel_err(attention_from_qkv(qkv, heads), ref), tol=KERNEL_TOL)

    def flash() -> torch.Tensor:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v)

    def eager() -> torch.Tensor:
        return ((q @ k.transpose(-2, -1)) * head_dim ** -0.5).softmax(-1) @ v

    for impl, fn in (("torch sdpa flash", flash), ("torch eager", eager)):
        out = fn().transpose(1, 2).reshape(batch, tokens, d)
        report.timed(name, batch, "attention", impl, fn, flops=flops, err=rel_err(out, ref), tol=KERNEL_TOL)


def bench_layernorms(report: Report, name: str, d: int, batch: int, tokens: int) -> None:
    """The LayerNorm kernels at the model's mixed precision against the torch (autocast) path.

    In a block, add+LN takes the fp32 residual stream and a bf16 sublayer output and yields the
    fp32 stream plus the bf16 copy that the next Linear reads. Torch does the add, the LN and
    autocast's cast. skip_linear+LN starts from the bf16 x and skip.
    """
    from copgen_rt.kernels import add_layernorm, skip_layernorm

    randn = lambda *s, dtype=DTYPE: torch.randn(*s, device=DEVICE, dtype=dtype)  # noqa: E731
    shape, rows = (batch, tokens, d), batch * tokens
    x, y = randn(*shape, dtype=torch.float32), randn(*shape)
    w, b = 1 + 0.1 * randn(d, dtype=torch.float32), 0.1 * randn(d, dtype=torch.float32)

    def fused(fn: Callable[..., torch.Tensor], *args) -> tuple[torch.Tensor, torch.Tensor]:
        out, low = torch.empty(shape, device=DEVICE), torch.empty(shape, device=DEVICE, dtype=DTYPE)
        return fn(*args, out=out, copy_to=low), low

    def errs(outs: tuple[torch.Tensor, torch.Tensor], ref: torch.Tensor) -> float:
        return max(rel_err(o, ref) for o in outs)

    ref = F.layer_norm(x + y.float(), (d,), w, b)
    report.timed(name, batch, "add+LN (fp32 stream, bf16 copy)", "triton",
                 lambda: fused(add_layernorm, x, y, w, b), nbytes=rows * d * (4 + 2 + 4 + 2),
                 err=errs(fused(add_layernorm, x, y, w, b), ref), tol=KERNEL_TOL)
    report.timed(name, batch, "add+LN (fp32 stream, bf16 copy)", "torch",
                 lambda: F.layer_norm(x + y, (d,), w, b).to(DTYPE), nbytes=rows * d * (4 + 2 + 4 + 2))

    xb, wb, bb = x.to(DTYPE), w.to(DTYPE), b.to(DTYPE)
    scale, shift = 0.1 * randn(batch, d), 0.1 * randn(batch, d)
    ref = F.layer_norm(xb.float() + y.float(), (d,), wb.float(), bb.float())
    ref = ref * (1 + scale.float()[:, None]) + shift.float()[:, None]
    report.timed(name, batch, "add+LN+modulation (bf16)", "triton",
                 lambda: add_layernorm(xb, y, wb, bb, scale=scale, shift=shift), nbytes=rows * d * 2 * 3,
                 err=rel_err(add_layernorm(xb, y, wb, bb, scale=scale, shift=shift), ref), tol=KERNEL_TOL)
    report.timed(name, batch, "add+LN+modulation (bf16)", "torch",
                 lambda: F.layer_norm(xb + y, (d,), wb, bb) * (1 + scale[:, None]) + shift[:, None],
                 nbytes=rows * d * 2 * 3)

    skip_w, skip_b = randn(d, 2 * d) / math.sqrt(2 * d), 0.1 * randn(d)
    h = F.linear(torch.cat([xb, y], -1).float(), skip_w.float(), skip_b.float())
    ref = F.layer_norm(h, (d,), w, b)
    flops = 2 * rows * 2 * d * d
    report.timed(name, batch, "skip_linear+LN", "triton",
                 lambda: fused(skip_layernorm, xb, y, skip_w, skip_b, w, b), flops=flops,
                 err=errs(fused(skip_layernorm, xb, y, skip_w, skip_b, w, b), ref), tol=KERNEL_TOL)
    report.timed(name, batch, "skip_linear+LN", "torch",
                 lambda: F.layer_norm(F.linear(torch.cat([xb, y], -1), skip_w, skip_b).float(),
                                      (d,), w, b).to(DTYPE), flops=flops)


def bench_gelu(report: Report, name: str, d: int, batch: int, tokens: int) -> None:
    """bias + GELU alone (vs torch's add + gelu) and with the fc1 GEMM (vs addmm + gelu)."""
    from copgen_rt.kernels import bias_gelu

    rows = batch * tokens
    x = torch.randn(batch, tokens, d, device=DEVICE, dtype=DTYPE)
    fc1_w = torch.randn(4 * d, d, device=DEVICE, dtype=DTYPE) / math.sqrt(d)
    fc1_b = torch.randn(4 * d, device=DEVICE, dtype=DTYPE)
    hidden = F.linear(x, fc1_w)
    ref = F.gelu(hidden.float() + fc1_b.float())
    nbytes = 2 * hidden.numel() * hidden.element_size()
    report.timed(name, batch, "bias+GELU", "triton", lambda: bias_gelu(hidden, fc1_b), nbytes=nbytes,
                 err=rel_err(bias_gelu(hidden, fc1_b), ref), tol=KERNEL_TOL)
    report.timed(name, batch, "bias+GELU", "torch", lambda: F.gelu(hidden + fc1_b), nbytes=nbytes)

    def fc1_triton() -> torch.Tensor:
        h = F.linear(x, fc1_w)
        return bias_gelu(h, fc1_b, out=h)

    flops = 2 * rows * d * 4 * d
    report.timed(name, batch, "fc1+bias+GELU", "triton", fc1_triton, flops=flops)
    report.timed(name, batch, "fc1+bias+GELU", "torch", lambda: F.gelu(F.linear(x, fc1_w, fc1_b)),
                 flops=flops)


def random_inputs(spec, batch: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    latents = [torch.randn(batch, *m.latent_shape, device=DEVICE) for m in spec.modalities]
    timesteps = [torch.rand(batch, device=DEVICE) * 1000 for _ in spec.modalities]
    return latents, timesteps


def mean_rel_err(outs: list[torch.Tensor], refs: list[torch.Tensor]) -> float:
    """mean |out - ref| / mean |ref| over all outputs: a stable measure of low-precision drift."""
    out, ref = (torch.cat([t.float().flatten() for t in ts]) for ts in (outs, refs))
    return float((out - ref).abs().mean() / ref.abs().mean())


def bench_denoiser(report: Report, name: str) -> None:
    """Both backends at every batch, loaded as the pipeline loads them (bf16 matmuls, fp32 norms).

    Checks at CHECK_BATCH against the fp32 torch forward. In fp32, triton must agree to
    FP32_NET_TOL. In bf16, its mean drift must stay within 1.5x torch's own bf16 drift (+1e-3).
    """
    from copgen_rt import specs
    from copgen_rt.backends import TorchDenoiser
    from copgen_rt.backends.triton_backend import TritonDenoiser
    from copgen_rt.bench.models import denoiser_flops, random_denoiser

    spec = specs.get(name)
    model = random_denoiser(spec, DEVICE, torch.float32)  # weights.random_state_dict, seed 0
    latents, timesteps = random_inputs(spec, CHECK_BATCH)
    ref = TorchDenoiser(model)(latents, timesteps)
    out = TritonDenoiser(model)(latents, timesteps)
    report.check(name, CHECK_BATCH, "denoiser fp32 vs torch fp32", "triton",
                 max(rel_err(o, r) for o, r in zip(out, ref, strict=True)), FP32_NET_TOL)

    del model
    model = random_denoiser(spec, DEVICE, DTYPE)
    backends = {"torch": TorchDenoiser(model), "triton": TritonDenoiser(model)}
    drift = {impl: mean_rel_err(be(latents, timesteps), ref) for impl, be in backends.items()}
    report.check(name, CHECK_BATCH, "denoiser bf16 mean drift vs fp32", "torch", drift["torch"], None)
    report.check(name, CHECK_BATCH, "denoiser bf16 mean drift vs fp32", "triton", drift["triton"],
                 1.5 * drift["torch"] + 1e-3)

    for batch in BATCHES:
        latents, timesteps = random_inputs(spec, batch)
        for impl, be in backends.items():
            report.timed(name, batch, "denoiser forward", impl, functools.partial(be, latents, timesteps),
                         flops=batch * denoiser_flops(spec))


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing measured")
        return 0
    try:
        import triton
    except ImportError:
        print("Triton is not installed (pip install 'copgen-rt[gpu]'): nothing measured", file=sys.stderr)
        return 1
    from copgen_rt import specs

    device = torch.cuda.get_device_name()
    report = Report(measure_ceilings())
    print(f"{device}: bf16 mm {report.ceilings['bf16_mm_tflops']:.0f} TFLOP/s, "
          f"copy {report.ceilings['copy_gbps']:.0f} GB/s", flush=True)
    print(TABLE_HEAD, flush=True)
    with torch.inference_mode():
        for name in MODELS:
            cfg, tokens = specs.get(name).denoiser, specs.get(name).num_tokens
            for batch in BATCHES:
                bench_attention(report, name, cfg.embed_dim, cfg.num_heads, batch, tokens)
                bench_layernorms(report, name, cfg.embed_dim, batch, tokens)
                bench_gelu(report, name, cfg.embed_dim, batch, tokens)
                torch.cuda.empty_cache()
        for name in MODELS:
            if not over_budget():
                bench_denoiser(report, name)
            torch.cuda.empty_cache()

    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"kernels-{re.sub(r'[^a-z0-9]+', '-', device.lower()).strip('-')}"
    meta = {"device": device, "torch": torch.__version__, "triton": triton.__version__,
            "dtype": str(DTYPE), "budget_s": BUDGET_S, "elapsed_s": time.monotonic() - START}
    stem.with_suffix(".json").write_text(json.dumps(
        {**meta, "ceilings": report.ceilings, "rows": report.rows}, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(report, device))
    print(f"wrote {stem}.json and .md in {meta['elapsed_s']:.0f} s; {len(report.failed)} failed checks")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
