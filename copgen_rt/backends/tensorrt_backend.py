"""TensorRT execution of prebuilt engines: device buffers bound once per shape, CUDA graphs for
static shapes. Import-guarded: constructing a backend without TensorRT raises a clear error.

NOT VERIFIED: TensorRT cannot be installed on our development machines; this follows the
TensorRT 10 Python API (named tensors, `execute_async_v3`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor


class _Engine:
    def __init__(self, path: Path):
        from copgen_rt.export.tensorrt import require_tensorrt

        trt = require_tensorrt()
        if not torch.cuda.is_available():
            raise RuntimeError("TensorRT engines need a CUDA GPU")
        self.trt = trt
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{path}: not an engine for this TensorRT version / GPU")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.stream = torch.cuda.Stream()
        self._buffers: dict[tuple, tuple[list[Tensor], list[Tensor], torch.cuda.CUDAGraph | None]] = {}

    def run(self, feeds: list[Tensor]) -> list[Tensor]:
        shapes = tuple(tuple(t.shape) for t in feeds)
        if shapes not in self._buffers:
            self._buffers[shapes] = self._bind(feeds)
        inputs, outputs, graph = self._buffers[shapes]
        for buf, t in zip(inputs, feeds, strict=True):
            buf.copy_(t, non_blocking=True)
        with torch.cuda.stream(self.stream):
            if graph is not None:
                graph.replay()
            else:
                self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        return [o.clone() for o in outputs]

    def _bind(self, feeds: list[Tensor]):
        """Allocate static buffers for these shapes, bind them, capture a CUDA graph."""
        inputs = [torch.empty_like(t, device="cuda", dtype=torch.float32) for t in feeds]
        for name, buf in zip(self.inputs, inputs, strict=True):
            self.context.set_input_shape(name, tuple(buf.shape))
            self.context.set_tensor_address(name, buf.data_ptr())
        outputs = []
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            buf = torch.empty(shape, device="cuda", dtype=torch.float32)
            self.context.set_tensor_address(name, buf.data_ptr())
            outputs.append(buf)
        with torch.cuda.stream(self.stream):
            self.context.execute_async_v3(self.stream.cuda_stream)  # warm-up before capture
        self.stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=self.stream):
                self.context.execute_async_v3(self.stream.cuda_stream)
        except RuntimeError:  # engines with data-dependent shapes cannot be captured
            return inputs, outputs, None
        return inputs, outputs, graph


class TrtDenoiser:
    name = "tensorrt"

    def __init__(self, engine: Path):
        self.engine = _Engine(engine)

    def __call__(self, latents: list[Tensor], timesteps: list[Tensor]) -> list[Tensor]:
        device = latents[0].device
        out = self.engine.run([t.float().cuda() for t in [*latents, *timesteps]])
        return [o.to(device) for o in out]


class TrtVAE:
    name = "tensorrt"

    def __init__(self, encoder: Path | None, decoder: Path | None):
        self.encoder = _Engine(encoder) if encoder else None
        self.decoder = _Engine(decoder) if decoder else None

    def encode_moments(self, x: Tensor) -> Tensor:
        if self.encoder is None:
            raise RuntimeError("this export has no VAE encoder for the modality")
        return self.encoder.run([x.float().cuda()])[0].to(x.device)

    def decode(self, z: Tensor) -> Tensor:
        if self.decoder is None:
            raise RuntimeError("this export has no VAE decoder for the modality")
        return self.decoder.run([z.float().cuda()])[0].to(z.device)
