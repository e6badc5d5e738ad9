"""Device, precision and engine by capability: run in what the hardware does natively, on the
fastest engine present. The one place where these are chosen and where bad pairs are refused.

CPUs without bf16 units (no AVX512-BF16 / AMX) emulate bf16, which is several times slower than
fp32 (measured: the reference's bf16 autocast is ~6x slower on our AVX2 CPUs), so they get fp32;
GPUs get bf16 from compute capability 8.0 (Ampere) on, fp16 before. On CPUs "auto" lists the
engines that can run the precision here (`EngineChoice.candidates`: OpenVINO, torch.compile,
eager torch, where installed); which of them is fastest on this CPU kind is measured once and
cached (`copgen_rt.tuning`), OpenVINO standing in until then. CUDA keeps torch (CUDA graphs).
Explicit choices win; impossible ones (an engine on a device it cannot run on, a precision it
does not run) are a ValueError before any weights load.
"""

from __future__ import annotations

import importlib.util
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from copgen_rt.specs import ModelSpec


@dataclass(frozen=True)
class Choice:
    device: str
    dtype: str  # fp32 | fp16 | bf16
    hardware: str
    reason: str

    def describe(self) -> str:
        return f"device {self.device} ({self.hardware}), precision {self.dtype}: {self.reason}"


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def cpu_kind() -> str:
    """What a CPU's speed and fp32 bits depend on: its model name and torch's vector ISA level."""
    return f"{cpu_name()} | {torch.backends.cpu.get_cpu_capability()}"


def choose(device: str | None = None, dtype: str | None = None) -> Choice:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: no CUDA GPU is available")
        index = torch.device(device).index or 0
        major, minor = torch.cuda.get_device_capability(index)
        hardware = f"{torch.cuda.get_device_name(index)}, sm_{major}{minor}"
        native, why = ("bf16", "native bf16 tensor cores") if major >= 8 else \
            ("fp16", "fp16 tensor cores (no bf16 before sm_80)")
    elif device == "cpu":
        flags = cpu_flags()
        hardware = f"{cpu_name()}, {torch.get_num_threads()} threads"
        if _native_bf16(flags):
            native, why = "bf16", "native bf16 (AVX512-BF16/AMX)"
        else:
            native, why = "fp32", "no native bf16 units (AVX512-BF16/AMX absent): bf16 would be emulated"
    else:
        raise ValueError(f"unknown device {device!r}; use cpu, cuda or cuda:N")
    if dtype is not None and dtype != native:
        return Choice(device, dtype, hardware, f"requested (the native choice would be {native})")
    return Choice(device, native, hardware, why)


ENGINES = ("torch", "torch-compile", "triton", "onnxruntime", "openvino")
# what each engine runs: devices, denoiser precisions, and whether it serves the VAEs too
_ENGINE_DEVICES = {"torch": ("cpu", "cuda"), "torch-compile": ("cpu",), "triton": ("cuda",),
                   "onnxruntime": ("cpu", "cuda"), "openvino": ("cpu",)}
_ENGINE_DTYPES = {"torch": ("fp32", "fp16", "bf16"), "torch-compile": ("fp32", "bf16"),
                  "triton": ("fp32", "fp16", "bf16"), "onnxruntime": ("fp32",),
                  "openvino": ("fp32", "bf16", "int8")}
_SERVES_VAES = {"torch": True, "torch-compile": False, "triton": False, "onnxruntime": True,
                "openvino": True}
# what "auto" measures on CPUs, in order of preference where the measurement is not yet made or
# two engines are equally fast
CPU_CANDIDATES = ("openvino", "torch-compile", "torch")


@dataclass(frozen=True)
class EngineChoice:
    denoiser: str  # an engine of ENGINES
    vae: str
    dtype: str  # the denoiser's precision
    reason: str
    # for "auto" on CPUs: the engines able to run `dtype` here, `denoiser` the first of them;
    # which is fastest is measured (copgen_rt.tuning). Empty when there is nothing to measure.
    candidates: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"engine {self.denoiser} (VAEs {self.vae}), denoiser precision {self.dtype}: {self.reason}"


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def _device_type(device: str) -> str:
    return "cuda" if device.startswith("cuda") else device


def _triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"  # Triton's CPU interpreter (tests only)


