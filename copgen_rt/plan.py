"""The RuntimePlan: device, precision, the engine of each component and the batch size, decided
once (options, the hardware, and on CPUs the engines measured on this CPU kind), frozen, passed
down and recorded in provenance. Nothing below it decides again: the pipeline loads what the plan
names, a cluster's workers run the driver's plan or refuse to start.

Engine choice: explicit choices win; impossible ones (an engine on a device it cannot run on, a
precision it does not run) are an InputError before any weights load. "auto" on CPUs lists the
engines that can run the precision here (`EngineChoice.candidates`); which of them is fastest is
measured once per CPU kind and cached (`copgen_rt.tuning`), OpenVINO standing in until then. CUDA
keeps torch (CUDA graphs).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass

from copgen_rt import device
from copgen_rt.backends.registry import CPU_CANDIDATES, ENGINES, engine
from copgen_rt.errors import InputError, MissingDependencyError
from copgen_rt.specs import ModelSpec
from copgen_rt.tuning import Tuning, cached, default_batch_size, tuned

DTYPES = ("fp32", "fp16", "bf16", "int8")  # the one precision vocabulary of every command and the API


@dataclass(frozen=True)
class EngineChoice:
    denoiser: str  # an engine of the registry
    vae: str
    dtype: str  # the denoiser's precision
    reason: str
    # for "auto" on CPUs: the engines able to run `dtype` here, `denoiser` the first of them;
    # which is fastest is measured (copgen_rt.tuning). Empty when there is nothing to measure.
    candidates: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"engine {self.denoiser} (VAEs {self.vae}), denoiser precision {self.dtype}: {self.reason}"


def engine_installed(name: str) -> bool:
    return engine(name).installed()


def _device_type(name: str) -> str:
    return "cuda" if name.startswith("cuda") else name


def _triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"  # Triton's CPU interpreter (tests only)


def choose_engine(device_name: str, requested: str | Mapping[str, str] | None = None,
                  dtype: str | None = None, vae_dtype: str = "fp32") -> EngineChoice:
    """The engine of each component and the denoiser precision for `device_name`.

    requested: None or "auto", one engine name for every component it serves, or
    {"denoiser": ..., "vae": ...} (a missing or "auto" entry is chosen). dtype None: the device's
    native precision, narrowed to what the engine runs.
    """
    wanted = dict(requested) if isinstance(requested, Mapping) else \
        {"denoiser": requested,
         "vae": requested if requested in (None, "auto") or engine(requested).serves_vaes else None}
    unknown = set(wanted) - {"denoiser", "vae"}
    if unknown:
        raise InputError(f"engine for {', '.join(sorted(unknown))}: the components are denoiser and vae")
    kind = _device_type(device_name)
    reasons = []
    den = wanted.get("denoiser") or "auto"
    candidates: tuple[str, ...] = ()
    openvino = engine_installed("openvino")
    if den == "auto":
        if kind == "cpu" and openvino and dtype in (None, *ENGINES["openvino"].dtypes):
            den, why = "openvino", "auto: OpenVINO is installed"
        elif kind == "cpu":
            den, why = "torch", ("auto: OpenVINO is not installed (pip install openvino)" if not openvino
                                 else f"auto: OpenVINO does not run {dtype}")
        else:
            den, why = "torch", f"auto: torch on {kind}" + (" with CUDA graphs" if kind == "cuda" else "")
        if kind == "cpu":
            runs = dtype or device.choose(device_name).dtype
            candidates = tuple(e for e in CPU_CANDIDATES if runs in ENGINES[e].dtypes and engine_installed(e))
        reasons.append(why)
    else:
        _check_engine(den, kind, device_name)
        reasons.append("requested")
    den_dtypes = ENGINES[den].dtypes
    if dtype is None:
        native = device.choose(device_name).dtype
        dtype = native if native in den_dtypes else "fp32"
        reasons.append(f"precision {dtype}" + (" (the device's native precision)" if dtype == native else
                                              f" ({den} does not run {native})"))
    elif dtype not in den_dtypes:
        raise InputError(f"--engine {den} runs {_alternatives(den_dtypes)}, not --dtype {dtype}")
    else:
        reasons.append(f"precision {dtype} requested")
    if den == "openvino" and dtype == "bf16" and not device.native_bf16():
        raise InputError("--engine openvino --dtype bf16 needs native bf16 units (AVX512-BF16/AMX), "
                         "which this CPU lacks: use --dtype fp32")
    if dtype == "int8" and not device.native_int8():
        raise InputError("--dtype int8 needs integer dot-product units (AVX512-VNNI, AVX-VNNI or AMX), "
                         "which this CPU lacks: use the default precision")
    _require_installed(den)
    vae = wanted.get("vae") or "auto"
    if vae == "auto":
        vae = "openvino" if kind == "cpu" and openvino and vae_dtype in ENGINES["openvino"].vae_dtypes \
            else "torch"
    else:
        _check_engine(vae, kind, device_name)
        if not ENGINES[vae].serves_vaes:
            serving = " or ".join(e.name for e in ENGINES.values() if e.serves_vaes)
            raise InputError(f"the {vae} engine runs the denoiser only; VAEs run on {serving}")
        if vae_dtype not in ENGINES[vae].vae_dtypes:
            raise InputError(f"VAE engine {vae} runs {_alternatives(ENGINES[vae].vae_dtypes)}, "
                             f"not {vae_dtype}")
        _require_installed(vae)
    return EngineChoice(den, vae, dtype, "; ".join(reasons), candidates if len(candidates) > 1 else ())


def _alternatives(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _check_engine(name: str, kind: str, device_name: str) -> None:
    devices = engine(name).devices
    if kind not in devices and not (name == "triton" and _triton_interpreted()):
        runs_on = " or ".join("a CUDA GPU" if d == "cuda" else "the CPU" for d in devices)
        raise InputError(f"--engine {name} runs on {runs_on}, not on device {device_name}")


def _require_installed(name: str) -> None:
    if not engine_installed(name):
        chosen = engine(name)
        raise MissingDependencyError(f"--engine {name} needs {chosen.requires}: {chosen.install}")


def measured_choice(spec: ModelSpec, choice: EngineChoice, measure: bool = True
                    ) -> tuple[EngineChoice, Tuning | None]:
    """`choice` with "auto"'s denoiser engine replaced by the measured fastest, and the measurement
    (None where there was nothing to measure). `measure=False` only looks in the cache."""
    if not choice.candidates:
        return choice, None
    tuning = tuned(spec, choice.dtype, choice.candidates) if measure else \
        cached(spec, choice.dtype, choice.candidates)
    if tuning is None:
        return dataclasses.replace(choice, reason=f"{choice.reason}; not measured on this CPU kind yet: "
                                   f"the first run measures {', '.join(choice.candidates)}"), None
    rest = choice.reason.split("; ", 1)[1:]  # the precision's reason stays
    return dataclasses.replace(choice, denoiser=tuning.engine,
                               reason="; ".join([tuning.describe(), *rest])), tuning


@dataclass(frozen=True)
class RuntimePlan:
    """What runs where, decided once. `measured` is False where "auto" still has engines to
    measure on this CPU kind (the plan then names the stand-in, and `resolve(measure=True)` gives
    the final one)."""

    device: str  # cpu | cuda | cuda:N
    hardware: str  # what the device is, for humans
    engines: EngineChoice
    vae_dtype: str
    batch_size: int  # tiles per network call
    batch_reason: str
    tuning: Tuning | None = None
    measured: bool = True

    @property
    def dtype(self) -> str:
        return self.engines.dtype

    @property
    def denoiser_dtype(self) -> str:
        """What the denoiser module is loaded in: int8 leaves some layers unquantized, which run in
        the CPU's best float precision."""
        return device.int8_rest_precision() if self.dtype == "int8" else self.dtype

    def describe(self) -> str:
        return (f"device {self.device} ({self.hardware})\n{self.engines.describe()}\n"
                f"batch {self.batch_size} tiles per call: {self.batch_reason}")

    def to_json(self) -> dict:
        """What provenance records and what a cluster's workers must match."""
        return {"device": self.device, "denoiser": self.engines.denoiser, "vae": self.engines.vae,
                "dtype": self.dtype, "vae_dtype": self.vae_dtype, "batch_size": self.batch_size}


