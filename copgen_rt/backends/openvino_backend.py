"""OpenVINO execution on CPU of the exported components (denoiser, each VAE encoder and decoder).

Each ONNX file of the export cache (`copgen_rt.backends.export_cache`) is compiled once per
(ONNX sha256, precision, batch, OpenVINO version, CPU ISA flags, threads) and the compiled blob is
kept under `<cache>/openvino/`, so that a later process imports it instead of compiling.

Precision: `INFERENCE_PRECISION_HINT` bf16 where the CPU has native bf16 units (chosen by
`copgen_rt.device.choose_engine`), f32 otherwise or when fp32 is asked. LayerNorm statistics and
Softmax stay fp32 in the CPU plugin either way. Threads: the cores this process may run on.
Importing this module needs no OpenVINO; constructing a backend without it raises ImportError.

int8 (opt-in, `quantize_int8`): post-training W8A8 of the denoiser with NNCF, calibrated on the
denoiser inputs the pipeline itself makes (`Pipeline.chip_calls`), with the layers whose
error was out of line left in bf16/fp32 (`INT8_KEEP`); the quantized model is cached as an
OpenVINO IR next to the blobs, so that calibration runs once per model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import Tensor

from copgen_rt.backends.base import Engine
from copgen_rt.export.manifest import Component
from copgen_rt.export.onnx import ParityRuntime
from copgen_rt.files import onnx_sha256

PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}
# denoiser precisions compiled once per batch size (static shapes, each compile cached on disk)
# instead of once with a dynamic batch axis: at copgen-base shapes static was 10% faster in fp32
# (batch 2, benchmarks/results/bench-intel-xeon-amx-busy.md) and in bf16 as fast at batch 1
# and 2 and 6% faster at batch 4 (benchmarks/results/bf16-static-vs-dynamic.json, Zen 5); on an
# Intel Xeon with AMX, bf16 static ran 10% slower than dynamic at batch 2 in one bench run and
# between 2% slower and 5% faster in three interleaved runs at 3 to 21 blocks since
# (the last: benchmarks/results/engine-depths-intel-xeon-amx-*): that one run was noise.
# VAEs keep a dynamic batch (not measured)
STATIC_BATCH_PRECISIONS = ("fp32", "bf16")
# left unquantized by int8: measured per layer group on copgen-mid (benchmarks/int8_openvino.py
# --sensitivity, benchmarks/results/int8-sensitivity-copgen-mid.json, worst of 10 held-out calls):
# quantizing only the patch embeddings gave 0.34 relative error per call, only the first block 0.39
# (its input is the raw token sum: the U-ViT is post-LN), any other block or the output heads at
# most 0.061 against bf16's 0.058; all layers 0.44, all but these 0.068
INT8_KEEP = (".*patch_embeds.*", r".*in_blocks\.0/.*")
INT8_RECIPE = "nncf W8A8, model_type transformer, recipe 1"  # part of the cached IR's key


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


def compile_config(precision: str) -> dict:
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
            compiled = core.import_model(require_openvino().Tensor(data), "CPU", compile_config(precision))
            STATS.cache_hits += 1
            return compiled
        except RuntimeError:  # a blob from an interrupted or foreign write: compile it again
            blob.unlink(missing_ok=True)
    start = time.perf_counter()
    try:
        model = core.read_model(str(path))
    except RuntimeError as e:
        from copgen_rt.errors import CheckpointError, first_line

        raise CheckpointError(f"{path}: not a loadable ONNX model ({first_line(e)})") from None
    if batch is not None:
        model.reshape({port.get_any_name(): [batch, *list(port.get_partial_shape())[1:]]
                       for port in model.inputs})
    compiled = core.compile_model(model, "CPU", compile_config(precision))
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
    """One component (ONNX file or OpenVINO IR): a compiled model (dynamic batch, or one per batch
    size) and its request."""

    def __init__(self, path: Path, sha256: str, input_names: list[str], output_names: list[str],
                 precision: str, static_batch: bool = False):
        self.path, self.sha256, self.precision = path, sha256, precision
        self.input_names, self.output_names = input_names, output_names
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
        # by name (quantization may reorder a model's results); copies: the request's output
        # buffers are overwritten by its next call
        return [torch.from_numpy(np.array(request.get_tensor(name).data)).to(device)
                for name in self.output_names]


def _component_engine(folder: Path, component: Component, precision: str,
                      static_batch: bool = False) -> _Engine:
    return _Engine(folder / component.file, component.sha256, [t.name for t in component.inputs],
                   [t.name for t in component.outputs], precision, static_batch)


class OpenVinoDenoiser:
    name = "openvino"

    def __init__(self, engine: _Engine, precision: str):
        self.engine, self.precision = engine, precision

    @classmethod
    def of_component(cls, folder: Path, component: Component, precision: str,
                     static_batch: bool | None = None) -> OpenVinoDenoiser:
        static = precision in STATIC_BATCH_PRECISIONS if static_batch is None else static_batch
        return cls(_component_engine(folder, component, precision, static), precision)

    def __call__(self, latents: list[Tensor], timesteps: list[Tensor]) -> list[Tensor]:
        return self.engine.run([*latents, *timesteps])


class OpenVinoVAE:
    name = "openvino"

    def __init__(self, folder: Path, encoder: Component, decoder: Component, precision: str):
        self.encoder = _component_engine(folder, encoder, precision)
        self.decoder = _component_engine(folder, decoder, precision)

    def encode_moments(self, x: Tensor) -> Tensor:
        return self.encoder.run([x])[0]

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder.run([z])[0]


def run_fp32(path: Path, output_names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """One fp32 call of an ONNX file (the export's parity check), through the compile cache."""
    request = compile_onnx(path, onnx_sha256(path), "fp32").create_infer_request()
    result = request.infer(feeds)
    by_name = {port.get_any_name(): value for port, value in result.items()}
    return [np.array(by_name[n]) for n in output_names]


def parity_runtime() -> ParityRuntime:
    """An export's parity check through OpenVINO, for the exports this engine runs."""
    return run_fp32, f"openvino {version()} CPU fp32"


def cached_denoiser(spec, model, checkpoint: Path, precision: str) -> OpenVinoDenoiser:
    """The denoiser exported once per (spec, checkpoint), compiled once per precision."""
    from copgen_rt.backends.export_cache import cached_export

    require_openvino()
    folder, manifest = cached_export(spec, "denoiser", model, checkpoint, parity_runtime=parity_runtime())
    return OpenVinoDenoiser.of_component(folder, manifest.component("denoiser"), precision)


def cached_vae(spec, key: str, vae, checkpoint: Path, precision: str) -> OpenVinoVAE:
    from copgen_rt.backends.export_cache import cached_export

    require_openvino()
    folder, manifest = cached_export(spec, f"vae/{key}", vae, checkpoint, parity_runtime=parity_runtime())
    return OpenVinoVAE(
        folder, manifest.component(f"vae_encoder/{key}"), manifest.component(f"vae_decoder/{key}"), precision
    )


def quantize_int8(denoiser: OpenVinoDenoiser, calibration: Callable[[], list[list[Tensor]]],
                  keep: tuple[str, ...] = INT8_KEEP) -> OpenVinoDenoiser:
    """The denoiser with int8 weights and activations (W8A8) where it holds, the nodes matching
    `keep` (regexes) in the denoiser's own precision. `calibration()` gives the denoiser inputs to
    calibrate on ([*latents, *timesteps] per call); it runs only when the quantized model is not
    cached."""
    try:
        import nncf
    except ImportError:
        raise ImportError("--dtype int8 needs NNCF: pip install 'copgen-rt[int8]'") from None
    engine = denoiser.engine
    key = hashlib.sha256(json.dumps([engine.sha256, INT8_RECIPE, keep, nncf.__version__]).encode()
                         ).hexdigest()[:24]
    xml = cache_dir() / f"int8-{key}.xml"
    if not (xml.is_file() and xml.with_suffix(".bin").is_file()):
        calls = [{n: t.detach().float().cpu().numpy() for n, t in zip(engine.input_names, call, strict=True)}
                 for call in calibration()]
        start = time.perf_counter()
        with _quiet_nncf():
            model = nncf.quantize(_core().read_model(str(engine.path)), nncf.Dataset(calls),
                                  model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calls),
                                  ignored_scope=nncf.IgnoredScope(patterns=list(keep), validate=False))
        STATS.compile_seconds += time.perf_counter() - start
        _save_ir(model, xml)
    return OpenVinoDenoiser(_Engine(xml, key, engine.input_names, engine.output_names, denoiser.precision),
                            "int8")


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF logs every node it leaves out and draws progress bars, on stdout, where the CLI lists
    its outputs: errors only (they raise anyway), and no bars."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            yield
    finally:
        logger.setLevel(level)


def _save_ir(model, xml: Path) -> None:
    """An IR (.xml + .bin) published by renames, the .xml last: its presence means complete."""
    xml.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=xml.parent, prefix=".int8-"))
    try:
        require_openvino().save_model(model, str(tmp / xml.name), compress_to_fp16=False)
        os.replace(tmp / xml.with_suffix(".bin").name, xml.with_suffix(".bin"))
        os.replace(tmp / xml.name, xml)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


ENGINE = Engine("openvino", devices=("cpu",), dtypes=("fp32", "bf16", "int8"), vae_dtypes=("fp32", "bf16"),
                requires="openvino", install="pip install openvino", cached_denoiser=cached_denoiser,
                component_denoiser=OpenVinoDenoiser.of_component, make_vae=cached_vae)
