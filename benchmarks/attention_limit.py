"""How far the best CPU attention is from what this CPU's units allow, at the denoiser's shapes
(issue 23: attention at the matrix units).

    python benchmarks/attention_limit.py [--spec copgen-base] [--batch 2]

One attention of the model (batch x heads x tokens x head_dim, bf16) costs two GEMMs (Q K^T and
P V, 4 * batch * heads * tokens^2 * head_dim FLOPs) and one exp per score (batch * heads * tokens^2).
Measured in one process, interleaved, best of the rounds:
- torch's fused attention (`F.scaled_dot_product_attention`, what the torch engine runs);
- the same unfused: per sample and group of HEAD_GROUP heads, a bf16 batched GEMM for the scores
  (the matrix units), softmax, and a bf16 batched GEMM for P V (does going around the fused
  kernel reach the units faster?);
- `flex_attention` compiled by inductor (its C++ CPU template, brgemm on the matrix units);
- the bf16 GEMM rate of a large square product (torch; the matrix units where the CPU has them);
- the exp rate: `torch.exp` over a block of scores that stays in cache, on every thread.
The lower bound is the GEMMs at that rate plus the exps at that rate (the max, sum and scaling
passes count as free); the fused kernel's distance to it is what a better kernel could win.
JSON and markdown under benchmarks/results/, named by CPU.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import flex_attention

from copgen_rt import specs
from copgen_rt.bench.environment import cpu_tag, machine_load
from copgen_rt.bench.gemm import matmul_peak
from copgen_rt.bench.timing import interleaved
from copgen_rt.device import cpu_name
from copgen_rt.files import write_text

ROUNDS = 9
EXP_BLOCK = 32 * 1024  # scores per exp call: 128 KiB of fp32, in L2 on every CPU we run on
HEAD_GROUP = 4  # heads per unfused step: 1, 2, 4 and 16 were tried, 4 was fastest (Intel AMX)


def unfused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    out = torch.empty(q.shape, dtype=q.dtype)
    scale = q.shape[-1] ** -0.5
    for b in range(q.shape[0]):
        for h in range(0, q.shape[1], HEAD_GROUP):
            heads = slice(h, h + HEAD_GROUP)
            scores = (q[b, heads] * scale) @ k[b, heads].transpose(-2, -1)
            out[b, heads] = torch.softmax(scores, dim=-1) @ v[b, heads]
    return out


def exp_rate(calls: int = 200) -> tuple[float, int]:
    """Exps per second on all threads, and the threads: one block per thread, `calls` times."""
    threads = torch.get_num_threads()
    x = torch.randn(threads, EXP_BLOCK)
    y = torch.empty_like(x)

    def run() -> None:
        for _ in range(calls):
            torch.exp(x, out=y)

    seconds = interleaved({"exp": run}, ROUNDS).best("exp")
    return calls * x.numel() / seconds, threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="copgen-base")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    load = machine_load()
    spec = specs.get(args.spec)
    heads, tokens = spec.denoiser.num_heads, spec.num_tokens
    head_dim = spec.denoiser.embed_dim // heads
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(args.batch, tokens, 3, heads, head_dim, generator=g).bfloat16()
    q, k, v = qkv.permute(2, 0, 3, 1, 4)  # the model's layout: views of one qkv projection
    scores = args.batch * heads * tokens ** 2
    flops = 4 * scores * head_dim
    compiled_flex = torch.compile(flex_attention)
    kernels = {"torch_sdpa": ("torch fused attention", F.scaled_dot_product_attention),
               "unfused": (f"unfused: bf16 GEMMs and softmax, {HEAD_GROUP} heads a step", unfused_attention),
               "flex": ("flex_attention, torch.compile", compiled_flex)}
    with torch.inference_mode():
        calls = {key: functools.partial(fn, q, k, v) for key, (_, fn) in kernels.items()}
        rounds = interleaved(calls, ROUNDS)
    best = {key: rounds.best(key) for key in kernels}
    sdpa = best["torch_sdpa"]
    gemm = matmul_peak("cpu", torch.bfloat16, n=4096, repeats=ROUNDS)
    exps, threads = exp_rate()
    bound = flops / (gemm * 1e9) + scores / exps
    result = {"cpu": cpu_name(), "torch": torch.__version__, "threads": threads, "load_before": load,
              "load_after": machine_load(), "spec": spec.name, "batch": args.batch,
              "shape": {"heads": heads, "tokens": tokens, "head_dim": head_dim},
              "attention_gflop": flops / 1e9, "exps": scores,
              **{f"{key}_ms": seconds * 1e3 for key, seconds in best.items()},
              **{f"{key}_gflops": flops / seconds / 1e9 for key, seconds in best.items()},
              "unfused_head_group": HEAD_GROUP,
              "bf16_gemm_gflops": gemm, "exp_per_s": exps,
              "gemm_part_ms": flops / (gemm * 1e9) * 1e3, "exp_part_ms": scores / exps * 1e3,
              "lower_bound_ms": bound * 1e3, "sdpa_over_bound": sdpa / bound}
    name = f"attention-limit-{cpu_tag()}-{spec.name}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / f"{name}.json", json.dumps(result, indent=1) + "\n")
    lines = [f"# Attention against this CPU's limit ({cpu_name()}, {spec.name}, batch {args.batch})", "",
             f"torch {torch.__version__}, {threads} threads, best of {ROUNDS} rounds. Load before `{load}`, "
             f"after `{result['load_after']}`.", "",
             f"One attention: {args.batch} x {heads} heads x {tokens} tokens x {head_dim}, bf16: "
             f"{flops / 1e9:.2f} GFLOP and {scores / 1e6:.1f} M exps.", "",
             "| what | rate | ms |", "|---|---|---|",
             *(f"| {label} | {flops / best[key] / 1e9:.0f} GFLOP/s | {best[key] * 1e3:.2f} |"
               for key, (label, _) in kernels.items()),
             f"| its GEMMs at the bf16 GEMM rate | {gemm:.0f} GFLOP/s | {result['gemm_part_ms']:.2f} |",
             f"| its exps at the exp rate | {exps / 1e9:.2f} G exp/s | {result['exp_part_ms']:.2f} |",
             f"| lower bound (GEMMs + exps) | | {bound * 1e3:.2f} |", "",
             f"torch's fused attention takes {sdpa / bound:.2f}x the lower bound."]
    write_text(out / f"{name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
