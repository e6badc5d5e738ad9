"""Compile every Triton kernel of copgen_rt.kernels ahead of time for the GPUs we target, no GPU needed.

For each kernel, each launch configuration (every autotune config of the attention, the one launch
of LayerNorm and bias-GELU) and the copgen-base/large/huge shapes, Triton compiles down to PTX and a
cubin for sm_80 (A100), sm_87 (Jetson Orin) and sm_90 (H100) with the `ptxas` its wheel bundles. The
arguments are specialised exactly as Triton's JIT specialises them at launch (an int equal to 1
becomes a constant, ints and pointers divisible by 16 get the divisibility hint), so the code is the
code a launch on that GPU would compile. Per compile it records: compiled or the error, registers,
spill stores/loads (from `ptxas -v` on the same PTX with Triton's own flags), shared memory, and the
occupancy those give under the target's limits (TARGETS below).

    python benchmarks/triton_aot.py                      # all, ~5-10 min on 2 CPUs
    python benchmarks/triton_aot.py --models copgen-base --targets 87 --dtypes bf16

writes benchmarks/results/triton-aot.json and .md. The per-target autotune lists
(`copgen_rt.kernels.attention.UNFIT`) are what this run found spilling or unable to run.
"""


import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend

from copgen_rt import specs
from copgen_rt.kernels import attention, gelu, layernorm

RESULTS = Path(__file__).parent / "results"
SOURCE = ("CUDA C++ Programming Guide (12.x), 'Technical Specifications per Compute Capability' table; "
          "allocation granularities as in NVIDIA's CUDA Occupancy Calculator")


@dataclass(frozen=True)
class TargetLimits:
    """Per-SM limits of one compute capability (the SOURCE table)."""

    name: str
    registers_per_sm: int
    max_registers_per_thread: int
    shared_per_sm: int  # bytes usable by blocks (the largest carve-out)
    shared_per_block: int  # bytes, opt-in maximum
    max_warps_per_sm: int
    max_blocks_per_sm: int
    max_threads_per_block: int = 1024
    register_granularity: int = 256  # registers are allocated per warp in units of 256
    shared_granularity: int = 128
    shared_reserved_per_block: int = 1024  # the CUDA runtime's per-block system use (sm_80 on)


KIB = 1024
TARGETS = {
    80: TargetLimits("sm_80 (A100)", 65536, 255, 164 * KIB, 163 * KIB, 64, 32),
    87: TargetLimits("sm_87 (Jetson Orin)", 65536, 255, 164 * KIB, 163 * KIB, 48, 16),
    90: TargetLimits("sm_90 (H100)", 65536, 255, 228 * KIB, 227 * KIB, 64, 32),
}
MODELS = ("copgen-base", "copgen-large", "copgen-huge")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DTYPES_BYTES = {torch.bfloat16: 2, torch.float16: 2, torch.float32: 4}
BATCH = 8  # tiles per call; only the attention's autotune key and the row counts depend on it


@dataclass(frozen=True)
class Pointer:
    """A tensor argument: only its element type and 16-byte alignment reach the compiler."""

    dtype: torch.dtype

    def data_ptr(self) -> int:
        return 0  # torch allocations are at least 16-byte aligned, as the JIT then sees them


@dataclass(frozen=True)
class Launch:
    kernel: str
    variant: str
    fn: Any  # the JITFunction
    args: dict[str, Any]  # every parameter, in order, constexprs included
    num_warps: int
    num_stages: int
    autotune: triton.Config | None = None  # the attention's config; the other kernels have one launch

    def in_autotune_list(self, arch: int) -> bool:
        """Whether the kernel's own per-target list (attention.UNFIT) keeps this launch on `arch`."""
        if self.autotune is None:
            return True
        element_bytes = DTYPES_BYTES[self.args["qkv_ptr"].dtype]
        return attention.fits(self.autotune, divmod(arch, 10), self.args["BLOCK_D"], element_bytes)


