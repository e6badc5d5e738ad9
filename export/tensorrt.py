"""TensorRT engines from the exported ONNX files: one engine per component.

`build_plan` (no TensorRT needed) fixes everything an engine build depends on: the optimisation
profile of every input (batch buckets min/opt/max, all other dimensions exact), the precision
flags, the layers kept in fp32 (LayerNormalization, Softmax) and the cache key. `build_engines`
then runs the TensorRT builder (import-guarded) with a timing cache and an engine cache keyed
by (ONNX hash, precision, profiles, TensorRT version, GPU compute capability), so a stale engine
is never loaded.

int8 is explicit quantization: the export's denoiser is then the Q/DQ graph of `export/int8.py`,
and TensorRT runs int8 exactly where the graph says; the layers it leaves unquantized run fp16
(LayerNorm and Softmax fp32). It needs int8 tensor cores: compute capability 7.2 on (Xavier,
Turing, Ampere with Jetson Orin's sm_87, Ada, Hopper). No int8 engine has been built yet: the
machine this was written on had no GPU and no TensorRT.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from copgen_rt.errors import MissingDependencyError
from copgen_rt.export.manifest import Component, Manifest
from copgen_rt.files import output_folder, write_bytes

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
INT8_TENSOR_CORES = (7, 2)  # the first compute capability with int8 tensor-core MMA (Xavier)
FP32_LAYERS = ("LayerNormalization", "Softmax")  # ONNX ops whose TensorRT layers stay in fp32


def require_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise MissingDependencyError("TensorRT is not installed (pip install copgen-rt[tensorrt] on a "
                                  "machine with an NVIDIA GPU)") from None
    return trt


def profile_shapes(component: Component, batch: list[int]) -> dict[str, list[list[int]]]:
    """input name -> [min, opt, max] shapes; only the batch axis varies."""
    return {t.name: [[b if d == "batch" else d for d in t.shape] for b in batch] for t in component.inputs}


def build_plan(manifest: Manifest, precision: str, batch: list[int] | None = None) -> dict:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose {', '.join(PRECISIONS)}")
    if precision == "int8" and manifest.component("denoiser").precision != "int8":
        raise ValueError("int8 engines are built from the Q/DQ denoiser of `copgen-rt export --dtype int8`; "
                         "this export's denoiser is fp32")
    batch = list(batch or manifest.batch)
    if not (1 <= batch[0] <= batch[1] <= batch[2]):
        raise ValueError(f"batch must be MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX, got {batch}")
    components: dict[str, dict] = {}
    plan = {"precision": precision, "batch": batch, "flags": _flags(precision),
            "fp32_layers": list(FP32_LAYERS) if precision != "fp32" else [], "components": components}
    for c in manifest.components:
        components[c.name] = {"onnx": c.file, "onnx_sha256": c.sha256,
                                      "profiles": profile_shapes(c, batch),
                                      "engine": c.file.replace(".onnx", f".{precision}.engine")}
    return plan


def _flags(precision: str) -> list[str]:
    return {"fp32": [], "fp16": ["FP16", "OBEY_PRECISION_CONSTRAINTS"],
            "bf16": ["BF16", "OBEY_PRECISION_CONSTRAINTS"],
            "int8": ["INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS"]}[precision]


def check_capability(precision: str, capability: tuple[int, int]) -> None:
    """Refuse an int8 build on a GPU without int8 tensor cores."""
    if precision == "int8" and tuple(capability) < INT8_TENSOR_CORES:
        raise ValueError(f"int8 engines need int8 tensor cores (compute capability >= 7.2); this GPU is "
                         f"sm_{capability[0]}{capability[1]}: build fp16")


def cache_key(entry: dict, plan: dict, trt_version: str, capability: tuple[int, int]) -> str:
    parts = {"onnx": entry["onnx_sha256"], "precision": plan["precision"], "profiles": entry["profiles"],
             "trt": trt_version, "sm": list(capability)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def build_engines(folder: Path, precision: str, batch: list[int] | None = None,
                  workspace_gb: float = 8.0, log=print) -> Manifest:
    """Build (or reuse from the engine cache) one engine per component; updates the manifest."""
    trt = require_tensorrt()
    import torch

    folder = Path(folder)
    manifest = Manifest.load(folder)
    plan = build_plan(manifest, precision, batch)
    capability = torch.cuda.get_device_capability()
    check_capability(precision, capability)
    logger = trt.Logger(trt.Logger.WARNING)
    timing_path = folder / "timing.cache"
    cache_dir = output_folder(folder / "engine-cache", below=folder)  # never a planted link
    for name, entry in plan["components"].items():
        key = cache_key(entry, plan, trt.__version__, capability)
        cached = cache_dir / f"{key}.engine"
        if not cached.exists():
            log(f"building {name} ({precision}, batch {plan['batch']})")
            serialized = _build_one(trt, logger, folder / entry["onnx"], entry["profiles"], plan,
                                    timing_path, workspace_gb)
            write_bytes(cached, serialized, below=folder)
        entry["engine"] = str(cached.relative_to(folder))
        entry["cache_key"] = key
    plan.update({"tensorrt": trt.__version__, "compute_capability": list(capability),
                 "gpu": torch.cuda.get_device_name()})
    manifest.tensorrt = plan
    manifest.format = "tensorrt"
    manifest.save(folder)
    return manifest


def _build_one(trt, logger, onnx_path: Path, profiles: dict, plan: dict, timing_path: Path,
               workspace_gb: float) -> bytes:
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * 1024**3))
    for flag in plan["flags"]:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if plan["fp32_layers"]:
        keep = {trt.LayerType.NORMALIZATION, trt.LayerType.SOFTMAX}
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.type in keep:
                layer.precision = trt.float32
                for j in range(layer.num_outputs):
                    layer.set_output_type(j, trt.float32)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profiles.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.exists() else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine for {onnx_path.name}")
    write_bytes(timing_path, bytes(config.get_timing_cache().serialize()), below=timing_path.parent)
    return bytes(serialized)
