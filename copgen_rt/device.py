"""Device and precision by capability: run in what the hardware does natively.

CPUs without bf16 units (no AVX512-BF16 / AMX) emulate bf16, which is several times slower than
fp32 (measured: the reference's bf16 autocast is ~6x slower on our AVX2 CPUs), so they get fp32;
GPUs get bf16 from compute capability 8.0 (Ampere) on, fp16 before. Explicit choices win.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch


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
        if {"avx512_bf16"} & flags or {"amx_bf16"} & flags:
            native, why = "bf16", "native bf16 (AVX512-BF16/AMX)"
        else:
            native, why = "fp32", "no native bf16 units (AVX512-BF16/AMX absent): bf16 would be emulated"
    else:
        raise ValueError(f"unknown device {device!r}; use cpu, cuda or cuda:N")
    if dtype is not None and dtype != native:
        return Choice(device, dtype, hardware, f"requested (the native choice would be {native})")
    return Choice(device, native, hardware, why)


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