def specialise(fn: Any, args: dict[str, Any], target: GPUTarget) -> tuple[dict, dict, dict]:
    """(signature, constexprs, attrs) as Triton's JIT derives them from these argument values."""
    from triton._C.libtriton import native_specialize_impl

    backend = type(make_backend(target))
    names = [p.name for p in fn.params]
    if list(args) != names:
        raise ValueError(f"{fn.__name__}: arguments {list(args)} are not its parameters {names}")
    signature, constexprs, attrs = {}, {}, {}
    for i, param in enumerate(fn.params):
        value = args[param.name]
        if param.is_constexpr:
            signature[param.name], constexprs[(i,)] = "constexpr", value
            continue
        kind, spec = native_specialize_impl(backend, value, False, True, True)
        signature[param.name] = kind
        if kind == "constexpr":
            constexprs[(i,)] = spec
        elif isinstance(spec, str):
            attrs[(i,)] = backend.parse_attr(spec)
    return signature, constexprs, attrs


_PTXAS_LINE = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")


def ptxas_usage(ptx: str, arch: int) -> dict[str, int]:
    """Registers, stack and spills of the PTX, from `ptxas -v` run with the flags Triton uses."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        done = subprocess.run([get_ptxas(arch).path, "-lineinfo", "-v", "--regAllocOptLevel=2",
                               f"--gpu-name={sm_arch_from_capability(arch)}", str(src),
                               "-o", str(Path(tmp) / "k.cubin")], capture_output=True, text=True)
    log = done.stdout + done.stderr
    if done.returncode:
        raise RuntimeError(f"ptxas -v failed: {log.strip()}")
    stack = _PTXAS_LINE.search(log)
    regs = _REGS.search(log)
    if stack is None or regs is None:
        raise RuntimeError(f"unexpected ptxas -v output: {log}")
    return {"registers": int(regs.group(1)), "stack_bytes": int(stack.group(1)),
            "spill_store_bytes": int(stack.group(2)), "spill_load_bytes": int(stack.group(3))}


def occupancy(limits: TargetLimits, registers: int, shared: int, num_warps: int) -> dict[str, Any]:
    """Resident blocks per SM and the fraction of the SM's warp slots they fill."""
    threads = num_warps * 32
    regs_per_warp = math.ceil(registers * 32 / limits.register_granularity) * limits.register_granularity
    shared_per_block = math.ceil((shared + limits.shared_reserved_per_block) / limits.shared_granularity) \
        * limits.shared_granularity
    why_not = []
    if threads > limits.max_threads_per_block:
        why_not.append(f"{threads} threads > {limits.max_threads_per_block} per block")
    if registers > limits.max_registers_per_thread:
        why_not.append(f"{registers} registers > {limits.max_registers_per_thread}")
    if shared > limits.shared_per_block:
        why_not.append(f"{shared} B shared > {limits.shared_per_block} B per block")
    bounds = {"warps": limits.max_warps_per_sm // num_warps, "blocks": limits.max_blocks_per_sm,
              "registers": limits.registers_per_sm // (regs_per_warp * num_warps),
              "shared": limits.shared_per_sm // shared_per_block}
    blocks = 0 if why_not else min(bounds.values())
    if blocks == 0 and not why_not:
        why_not.append(f"no block fits an SM ({bounds})")
    limiter = min(bounds, key=lambda k: bounds[k])
    return {"blocks_per_sm": blocks, "occupancy": round(blocks * num_warps / limits.max_warps_per_sm, 3),
            "limited_by": limiter if blocks else None, "cannot_run": "; ".join(why_not) or None}


def launches(model: str, dtype_name: str) -> list[Launch]:
    """The launches the triton denoiser makes for one model and precision, at every config."""
    spec = specs.get(model)
    width, heads, tokens = spec.denoiser.embed_dim, spec.denoiser.num_heads, spec.num_tokens
    head_dim = spec.denoiser.head_dim
    dt = DTYPES[dtype_name]
    low, stream = Pointer(dt), Pointer(torch.float32)
    rows = BATCH * tokens
    out: list[Launch] = []
    for cfg in attention.all_configs():
        block_m, block_n = cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"]
        args = {"qkv_ptr": low, "out_ptr": low, "seq_len": tokens, "batch": BATCH, "num_heads": heads,
                "qk_scale": head_dim ** -0.5 * attention.LOG2E,
                "s_qkv_b": tokens * 3 * width, "s_qkv_l": 3 * width, "s_qkv_f": 1,
                "s_out_b": tokens * width, "s_out_l": width, "s_out_f": 1,
                "HEAD_DIM": head_dim, "BLOCK_D": attention.block_d(head_dim), "UPCAST": False,
                "BLOCK_M": block_m, "BLOCK_N": block_n}
        out.append(Launch("attention", attention.config_name(cfg), attention._attention_fwd.fn, args,
                          cfg.num_warps, cfg.num_stages, cfg))
    block_r, block_d, warps = layernorm._launch(width)
    mixed = dt != torch.float32
    for variant, x, has_y in (("residual add + LN", stream, True), ("skip/final LN", low, False)):
        args = {"x_ptr": x, "y_ptr": low if has_y else x, "w_ptr": low, "b_ptr": low, "scale_ptr": low,
                "shift_ptr": low, "out_ptr": stream, "copy_ptr": low if mixed else stream,
                "n_rows": rows, "dim": width, "rows_per_sample": rows, "eps": 1e-6,
                "s_x": width, "s_y": width, "s_scale": 0, "s_shift": 0,
                "HAS_Y": has_y, "HAS_MOD": False, "HAS_COPY": mixed, "BLOCK_R": block_r, "BLOCK_D": block_d}
        out.append(Launch("layernorm", f"{variant} R{block_r} D{block_d} w{warps}", layernorm._layernorm_rows,
                          args, warps, 3))
    block_r, block_c, warps = gelu._launch(4 * width)
    args = {"x_ptr": low, "bias_ptr": low, "out_ptr": low, "n_rows": rows, "n_cols": 4 * width,
            "BLOCK_R": block_r, "BLOCK_C": block_c}
    out.append(Launch("bias_gelu", f"R{block_r} C{block_c} w{warps}", gelu._bias_gelu_kernel, args, warps, 3))
    return out


def compile_one(launch: Launch, arch: int) -> dict[str, Any]:
    """Compile for one target; the record of what it took, or the error."""
    target = GPUTarget("cuda", arch, 32)
    signature, constexprs, attrs = specialise(launch.fn, launch.args, target)
    start = time.perf_counter()
    try:
        source = ASTSource(fn=launch.fn, signature=signature, constexprs=constexprs, attrs=attrs)
        kernel = triton.compile(source, target=target,
                                options={"num_warps": launch.num_warps, "num_stages": launch.num_stages})
        usage = ptxas_usage(kernel.asm["ptx"], arch)
    except Exception as err:  # any compiler failure is the result for this config and target
        return {"compiled": False, "error": f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300]}"}
    shared = int(kernel.metadata.shared)
    return {"compiled": True, "error": None, **usage, "shared_bytes": shared,
            **occupancy(TARGETS[arch], usage["registers"], shared, launch.num_warps),
            "compile_s": round(time.perf_counter() - start, 2)}


