from __future__ import annotations

from typing import Protocol

from torch import Tensor


class DenoiserBackend(Protocol):
    name: str

    def __call__(self, latents: list[Tensor], timesteps: list[Tensor]) -> list[Tensor]: ...


class VAEBackend(Protocol):
    name: str

    def encode_moments(self, x: Tensor) -> Tensor: ...

    def decode(self, z: Tensor) -> Tensor: ...
