"""The GEMM limit of each precision: the best rate that torch, numpy (OpenBLAS), onnxruntime or
OpenVINO reach at the denoiser's own GEMM shapes and at a large square product."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from copgen_rt.bench.timing import interleaved
from copgen_rt.device import choose
from copgen_rt.specs import ModelSpec


def gemm_shapes(spec: ModelSpec, batch: int, square: int) -> dict[str, tuple[int, int, int]]:
    """(M, K, N) of the denoiser's Linear layers at `batch`, and one square product."""
    d, tokens = spec.denoiser.embed_dim, batch * spec.num_tokens
    hidden = int(d * spec.denoiser.mlp_ratio)
    return {"qkv": (tokens, d, 3 * d), "proj": (tokens, d, d), "fc1": (tokens, d, hidden),
            "fc2": (tokens, hidden, d), f"{square}^3": (square, square, square)}


def matmul_peak(device: str, dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of one n x n x n product on `device` (benchmarks/gpu.py: a GPU's bf16 peak)."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    return 2 * n ** 3 / interleaved({"mm": lambda: a @ b}, repeats, device).best("mm") / 1e9


def _onnx_matmul(m: int, k: int, n: int, integer: bool) -> bytes:
    """A one-node ONNX model: A (input) times B (a weight, as in a Linear); MatMulInteger u8 x s8."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if integer:
        b = numpy_helper.from_array(rng.integers(-128, 127, (k, n), dtype=np.int8), "B")
        node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    else:
        b = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "B")
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        a_type = y_type = TensorProto.FLOAT
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("A", a_type, [m, k])],
                              [helper.make_tensor_value_info("Y", y_type, [m, n])], [b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _gemm_runners(m: int, k: int, n: int) -> dict[tuple[str, str], Callable[[], object]]:
    """(precision, engine) -> one product of this shape, for every engine present in-process."""
    import numpy as np

    a, b = torch.randn(m, k), torch.randn(k, n)
    ab, bb = a.bfloat16(), b.bfloat16()
    a8 = torch.randint(-128, 127, (m, k), dtype=torch.int8)
    b8 = torch.randint(-128, 127, (k, n), dtype=torch.int8)
    runners: dict[tuple[str, str], Callable[[], object]] = {
        ("fp32", "torch"): lambda: a @ b,
        ("bf16", "torch"): lambda: ab @ bb,
    }
    if m > 16 and k % 8 == 0 and n % 8 == 0:  # torch._int_mm's shape rule
        runners[("int8", "torch")] = lambda: torch._int_mm(a8, b8)
    a_np, a_u8 = a.numpy(), np.random.default_rng(1).integers(0, 255, (m, k), dtype=np.uint8)
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        for precision, integer, feed in (("fp32", False, a_np), ("int8", True, a_u8)):
            session = ort.InferenceSession(
                _onnx_matmul(m, k, n, integer), options, providers=["CPUExecutionProvider"]
            )
            runners[(precision, "onnxruntime")] = functools.partial(session.run, None, {"A": feed})
    except ImportError:
        pass
    try:
        import openvino as ov

        from copgen_rt.backends.openvino_backend import compile_config

        with tempfile.TemporaryDirectory(prefix="copgen-bench-gemm-") as tmp:
            (Path(tmp) / "gemm.onnx").write_bytes(_onnx_matmul(m, k, n, False))
            model = ov.Core().read_model(str(Path(tmp) / "gemm.onnx"))
        for precision in ("fp32", "bf16"):
            if precision == "bf16" and choose("cpu").dtype != "bf16":
                continue
            request = ov.Core().compile_model(model, "CPU", compile_config(precision)).create_infer_request()
            runners[(precision, "openvino")] = functools.partial(request.infer, {"A": a_np},
                                                                 share_inputs=True)
    except ImportError:
        pass
    return runners


NUMPY_GEMM = r"""
import json, sys, time
import numpy as np, threadpoolctl
shapes, repeats = json.loads(sys.argv[1]), int(sys.argv[2])
rates = {}
for name, (m, k, n) in shapes.items():
    a, b = np.random.rand(m, k).astype(np.float32), np.random.rand(k, n).astype(np.float32)
    a @ b
    best = min((lambda t: (a @ b, time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(repeats))
    rates[name] = 2 * m * k * n / best / 1e9
info = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
blas = {k: info[0].get(k) for k in ("internal_api", "version", "architecture")} if info else None
print(json.dumps({"rates": rates, "blas": blas}))
"""


def _numpy_gemm(shapes: dict[str, tuple[int, int, int]], repeats: int) -> dict:
    """numpy (OpenBLAS) fp32 rates, in a subprocess without OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE:
    some machines set them for old OpenBLAS builds, which slows a current one (its own kernel
    choice is recorded)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    out = subprocess.run(
        [sys.executable, "-c", NUMPY_GEMM, json.dumps(shapes), str(repeats)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def gemm_limits(shapes: dict[str, tuple[int, int, int]], repeats: int, log: Callable[[str], object]) -> dict:
    """GFLOP/s per precision, engine and shape (engines interleaved round by round), and the limit
    of each precision: the best rate of any engine at any of the shapes."""
    rates: dict[str, dict[str, dict[str, float]]] = {}
    for name, (m, k, n) in shapes.items():
        rounds = interleaved(_gemm_runners(m, k, n), repeats)
        for precision, engine in rounds.seconds:
            rate = 2 * m * k * n / rounds.best((precision, engine)) / 1e9
            rates.setdefault(precision, {}).setdefault(engine, {})[name] = rate
    numpy_rates = _numpy_gemm(shapes, repeats)
    rates["fp32"]["numpy"] = numpy_rates["rates"]
    limits = {p: max(max(by_shape.values()) for by_shape in engines.values()) for p, engines in rates.items()}
    for precision, engines in rates.items():
        best_engine = max(engines, key=lambda e: max(engines[e].values()))
        log(f"  {precision} limit {limits[precision]:.0f} GFLOP/s ({best_engine}); " + rate_ranges(engines))
    return {
        "shapes": {k: list(v) for k, v in shapes.items()},
        "rates": rates,
        "limits": limits,
        "numpy_blas": numpy_rates["blas"],
    }


def rate_ranges(engines: dict[str, dict[str, float]]) -> str:
    """Each engine's GFLOP/s over the shapes, as "engine min-max, ..." (the log and the table)."""
    return ", ".join(f"{e} {min(r.values()):.0f}-{max(r.values()):.0f}" for e, r in engines.items())
