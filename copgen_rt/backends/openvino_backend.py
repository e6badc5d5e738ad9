"""OpenVINO execution on CPU of the exported components (denoiser, each VAE encoder and decoder).

Each ONNX file of the export cache (`copgen_rt.backends.export_cache`) is compiled once per
(ONNX sha256, precision, batch, OpenVINO version, CPU ISA flags, threads) and the compiled blob is
kept under `<cache>/openvino/`, so that a later process imports it instead of compiling.

Precision: `INFERENCE_PRECISION_HINT` bf16 where the CPU has native bf16 units (chosen by
`copgen_rt.device.choose_engine`), f32 otherwise or when fp32 is asked. LayerNorm statistics and
Softmax stay fp32 in the CPU plugin either way. Threads: the cores this process may run on.
Importing this module needs no OpenVINO; constructing a backend without it raises ImportError.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import Tensor

from copgen_rt.export.manifest import Component

PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}
# denoiser precisions compiled once per batch size (static shapes) instead of once with a dynamic
# batch axis: at copgen-base shapes, batch 2, static was 10% faster in fp32 and within noise (1%)
# in bf16 (benchmarks/results/bench-intel-r--xeon-r--processor.md), where one dynamic compile serves
# every batch size; VAEs keep a dynamic batch (not measured)
STATIC_BATCH_PRECISIONS = ("fp32",)


@dataclass
class CompileStats:
    """What this process compiled and what it imported from the cache."""

    compiles: int = 0
    cache_hits: int = 0
    compile_seconds: float = 0.0


STATS = CompileStats()


def require_openvino() -> ModuleType:
    try:
        import openvino
    except ImportError:
        raise ImportError("the openvino backend needs OpenVINO: pip install openvino") from None
    return openvino


def version() -> str:
    return require_openvino().get_version().split("-")[0]


@lru_cache(maxsize=1)
def _core():
    return require_openvino().Core()


def threads() -> int:
    """The cores this process may use (its affinity mask, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_isa() -> list[str]:
    """The CPU's vector ISA flags: a compiled model is specific to them."""
    from copgen_rt.device import cpu_flags

    return sorted(f for f in cpu_flags() if f.startswith(("sse", "avx", "amx", "fma", "f16c")))


def cache_dir() -> Path:
    from copgen_rt.backends.export_cache import cache_root

    return cache_root() / "openvino"


def compile_key(onnx_sha256: str, precision: str, batch: int | None) -> str:
    data = json.dumps([onnx_sha256, precision, batch or "dynamic", require_openvino().get_version(),
                       cpu_isa(), threads()])
    return hashlib.sha256(data.encode()).hexdigest()[:24]


def _config(precision: str) -> dict:
    return {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision], "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": threads()}


def compile_onnx(path: Path, onnx_sha256: str, precision: str, batch: int | None = None):
    """An `ov.CompiledModel` for the ONNX file: imported from the cache, else compiled and cached.
    `batch` None keeps the batch axis dynamic; an int compiles for that batch only."""
    core = _core()
    blob = cache_dir() / f"{compile_key(onnx_sha256, precision, batch)}.blob"
    if blob.is_file():
        try:
            data = np.memmap(blob, dtype=np.uint8, mode="r")  # no copy of a large blob in memory
            compiled = core.import_model(require_openvino().Tensor(data), "CPU", _config(precision))
            STATS.cache_hits += 1
            return compiled
        except RuntimeError:  # a blob from an interrupted or foreign write: compile it again
            blob.unlink(missing_ok=True)
    start = time.perf_counter()
    try:
        model = core.read_model(str(path))
    except RuntimeError as e:
        from copgen_rt.weights import CheckpointError, first_line

        raise CheckpointError(f"{path}: not a loadable ONNX model ({first_line(e)})") from None
    if batch is not None:
        model.reshape({port.get_any_name(): [batch, *list(port.get_partial_shape())[1:]]
                       for port in model.inputs})
    compiled = core.compile_model(model, "CPU", _config(precision))
    STATS.compiles += 1
    STATS.compile_seconds += time.perf_counter() - start
    blob.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=blob.parent, prefix=".compile-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(compiled.export_model().getbuffer())
        os.replace(tmp, blob)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return compiled


class _Engine:
    """One ONNX component: a compiled model (dynamic batch, or one per batch size) and its request."""

    def __init__(self, folder: Path, component: Component, precision: str, static_batch: bool = False):
        self.path, self.sha256, self.precision = folder / component.file, component.sha256, precision
        self.input_names = [t.name for t in component.inputs]
        self.static_batch = static_batch
        self._requests: dict[int | None, object] = {}
        if not static_batch:
            self._request(None)  # compile (or import) now, not at the first call

    def _request(self, batch: int | None):
        if batch not in self._requests:
            compiled = compile_onnx(self.path, self.sha256, self.precision, batch)
            self._requests[batch] = compiled.create_infer_request()
        return self._requests[batch]

    def run(self, inputs: list[Tensor]) -> list[Tensor]:
        device = inputs[0].device
        request = self._request(inputs[0].shape[0] if self.static_batch else None)
        feeds = {n: np.ascontiguousarray(t.detach().float().cpu().numpy())
                 for n, t in zip(self.input_names, inputs, strict=True)}
        request.infer(feeds, share_inputs=True)
        # copies: the request's output buffers are overwritten by its next call
        return [
            torch.from_numpy(np.array(request.get_output_tensor(i).data)).to(device)
            for i in range(len(request.model_outputs))
        ]


class OpenVinoDenoiser:
    name = "openvino"

    def __init__(self, folder: Path, component: Component, precision: str, static_batch: bool | None = None):
        self.precision = precision
        static = precision in STATIC_BATCH_PRECISIONS if static_batch is None else static_batch
        self.engine = _Engine(folder, component, precision, static)

    def __call__(self, latents: list[Tensor], timesteps: list[Tensor]) -> list[Tensor]:
        return self.engine.run([*latents, *timesteps])


class OpenVinoVAE:
    name = "openvino"

    def __init__(self, folder: Path, encoder: Component, decoder: Component, precision: str):
        self.encoder = _Engine(folder, encoder, precision)
        self.decoder = _Engine(folder, decoder, precision)

    def encode_moments(self, x: Tensor) -> Tensor:
        return self.encoder.run([x])[0]

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder.run([z])[0]


def run_fp32(path: Path, output_names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """One fp32 call of an ONNX file (the export's parity check), through the compile cache."""
    from copgen_rt.export.onnx import file_sha256

    request = compile_onnx(path, file_sha256(path), "fp32").create_infer_request()
    result = request.infer(feeds)
    by_name = {port.get_any_name(): value for port, value in result.items()}
    return [np.array(by_name[n]) for n in output_names]


def cached_denoiser(spec, model, checkpoint: Path, precision: str) -> OpenVinoDenoiser:
    """The denoiser exported once per (spec, checkpoint), compiled once per precision."""
    from copgen_rt.backends.export_cache import cached_export

    require_openvino()
    folder, manifest = cached_export(spec, "denoiser", model, checkpoint, parity_runtime="openvino")
    return OpenVinoDenoiser(folder, manifest.component("denoiser"), precision)


def cached_vae(spec, key: str, vae, checkpoint: Path, precision: str) -> OpenVinoVAE:
    from copgen_rt.backends.export_cache import cached_export

    require_openvino()
    folder, manifest = cached_export(spec, f"vae/{key}", vae, checkpoint, parity_runtime="openvino")
    return OpenVinoVAE(
        folder, manifest.component(f"vae_encoder/{key}"), manifest.component(f"vae_decoder/{key}"), precision
    )