def check_runs_here(plan: RuntimePlan) -> None:
    """Raise (one line) where this machine cannot run `plan` exactly: its device missing, an engine
    not installed or unable to run the plan's precisions here (a cluster's workers, which run the
    driver's plan or refuse to start)."""
    if _device_type(plan.device) == "cuda":
        import torch

        if not torch.cuda.is_available() or torch.device(plan.device).index not in (None, *range(
                torch.cuda.device_count())):
            raise InputError(f"the plan runs on {plan.device}, which this machine lacks")
    choose_engine(plan.device, {"denoiser": plan.engines.denoiser, "vae": plan.engines.vae}, plan.dtype,
                  plan.vae_dtype)


def resolve(spec: ModelSpec, device_name: str | None = None, requested: str | Mapping[str, str] | None = None,
            dtype: str | None = None, vae_dtype: str = "fp32", batch_size: int | None = None,
            measure: bool = True) -> RuntimePlan:
    """The plan for `spec` from the options (None or "auto": chosen). `measure=False` measures
    nothing: a CPU kind not measured yet gets the stand-in engine and the memory's batch."""
    if dtype is not None and dtype not in DTYPES and dtype != "auto":
        raise InputError(f"--dtype {dtype}: choose {', '.join(DTYPES)}")
    choice = device.choose(device_name, None if dtype in (None, "auto", "int8") else dtype)
    engines = choose_engine(choice.device, None if requested == "auto" else requested,
                            None if dtype == "auto" else dtype, vae_dtype)
    engines, tuning = measured_choice(spec, engines, measure)
    if batch_size is not None:
        batch, why = batch_size, "requested"
    else:
        batch = default_batch_size(spec, choice.device, engines.dtype, engines.denoiser, tuning)
        why = ("the fastest per tile measured on this CPU kind within the memory limit" if tuning is not None
               else "the most the free memory allows")
    return RuntimePlan(choice.device, choice.hardware, engines, vae_dtype, batch, why, tuning,
                       measured=not engines.candidates or tuning is not None)
