"""Where does the denoiser's attention run in OpenVINO's CPU plugin, and does its fused
scaled-dot-product-attention node pay? (issue 23, item 1)

    python benchmarks/openvino_attention_profile.py [--spec copgen-base] [--batch 2] [--rounds 3]

A random-weight denoiser is compiled three ways, for bf16 and fp32, at a static batch:

- `onnx`: our ONNX export (what the openvino engine compiles; attention is MatMul -> Softmax -> MatMul);
- `convert-sdpa`: `openvino.convert_model` of the torch module, whose attention is
  `F.scaled_dot_product_attention`: the OV model holds one opset-13 ScaledDotProductAttention op
  per block;
- `stateful-sdpa`: the same, with each SDPA's K and V routed through an empty KV cache
  (ReadValue -> Gather -> Concat -> Assign), the one form the CPU plugin keeps as its
  ScaledDotProductAttention node (`StatefulSDPAFusion`); its state is reset before every call.

Then one attention alone at the same shapes (Q, K, V given): the Snippets MHA the CPU plugin makes
of MatMul -> Softmax -> MatMul, its SDPA node (the stateful form), and torch's
`F.scaled_dot_product_attention` (the other engine at hand).

Per variant: the SDPA nodes of the runtime graph and the nodes that executed (Subgraphs,
Transposes), the perf-counter time shares by node type and by (node type, exec type) of one call,
per-call medians over rounds that interleave every variant, and the relative error against torch
fp32. Results as JSON and markdown under benchmarks/results/, named by CPU.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from copgen_rt import specs
from copgen_rt.backends import openvino_backend as ovb
from copgen_rt.bench.environment import cpu_tag, machine_load
from copgen_rt.bench.models import denoiser_flops, export_denoiser, mid_spec, random_denoiser
from copgen_rt.device import cpu_flags, cpu_name
from copgen_rt.export.onnx import DenoiserIO
from copgen_rt.files import write_text

PRECISIONS = ("bf16", "fp32")


def onnx_model(spec, model, batch: int):
    folder, component = export_denoiser(spec, model)
    ov_model = ovb._core().read_model(str(folder / component.file))
    shutil.rmtree(folder)  # the export is read: 1 GB at copgen-base
    ov_model.reshape({p.get_any_name(): [batch, *list(p.get_partial_shape())[1:]] for p in ov_model.inputs})
    return ov_model


def converted_model(model, example: list[torch.Tensor]):
    import openvino as ov

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's, on unpacking q, k, v
        return ov.convert_model(DenoiserIO(model).eval(), example_input=tuple(example),
                                input=[tuple(t.shape) for t in example])


def through_kv_cache(ov_model):
    """Each SDPA op's K and V through an empty KV cache: the pattern the CPU plugin's
    StatefulSDPAFusion turns into its ScaledDotProductAttention node (any other SDPA op is
    decomposed into MatMul/Softmax/MatMul by the common decompositions)."""
    import openvino as ov
    from openvino import opset6, opset8, opset13
    from openvino.op.util import Variable, VariableInfo

    ops = ov_model.get_ordered_ops()
    for sdpa in [op for op in ops if op.get_type_name() == "ScaledDotProductAttention"]:
        b, h, _, _ = sdpa.get_input_partial_shape(1).to_shape()
        beam = opset13.constant(np.arange(b, dtype=np.int32))
        for port in (1, 2):
            source = sdpa.input_value(port)
            d = source.get_partial_shape().to_shape()[-1]
            info = VariableInfo()
            info.data_shape, info.data_type = ov.PartialShape([b, h, -1, d]), source.get_element_type()
            info.variable_id = f"{sdpa.get_friendly_name()}/cache{port}"
            variable = Variable(info)
            past = opset6.read_value(opset13.constant(np.zeros([b, h, 0, d], np.float32)), variable)
            present = opset13.concat([opset8.gather(past, beam, opset13.constant(np.int32(0))), source], 2)
            ov_model.add_variables([variable])
            ov_model.add_sinks([opset6.assign(present, variable)])
            sdpa.input(port).replace_source_output(present.output(0))
    ov_model.validate_nodes_and_infer_types()
    return ov_model


class Compiled:
    """One compiled variant, with perf counters on, and its infer request."""

    def __init__(self, ov_model, precision: str, stateful: bool):
        config = {**ovb.compile_config(precision), "PERF_COUNT": True}
        start = time.perf_counter()
        self.compiled = ovb._core().compile_model(ov_model, "CPU", config)
        self.compile_s = time.perf_counter() - start
        self.request = self.compiled.create_infer_request()
        self.stateful = stateful

    def __call__(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        if self.stateful:
            self.request.reset_state()
        self.request.infer(feeds, share_inputs=True)
        return [np.array(t.data) for t in self.request.output_tensors]

    def nodes(self) -> dict[str, int]:
        """SDPA nodes in the runtime graph, and the nodes of the latest call that executed, by type."""
        runtime = [op.get_rt_info()["layerType"].astype(str)
                   for op in self.compiled.get_runtime_model().get_ops()]
        executed = collections.Counter(p.node_type for p in self.request.profiling_info
                                       if p.status == p.Status.EXECUTED)
        return {"SDPA in runtime graph": runtime.count("ScaledDotProductAttention"),
                **{f"executed {k}": executed[k] for k in ("Subgraph", "Transpose", "FullyConnected")}}

    def profile(self) -> dict:
        """Time shares of the latest call, by node type and by node type / exec type."""
        by_type: collections.Counter = collections.Counter()
        by_exec: collections.Counter = collections.Counter()
        for p in self.request.profiling_info:
            seconds = p.real_time.total_seconds()
            by_type[p.node_type] += seconds
            by_exec[f"{p.node_type} / {p.exec_type}"] += seconds
        total = sum(by_type.values())
        share = lambda c: {k: round(v / total, 4) for k, v in c.most_common() if v / total >= 0.001}  # noqa: E731
        return {"total_ms": total * 1e3, "by_node_type": share(by_type), "by_exec_type": share(by_exec)}


def rel_error(got: list[np.ndarray], want: list[torch.Tensor]) -> float:
    return max(float(np.abs(g - w.numpy()).max() / np.abs(w.numpy()).max())
               for g, w in zip(got, want, strict=True))


def interleaved(variants: dict, feeds: list[np.ndarray], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each variant, rounds interleaving every variant (a first one warms up)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(rounds + 1):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn(feeds)
            if round_:
                times[name].append(time.perf_counter() - start)
    return times


def summary(times: list[float], flops: float) -> dict:
    ms = statistics.median(times) * 1e3
    return {"ms_median": ms, "ms_all": [round(t * 1e3, 1) for t in times], "gflops": flops / ms / 1e6}


def add_speedups(results: dict, names, reference: str) -> None:
    for precision in PRECISIONS:
        base = results[f"{reference}-{precision}"]["ms_median"]
        for name in names:
            result = results[f"{name}-{precision}"]
            result["speedup_vs_" + reference] = base / result["ms_median"]


def denoiser_variants(spec, batch: int, rounds: int) -> dict:
    """The whole denoiser call, compiled the three ways."""
    model = random_denoiser(spec, "cpu", torch.float32)
    g = torch.Generator().manual_seed(1)
    example = [torch.randn(batch, *m.latent_shape, generator=g) for m in spec.modalities]
    example += [torch.rand(batch, generator=g) * 1000 for _ in spec.modalities]
    with torch.no_grad():
        want = DenoiserIO(model)(*example)
    feeds = [t.numpy() for t in example]
    graphs = {"onnx": (onnx_model(spec, model, batch), False),
              "convert-sdpa": (converted_model(model, example), False),
              "stateful-sdpa": (through_kv_cache(converted_model(model, example)), True)}
    variants = {f"{name}-{precision}": Compiled(graph, precision, stateful)
                for precision in PRECISIONS for name, (graph, stateful) in graphs.items()}
    times = interleaved(variants, feeds, rounds)
    results = {}
    for name, fn in variants.items():
        out = fn(feeds)  # the profiled call
        results[name] = {**summary(times[name], denoiser_flops(spec) * batch),
                         "rel_err_vs_torch_fp32": rel_error(out, want), "compile_s": fn.compile_s,
                         "nodes": fn.nodes(), "profile": fn.profile()}
    add_speedups(results, graphs, "onnx")
    return results


def attention_variants(spec, batch: int, rounds: int) -> dict:
    """One attention (Q, K, V in, heads-major) at the denoiser's shapes: the CPU plugin's Snippets
    MHA (what the export's MatMul -> Softmax -> MatMul becomes), its SDPA node, and torch's SDPA."""
    import openvino as ov
    from openvino import opset13

    heads = spec.denoiser.num_heads
    shape = [batch, heads, spec.num_tokens, spec.denoiser.embed_dim // heads]
    g = torch.Generator().manual_seed(2)
    qkv = [torch.randn(shape, generator=g) for _ in range(3)]
    params = [opset13.parameter(shape, np.float32, name=n) for n in "qkv"]
    scale = opset13.constant(np.float32(shape[-1] ** -0.5))
    scores = opset13.multiply(opset13.matmul(params[0], params[1], False, True), scale)
    mha = ov.Model([opset13.matmul(opset13.softmax(scores, -1), params[2], False, False).output(0)], params)
    params = [opset13.parameter(shape, np.float32, name=n) for n in "qkv"]
    sdpa = ov.Model([opset13.scaled_dot_product_attention(*params, causal=False).output(0)], params)
    variants: dict = {}
    for precision in PRECISIONS:
        variants[f"openvino-mha-{precision}"] = Compiled(mha, precision, False)
        variants[f"openvino-sdpa-node-{precision}"] = Compiled(through_kv_cache(sdpa.clone()), precision,
                                                               True)
        low = [t.to(torch.bfloat16 if precision == "bf16" else torch.float32) for t in qkv]
        variants[f"torch-sdpa-{precision}"] = lambda _, low=low: F.scaled_dot_product_attention(*low)
    want = F.scaled_dot_product_attention(*qkv)
    feeds = [t.numpy() for t in qkv]
    times = interleaved(variants, feeds, rounds)
    flops = 4.0 * batch * heads * spec.num_tokens ** 2 * shape[-1]
    results = {}
    for name, fn in variants.items():
        out = fn(feeds)
        got = [out.float().numpy()] if isinstance(out, torch.Tensor) else out
        results[name] = {**summary(times[name], flops), "rel_err_vs_torch_fp32": rel_error(got, [want])}
        if isinstance(fn, Compiled):
            results[name] |= {"nodes": fn.nodes(), "profile": fn.profile()}
    add_speedups(results, ("openvino-mha", "openvino-sdpa-node", "torch-sdpa"), "openvino-mha")
    return results


def _table(results: dict, reference: str) -> list[str]:
    lines = [f"| variant | ms (median) | vs {reference} | GFLOP/s | rel. err vs torch fp32 | SDPA nodes "
             "| executed Subgraph / Transpose | time in FullyConnected | Subgraph | Transpose | SDPA node |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        n = r.get("nodes", {})
        share = r.get("profile", {}).get("by_node_type", {})
        kinds = ("FullyConnected", "Subgraph", "Transpose", "ScaledDotProductAttentionWithKVCache")
        cells = [f"{n['SDPA in runtime graph']}", f"{n['executed Subgraph']} / {n['executed Transpose']}",
                 *(f"{share.get(k, 0):.1%}" for k in kinds)] if n else ["-"] * 6
        lines.append(f"| {name} | {r['ms_median']:.1f} | {r['speedup_vs_' + reference]:.2f}x "
                     f"| {r['gflops']:.0f} | {r['rel_err_vs_torch_fp32']:.1e} | " + " | ".join(cells) + " |")
    return lines


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# OpenVINO attention profile ({env['cpu']}, {report['spec']}, batch {report['batch']})", "",
             f"OpenVINO {env['openvino']}, torch {env['torch']}, {env['threads']} threads, ISA "
             f"{', '.join(env['isa'])}. Load before `{report['load_before']}`, "
             f"after `{report['load_after']}` "
             f"(shared machine: compare ratios; medians of {report['rounds']} interleaved rounds, "
             f"{3 * report['rounds']} for one attention).", "",
             "## One denoiser call", "", *_table(report["denoiser"], "onnx"), "",
             "Time shares by node type / exec type (one profiled call):", ""]
    for name, r in report["denoiser"].items():
        top = ", ".join(f"{k} {v:.1%}" for k, v in list(r["profile"]["by_exec_type"].items())[:6])
        lines.append(f"- {name}: {top}")
    lines += ["", "## One attention (Q, K, V given, heads-major)", "",
              *_table(report["attention"], "openvino-mha")]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", default="copgen-base")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    spec = mid_spec() if args.spec == "copgen-mid" else specs.get(args.spec)
    load = machine_load()
    attention = attention_variants(spec, args.batch, 3 * args.rounds)  # cheap: more rounds
    denoiser = denoiser_variants(spec, args.batch, args.rounds)
    report = {"spec": spec.name, "batch": args.batch, "rounds": args.rounds, "load_before": load,
              "load_after": machine_load(),
              "environment": {"cpu": cpu_name(), "openvino": ovb.version(), "torch": torch.__version__,
                              "threads": ovb.threads(),
                              "isa": sorted(f for f in cpu_flags() if f.startswith(("avx512", "amx")))},
              "denoiser": denoiser, "attention": attention}
    tag = cpu_tag()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    stem = Path(args.out) / f"openvino-attention-{tag}"
    if spec.name != "copgen-base":
        stem = stem.with_name(f"{stem.name}-{spec.name}")
    write_text(stem.with_suffix(".json"), json.dumps(report, indent=1) + "\n")
    write_text(stem.with_suffix(".md"), markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
