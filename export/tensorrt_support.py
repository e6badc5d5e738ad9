"""What the TensorRT ONNX parser accepts, checked without TensorRT installed.

The operator list is the one documented for the TensorRT 10 ONNX parser (onnx-tensorrt
`docs/operators.md`), restricted to the operators a transformer or VAE export can produce; a
graph using anything else, or violating a documented restriction, is rejected here so a broken
export is caught before an engine build is ever attempted.
"""

from __future__ import annotations

from pathlib import Path

from copgen_rt.errors import TensorRTIncompatible

SUPPORTED_OPS = frozenset("""
Abs Add And ArgMax ArgMin Cast Ceil Clip Concat Constant ConstantOfShape Conv Cos CumSum Div Einsum
Equal Erf Exp Expand Flatten Floor Gather GatherElements Gemm Gelu GlobalAveragePool Greater
GreaterOrEqual GroupNormalization Identity InstanceNormalization LayerNormalization Less
LessOrEqual Log MatMul Max Mean Min Mul Neg Not Or Pad Pow Range ReduceMax ReduceMean ReduceMin
ReduceSum Relu Reshape Resize Round Shape Sigmoid Sign Sin Slice Softmax Split Sqrt Squeeze Sub
Sum Tanh Tile Transpose Trilu Unsqueeze Where
""".split())

RESIZE_MODES = {"nearest", "linear"}




def check_tensorrt_compatible(path: Path) -> dict[str, int]:
    """Raise on unsupported operators or restrictions; return the op histogram."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    constants = {i.name for i in graph.initializer} | {
        o for n in graph.node if n.op_type == "Constant" for o in n.output}
    histogram: dict[str, int] = {}
    for node in graph.node:
        histogram[node.op_type] = histogram.get(node.op_type, 0) + 1
        if node.domain not in ("", "ai.onnx"):
            raise TensorRTIncompatible(f"{path.name}: custom-domain op {node.domain}::{node.op_type}")
        if node.op_type not in SUPPORTED_OPS:
            raise TensorRTIncompatible(f"{path.name}: op {node.op_type} ({node.name}) is not supported "
                                       "by the TensorRT ONNX parser")
        if node.op_type == "Conv" and node.input[1] not in constants:
            raise TensorRTIncompatible(f"{path.name}: Conv {node.name} weights must be an initializer")
        if node.op_type == "Resize":
            mode = next((a.s.decode() for a in node.attribute if a.name == "mode"), "nearest")
            if mode not in RESIZE_MODES:
                raise TensorRTIncompatible(f"{path.name}: Resize mode {mode} is not supported")
    return histogram
