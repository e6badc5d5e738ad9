"""int8 denoiser as an explicit Q/DQ ONNX graph: what TensorRT builds int8 engines from.

`copgen-rt export --dtype int8` exports the fp32 graphs, then quantizes the denoiser with
onnxruntime's `quantize_static` in QDQ format: int8 weights (symmetric, per output channel) and
int8 activations (symmetric, zero point 0: the only form TensorRT reads) on every MatMul and Conv,
calibrated with min/max. It is calibrated as the OpenVINO int8 path is: on the denoiser inputs of
the pipeline's own `draft` run on the bundled chip (`Pipeline.chip_calls`, seeds 0 and 1), and the
layers that the int8 study found do not hold int8 (`openvino_backend.INT8_KEEP`: the patch
embeddings and the first in-block) stay fp32. The Q/DQ graph replaces the fp32 denoiser in the
export folder; onnxruntime's CPU provider runs it (so its drift is measured here, on held-out calls
of other seeds: `drift` below), TensorRT fuses each Q/DQ pair into int8 tensor-core kernels.

Why not NVIDIA ModelOpt's ONNX PTQ: it calibrates on a CPU too (`calibration_eps=["cpu"]`), but
its `onnx` extra (0.47) pins onnxruntime-gpu ~=1.24 and onnx 1.21 and pulls cupy-cuda12x, which
would replace the onnxruntime and onnx that this package runs and tests against.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from copgen_rt.backends.openvino_backend import INT8_KEEP
from copgen_rt.export.manifest import Component, Manifest

QUANTIZED_OPS = ("MatMul", "Conv", "Gemm")
RECIPE = ("onnxruntime quantize_static QDQ, int8 symmetric activations and per-channel weights, "
          "MinMax calibration")
INT8_FILE = "denoiser.int8.onnx"


def kept_nodes(model: Any, keep: Sequence[str] = INT8_KEEP) -> list[str]:
    """Names of the quantizable nodes that match a `keep` regex (they stay fp32)."""
    patterns = [re.compile(p) for p in keep]
    return [n.name for n in model.graph.node
            if n.op_type in QUANTIZED_OPS and any(p.fullmatch(n.name) for p in patterns)]


def _feeds(names: Sequence[str], call: Sequence[Tensor]) -> dict[str, np.ndarray]:
    return {n: np.ascontiguousarray(t.detach().float().cpu().numpy())
            for n, t in zip(names, call, strict=True)}


def quantize_denoiser(fp32: Path, out: Path, input_names: Sequence[str], calls: Sequence[Sequence[Tensor]],
                      keep: Sequence[str] = INT8_KEEP) -> dict[str, Any]:
    """Write the Q/DQ int8 graph of the fp32 denoiser `fp32` to `out`; what was quantized."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Calls(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds: Iterator[dict[str, np.ndarray]] = (_feeds(input_names, c) for c in calls)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    model = onnx.load(str(fp32), load_external_data=False)
    excluded = kept_nodes(model, keep)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT's advice to pre-process the model, logged on the root logger
    try:  # ORT keeps its augmented calibration model in a temporary directory of its own
        quantize_static(str(fp32), str(out), Calls(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=excluded, calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    finally:
        root.setLevel(level)
    quantized = onnx.load(str(out), load_external_data=False)
    dequantized = {n.output[0] for n in quantized.graph.node if n.op_type == "DequantizeLinear"}
    int8_nodes = [n.name for n in quantized.graph.node if n.op_type in QUANTIZED_OPS
                  and all(i in dequantized for i in n.input[:2])]
    return {"recipe": RECIPE, "calibration_calls": len(calls), "kept_fp32": excluded,
            "quantized_nodes": len(int8_nodes)}


def drift(fp32: Path, int8: Path, input_names: Sequence[str], output_names: Sequence[str],
          calls: Sequence[Sequence[Tensor]]) -> list[float]:
    """Relative L2 error per call of the int8 graph against the fp32 graph, both on onnxruntime CPU."""
    from copgen_rt.backends.onnxruntime_backend import _session
    from copgen_rt.bench.models import call_error

    sessions = [_session(p, ["CPUExecutionProvider"]) for p in (fp32, int8)]
    errors = []
    for call in calls:
        ref, out = ([torch.from_numpy(o) for o in s.run(list(output_names), _feeds(input_names, call))]
                    for s in sessions)
        errors.append(call_error(out, ref))
    return errors


def int8_export(folder: Path, manifest: Manifest, calibration: Sequence[Sequence[Tensor]],
                held_out: Sequence[Sequence[Tensor]]) -> Manifest:
    """Replace the fp32 denoiser of an export folder by its Q/DQ int8 graph (in place)."""
    from copgen_rt.files import onnx_sha256 as file_sha256

    den = manifest.component("denoiser")
    fp32, int8 = folder / den.file, folder / INT8_FILE
    names_in, names_out = [t.name for t in den.inputs], [t.name for t in den.outputs]
    info = quantize_denoiser(fp32, int8, names_in, calibration)
    errors = drift(fp32, int8, names_in, names_out, held_out)
    parity = {**info, "runtime": "onnxruntime", "reference": "the fp32 graph",
              "rel_err_per_held_out_call": errors, "max_rel_err": max(errors)}
    manifest.components[manifest.components.index(den)] = Component(
        "denoiser", INT8_FILE, den.inputs, den.outputs, "int8", parity, file_sha256(int8))
    fp32.unlink()
    return manifest


def export_int8(spec: Any, weights: str | Path, folder: Path, manifest: Manifest) -> Manifest:
    """`copgen-rt export --dtype int8`: calibrate on the pipeline's own draft run (seeds 0 and 1,
    as `--dtype int8` on OpenVINO does), measure on another (seeds 100 and 101), quantize."""
    from copgen_rt import Pipeline

    pipe = Pipeline.from_pretrained(spec, weights, device="cpu", dtype="fp32", engine="torch")
    manifest = int8_export(folder, manifest, pipe.chip_calls(), pipe.chip_calls(seeds=(100, 101)))
    manifest.save(folder)
    return manifest
