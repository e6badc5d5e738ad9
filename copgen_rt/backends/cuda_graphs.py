"""CUDA graphs around a torch denoiser: one captured graph per batch bucket, static buffers.

The sampler calls the denoiser with the same shapes at every step, so each call can replay a
captured graph instead of launching a few hundred kernels. Batches are padded up to a bucket
(1, 2, 4, ..., 64) so a handful of graphs serve every batch size.

NOT VERIFIED on a GPU yet (none was available); `benchmarks/gpu.py` checks it against eager.
"""

from __future__ import annotations

import torch
from torch import Tensor

from copgen_rt.backends.torch_backend import TorchDenoiser

BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def bucket(batch: int) -> int:
    for b in BUCKETS:
        if batch <= b:
            return b
    return batch


class CudaGraphDenoiser:
    name = "torch+cudagraphs"

    def __init__(self, inner: TorchDenoiser):
        if inner.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.inner = inner
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, list[Tensor], list[Tensor], list[Tensor]]] = {}

    def __call__(self, latents: list[Tensor], timesteps: list[Tensor]) -> list[Tensor]:
        batch = latents[0].shape[0]
        size = bucket(batch)
        if size not in self.graphs:
            self.graphs[size] = self._capture(latents, timesteps, size)
        graph, static_x, static_t, static_out = self.graphs[size]
        for buf, x in zip(static_x, latents, strict=True):
            buf[:batch].copy_(x, non_blocking=True)
        for buf, t in zip(static_t, timesteps, strict=True):
            buf[:batch].copy_(t, non_blocking=True)
        graph.replay()
        return [o[:batch].clone() for o in static_out]

    def _capture(self, latents: list[Tensor], timesteps: list[Tensor], size: int):
        device = self.inner.device
        static_x = [torch.zeros((size, *x.shape[1:]), device=device) for x in latents]
        static_t = [torch.zeros(size, device=device) for _ in timesteps]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm up (allocator, autotuning) outside the capture
            for _ in range(2):
                self.inner(static_x, static_t)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.inner(static_x, static_t)
        return graph, static_x, static_t, static_out
