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

import os
import platform
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
        hardware = f"{cpu_name()}, {torch.get_num_threads()} threads"
        if native_bf16():
            native, why = "bf16", "native bf16 (AVX512-BF16/AMX)"
        else:
            native, why = "fp32", "no native bf16 units (AVX512-BF16/AMX absent): bf16 would be emulated"
    elif device == "meta":  # shapes only, no data (checks of a checkpoint against a spec)
        hardware, native, why = "no data", "fp32", "shapes only"
    else:
        raise ValueError(f"unknown device {device!r}; use cpu, cuda or cuda:N")
    if dtype is not None and dtype != native:
        return Choice(device, dtype, hardware, f"requested (the native choice would be {native})")
    return Choice(device, native, hardware, why)


def native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def native_int8() -> bool:
    """Whether this CPU has integer dot-product units (AVX512-VNNI, AVX-VNNI or AMX)."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())


def int8_rest_precision() -> str:
    """What an int8 denoiser runs its unquantized layers in: bf16 where native, else fp32."""
    return "bf16" if native_bf16() else "fp32"


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
    """The most tiles per sampler call that free memory allows: ~40 activations of (tokens x
    width) floats per sample; at most 64 on GPUs, 8 on CPUs (which saturate at small batches)."""
    per_sample = 4 * spec.num_tokens * spec.denoiser.embed_dim * 40 + 4 * spec.denoiser.num_heads * \
        spec.num_tokens ** 2 * 2
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return max(1, min(64, int(free * 0.5 // per_sample)))
    free = available_host_memory() or 0
    return max(1, min(8, int(free * 0.25 // per_sample)))
