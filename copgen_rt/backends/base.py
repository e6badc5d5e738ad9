"""The one interface behind which every component runs, and the record each engine declares.

Words: an *engine* is a named way to run components (torch, openvino, ...: one `Engine` record
per backend module, collected in `copgen_rt.backends.registry`); a *backend* is the runnable
object an engine builds for one component (`DenoiserBackend`, `VAEBackend`); an *export* is a
folder of ONNX files (and TensorRT engines) written by `copgen-rt export`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from torch import Tensor

if TYPE_CHECKING:
    from copgen_rt.export.manifest import Component
    from copgen_rt.models import Autoencoder, Denoiser
    from copgen_rt.specs import ModelSpec


class DenoiserBackend(Protocol):
    name: str

    def __call__(self, latents: list[Tensor], timesteps: list[Tensor]) -> list[Tensor]: ...


class VAEBackend(Protocol):
    name: str

    def encode_moments(self, x: Tensor) -> Tensor: ...

    def decode(self, z: Tensor) -> Tensor: ...


# an in-memory model -> its backend (engines that run the torch module)
ModelBuilder = Callable[["Denoiser"], DenoiserBackend]
# (spec, fp32 model, its checkpoint, precision) -> the backend of the model's cached export
CachedBuilder = Callable[["ModelSpec", "Denoiser", Path, str], DenoiserBackend]
# (export folder, its denoiser component, precision, static batch or None for the default)
ComponentBuilder = Callable[[Path, "Component", str, "bool | None"], DenoiserBackend]
# (spec, VAE key, model, its checkpoint, precision) -> the VAE backend
VAEBuilder = Callable[["ModelSpec", str, "Autoencoder", Path, str], VAEBackend]


@dataclass(frozen=True)
class Engine:
    """What one engine runs and how it builds backends. Exported engines (`exported`) run the fp32
    ONNX export of a component, whatever precision they compute in; the others run the module."""

    name: str
    devices: tuple[str, ...]  # "cpu", "cuda"
    dtypes: tuple[str, ...]  # the denoiser precisions it runs
    vae_dtypes: tuple[str, ...] = ()  # the VAE precisions it runs; () where it runs no VAE
    requires: str | None = None  # the library it needs, checked before any weights load
    install: str = ""  # how to get that library
    make_denoiser: ModelBuilder | None = None
    cached_denoiser: CachedBuilder | None = None
    component_denoiser: ComponentBuilder | None = None
    make_vae: VAEBuilder | None = None

    @property
    def exported(self) -> bool:
        return self.cached_denoiser is not None

    @property
    def serves_vaes(self) -> bool:
        return self.make_vae is not None

    def installed(self) -> bool:
        return self.requires is None or importlib.util.find_spec(self.requires) is not None