def choose_engine(device: str, backend: str | Mapping[str, str] | None = None, dtype: str | None = None,
                  vae_dtype: str = "fp32") -> EngineChoice:
    """The engine of each component and the denoiser precision for `device`.

    backend: None or "auto", one engine name for every component it serves, or
    {"denoiser": ..., "vae": ...} (a missing or "auto" entry is chosen). dtype None: the device's
    native precision, narrowed to what the engine runs. Raises ValueError for a bad pair.
    """
    wanted = dict(backend) if isinstance(backend, Mapping) else \
        {"denoiser": backend, "vae": backend if backend is None or _SERVES_VAES.get(backend, True) else None}
    unknown = set(wanted) - {"denoiser", "vae"}
    if unknown:
        raise ValueError(f"backend for {', '.join(sorted(unknown))}: the components are denoiser and vae")
    kind = _device_type(device)
    reasons = []
    den = wanted.get("denoiser") or "auto"
    candidates: tuple[str, ...] = ()
    if den == "auto":
        if kind == "cpu" and openvino_installed() and dtype in (None, *_ENGINE_DTYPES["openvino"]):
            den, why = "openvino", "auto: OpenVINO is installed"
        elif kind == "cpu":
            den, why = "torch", ("auto: OpenVINO is not installed (pip install openvino)" if not
                                 openvino_installed() else f"auto: OpenVINO does not run {dtype}")
        else:
            den, why = "torch", f"auto: torch on {kind}" + (" with CUDA graphs" if kind == "cuda" else "")
        if kind == "cpu":
            runs = dtype or choose(device).dtype
            candidates = tuple(e for e in CPU_CANDIDATES if runs in _ENGINE_DTYPES[e]
                               and (e != "openvino" or openvino_installed()))
        reasons.append(why)
    else:
        _check_engine(den, kind, device)
        reasons.append("requested")
    if dtype is None:
        native = choose(device).dtype
        dtype = native if native in _ENGINE_DTYPES[den] else "fp32"
        reasons.append(f"precision {dtype}" + (" (the device's native precision)" if dtype == native else
                                              f" ({den} does not run {native})"))
    elif dtype not in _ENGINE_DTYPES[den]:
        raise ValueError(f"--backend {den} runs {_alternatives(_ENGINE_DTYPES[den])}, not --dtype {dtype}")
    else:
        reasons.append(f"precision {dtype} requested")
    if den == "openvino" and dtype == "bf16" and not _native_bf16(cpu_flags()):
        raise ValueError("--backend openvino --dtype bf16 needs native bf16 units (AVX512-BF16/AMX), "
                         "which this CPU lacks: use --dtype fp32")
    if dtype == "int8" and not _native_int8(cpu_flags()):
        raise ValueError("--dtype int8 needs integer dot-product units (AVX512-VNNI, AVX-VNNI or AMX), "
                         "which this CPU lacks: use the default precision")
    _require_installed(den)
    vae = wanted.get("vae") or "auto"
    if vae == "auto":
        vae = "openvino" if kind == "cpu" and openvino_installed() and \
            vae_dtype in _vae_dtypes("openvino") else "torch"
    else:
        _check_engine(vae, kind, device)
        if not _SERVES_VAES[vae]:
            raise ValueError(f"the {vae} backend runs the denoiser only; VAEs run on torch, onnxruntime "
                             "or openvino")
        if vae_dtype not in _vae_dtypes(vae):
            raise ValueError(f"VAE backend {vae} runs {_alternatives(_vae_dtypes(vae))}, not {vae_dtype}")
        _require_installed(vae)
    return EngineChoice(den, vae, dtype, "; ".join(reasons), candidates if len(candidates) > 1 else ())


def _vae_dtypes(engine: str) -> tuple[str, ...]:
    return tuple(d for d in _ENGINE_DTYPES[engine] if d != "int8")  # int8 is the denoiser's only


def _alternatives(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _check_engine(name: str, kind: str, device: str) -> None:
    if name not in ENGINES:
        raise ValueError(f"unknown backend {name!r}; choose auto, {', '.join(ENGINES)}")
    if kind not in _ENGINE_DEVICES[name] and not (name == "triton" and _triton_interpreted()):
        runs_on = " or ".join("a CUDA GPU" if d == "cuda" else "the CPU" for d in _ENGINE_DEVICES[name])
        raise ValueError(f"--backend {name} runs on {runs_on}, not on device {device}")


def _require_installed(name: str) -> None:
    if name == "openvino" and not openvino_installed():
        raise ImportError("--backend openvino needs OpenVINO: pip install openvino")


def _native_bf16(flags: set[str]) -> bool:
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def _native_int8(flags: set[str]) -> bool:
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & flags)


def int8_rest_precision() -> str:
    """What an int8 denoiser runs its unquantized layers in: bf16 where native, else fp32."""
    return "bf16" if _native_bf16(cpu_flags()) else "fp32"


def available_host_memory() -> int | None:
    """Bytes of host memory this process can still use: MemAvailable (or free pages), capped by
    a cgroup limit (containers); None where neither can be read."""
    available = []
    try:
        available += [int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    if not available:
        try:
            available.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, AttributeError):
            pass
    try:
        cgroup = Path("/sys/fs/cgroup")
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            available.append(int(limit) - int((cgroup / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return min(available) if available else None


def memory_batch_limit(spec: ModelSpec, device: str) -> int:
    """The most tiles per sampler call that memory allows (`copgen_rt.memory`: the whole process
    at the device's native precision on its default engine; at most 64 on GPUs, 8 on CPUs, which
    saturate at small batches). On a Jetson Orin, whose CPU and GPU share one memory, the edge
    plan of docs/edge.md: the largest batch whose whole-process peak fits the module's memory."""
    from copgen_rt import memory

    precision = choose(device).dtype
    engine = "torch" if device.startswith("cuda") or not openvino_installed() else "openvino"
    jetson = memory.detect_orin()
    if jetson is not None:
        return memory.edge_batch_check(spec, jetson, precision, engine, device)
    per_sample = memory.per_sample(spec, precision, engine, device)
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return max(1, min(memory.DENOISER_BATCH_CAP["cuda"], int(free * 0.5 // per_sample)))
    free = available_host_memory() or 0
    return max(1, min(memory.DENOISER_BATCH_CAP["cpu"], int(free * 0.25 // per_sample)))
