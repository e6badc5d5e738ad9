"""What a bench run records about the machine: versions, CPU, the engine choice, the load."""

from __future__ import annotations

import platform
import re
import subprocess

import numpy
import torch

from copgen_rt import __version__
from copgen_rt.device import choose, cpu_flags, cpu_name
from copgen_rt.plan import choose_engine


def environment(device: str) -> dict:
    """Versions of the runtime and its libraries, the CPU (and GPU) and what `infer` would choose."""
    from copgen_rt.export.onnx import runtime_versions

    env: dict[str, object] = {
        "copgen_rt": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "device": device,
        "precision_choice": choose(device).describe(),
        "engine_choice": choose_engine(device).describe(),
        "cpu_isa": sorted(f for f in cpu_flags() if f.startswith(("avx512", "amx", "avx2", "fma"))),
    }
    if device.startswith("cuda"):
        gpu = torch.cuda.get_device_name()
        env["gpu"] = gpu
        env["machine"] = machine_tag(gpu)
    else:
        env["machine"] = cpu_tag()
    return env | runtime_versions()


def machine_tag(name: str) -> str:
    """A device name as a file-name part: results are named by CPU or GPU kind."""
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").lower()


_NOT_THE_KIND = re.compile(r"\((r|tm)\)|\b(processor|cpu)\b|@.*$", re.IGNORECASE)


def cpu_tag() -> str:
    """This CPU's kind as results name it: vendor and family, `-amx` where it has Intel's matrix
    units (`intel-xeon-amx`, `amd-epyc`); a model name alone does not say which kind a VM got."""
    tag = machine_tag(" ".join(_NOT_THE_KIND.sub(" ", cpu_name()).split()[:2]) or "cpu")
    return f"{tag}-amx" if "amx_bf16" in cpu_flags() else tag


def machine_load() -> str:
    """`uptime`'s line: shared machines move timings by up to 20%."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "uptime unavailable"
