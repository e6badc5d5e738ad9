"""Every engine, by name: the `Engine` record each backend module declares. Adding an engine is a
new backend module with its record, and one line here."""

from __future__ import annotations

from copgen_rt.backends import (
    onnxruntime_backend,
    openvino_backend,
    torch_backend,
    torch_compile_backend,
    triton_backend,
)
from copgen_rt.backends.base import Engine
from copgen_rt.errors import InputError

ENGINES: dict[str, Engine] = {e.name: e for e in (
    torch_backend.ENGINE,
    torch_compile_backend.ENGINE,
    triton_backend.ENGINE,
    onnxruntime_backend.ENGINE,
    openvino_backend.ENGINE,
)}
# what "auto" measures on CPUs (copgen_rt.tuning), in order of preference where the measurement is
# not yet made or two engines are equally fast
CPU_CANDIDATES = ("openvino", "torch-compile", "torch")


def engine(name: str) -> Engine:
    try:
        return ENGINES[name]
    except KeyError:
        raise InputError(f"unknown engine {name!r}; choose auto, {', '.join(ENGINES)}") from None