def verdict(row: dict[str, Any]) -> str:
    if not row["compiled"]:
        return "does not compile"
    if row["cannot_run"]:
        return "cannot run"
    if row["spill_store_bytes"] or row["spill_load_bytes"]:
        return "spills"
    return "ok"


def unfit_table(rows: list[dict[str, Any]]) -> dict[tuple[int, int], dict[tuple[int, int], list[str]]]:
    """attention.UNFIT as these rows say: per target and (BLOCK_D, element bytes), the configs that
    spill or cannot run. Where every config spills, only those that cannot run at all are left out
    (the autotuner needs one), and the spilling rest stays: the table says so."""
    from collections import defaultdict

    verdicts: dict[tuple, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for r in rows:
        if r["kernel"] == "attention":
            spec = specs.get(r["model"])
            key = (divmod(r["arch"], 10), (attention.block_d(spec.denoiser.head_dim), r["element_bytes"]))
            verdicts[key][r["config"]].add(r["verdict"])
    table: dict[tuple[int, int], dict[tuple[int, int], list[str]]] = defaultdict(dict)
    for (capability, shape), configs in sorted(verdicts.items()):
        bad = sorted(c for c, v in configs.items() if v != {"ok"})
        if len(bad) == len(configs):
            bad = sorted(c for c, v in configs.items() if v & {"cannot run", "does not compile"})
        if bad:
            table[capability][shape] = bad
    return dict(table)


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [f"# Triton kernels compiled ahead of time (Triton {meta['triton']}, no GPU)", "",
             f"Batch {BATCH} tiles per call; {meta['compiles']} compiles in {meta['seconds']:.0f} s on "
             f"{meta['cpu']}. Occupancy = resident warps / the SM's warp slots, from the limits below "
             f"({SOURCE}).", "",
             "| target | regs/SM | regs/thread | shared/SM | shared/block | warps/SM | blocks/SM |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {t.name} | {t.registers_per_sm} | {t.max_registers_per_thread} | "
              f"{t.shared_per_sm // KIB} KiB | {t.shared_per_block // KIB} KiB | {t.max_warps_per_sm} | "
              f"{t.max_blocks_per_sm} |"
              for t in TARGETS.values()]
    lines += ["", "Autotuned: whether the kernel keeps the config in that target's autotune list "
              "(`copgen_rt.kernels.attention.UNFIT`); LayerNorm and bias-GELU have one launch each.", "",
              "| model | dtype | kernel | config | target | verdict | autotuned | regs | spill st/ld B | "
              "shared B | blocks/SM | occupancy | limited by |", "|---" * 13 + "|"]
    for r in rows:
        if r["compiled"]:
            lines.append(f"| {r['model']} | {r['dtype']} | {r['kernel']} | {r['config']} | sm_{r['arch']} | "
                         f"{r['verdict']} | {'yes' if r['in_autotune_list'] else 'no'} | {r['registers']} | "
                         f"{r['spill_store_bytes']}/{r['spill_load_bytes']} | "
                         f"{r['shared_bytes']} | {r['blocks_per_sm']} | {r['occupancy']:.2f} | "
                         f"{r['limited_by'] or r['cannot_run']} |")
        else:
            lines.append(f"| {r['model']} | {r['dtype']} | {r['kernel']} | {r['config']} | sm_{r['arch']} | "
                         f"{r['verdict']}: {r['error']} | {'yes' if r['in_autotune_list'] else 'no'} "
                         "| | | | | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=specs.names())
    parser.add_argument("--targets", nargs="+", type=int, default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"], choices=list(DTYPES),
                        help="fp16 compiles to the same tensor-core shapes as bf16 (default: bf16 fp32)")
    parser.add_argument("--kernels", nargs="+", default=["attention", "layernorm", "bias_gelu"])
    parser.add_argument("--configs", nargs="+", help="only these launch configs (named as in the table)")
    parser.add_argument("--out", type=Path, default=RESULTS / "triton-aot")
    args = parser.parse_args(argv)

    from copgen_rt.device import cpu_name

    start = time.perf_counter()
    rows = []
    for model in args.models:
        for dtype in args.dtypes:
            for launch in launches(model, dtype):
                if launch.kernel not in args.kernels or (args.configs and launch.variant not in args.configs):
                    continue
                for arch in args.targets:
                    row = {"model": model, "dtype": dtype, "element_bytes": DTYPES_BYTES[DTYPES[dtype]],
                           "kernel": launch.kernel, "config": launch.variant,
                           "arch": arch, "num_warps": launch.num_warps, "num_stages": launch.num_stages,
                           **compile_one(launch, arch)}
                    row["verdict"] = verdict(row)
                    row["in_autotune_list"] = launch.in_autotune_list(arch)
                    rows.append(row)
                    print(f"{model} {dtype} {launch.kernel} {launch.variant} sm_{arch}: {row['verdict']}",
                          file=sys.stderr, flush=True)
    meta = {"triton": triton.__version__, "cpu": cpu_name(), "batch": BATCH, "compiles": len(rows),
            "seconds": round(time.perf_counter() - start, 1), "limits_source": SOURCE,
            "targets": {arch: asdict(t) for arch, t in TARGETS.items() if arch in args.targets}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(rows, meta))
    print(f"attention.UNFIT from these rows: {unfit_table(rows)}", file=sys.stderr)
    bad = [r for r in rows if r["verdict"] != "ok"]
    print(f"{len(rows)} compiles, {len(bad)} not ok; wrote {args.out}.json/.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
