"""The spec dataclasses: a modality, its components (VAE, denoiser, schedule, release files) and
the model that holds them; their mappings are frozen."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from copgen_rt.errors import UnknownModalityError
from copgen_rt.specs.kinds import RGB8, Classes, Date, LatLon, Processing


@dataclass(frozen=True)
class Modality:
    name: str
    processing: Processing
    latent_shape: tuple[int, int, int]  # (C, H, W) seen by the denoiser
    patch_size: int
    bands: tuple[str, ...] = ()  # channel order of the pixel tensor (empty for scalars/classes)
    gsd: float | None = None  # ground sampling distance in metres (None for scalars)
    vae: str | None = None  # key into ModelSpec.vaes; None for scalars (identity "autoencoder")
    description: str = ""
    product: str = ""  # the input product it is read from (see PRODUCTS), e.g. "S2L2A"

    @property
    def image_gsd(self) -> float:
        """The ground sampling distance of an image modality; scalars have no pixel grid."""
        if self.gsd is None:
            raise ValueError(f"{self.name} is a scalar modality: it has no ground sampling distance")
        return self.gsd

    @property
    def is_image(self) -> bool:
        return not isinstance(self.processing, (LatLon, Date))

    @property
    def latent_size(self) -> int:
        c, h, w = self.latent_shape
        return c * h * w

    @property
    def num_tokens(self) -> int:
        _, h, w = self.latent_shape
        return (h // self.patch_size) * (w // self.patch_size)

    @property
    def pixel_channels(self) -> int:
        if isinstance(self.processing, Classes):
            return len(self.processing.codes)
        if isinstance(self.processing, RGB8):
            return 3
        return len(self.bands) if self.bands else 1

    def pixel_shape(self, downsampling: int = 8) -> tuple[int, int, int]:
        """Model-space pixel tensor shape (C, H, W); scalars keep their latent shape."""
        if not self.is_image:
            return self.latent_shape
        _, h, w = self.latent_shape
        return (self.pixel_channels, h * downsampling, w * downsampling)


@dataclass(frozen=True)
class VAESpec:
    """LDM AutoencoderKL (f = 2 ** (len(ch_mult) - 1)) hyper-parameters."""

    in_channels: int
    scale_factor: float
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 8

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


@dataclass(frozen=True)
class DenoiserSpec:
    """Post-LN U-ViT: depth // 2 in-blocks, one mid block, depth // 2 out-blocks with long skips."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    qkv_bias: bool = False

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads


@dataclass(frozen=True)
class ScheduleSpec:
    """Discrete Stable-Diffusion schedule: betas = linspace(sqrt(start), sqrt(end), n) ** 2."""

    beta_start: float = 0.00085
    beta_end: float = 0.012
    num_timesteps: int = 1000


@dataclass(frozen=True)
class ReleaseSpec:
    """Where the released weights live and how their files are named."""

    denoiser_hub_id: str | None = None
    vae_hub_id: str | None = None
    denoiser_files: tuple[str, ...] = ()  # file names of the released backbone checkpoint
    vae_files: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # vae key -> relative paths


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str  # "copgen" or "copgen-beta"
    modalities: tuple[Modality, ...]
    denoiser: DenoiserSpec
    vaes: Mapping[str, VAESpec]
    schedule: ScheduleSpec = ScheduleSpec()
    release: ReleaseSpec = ReleaseSpec()
    # COP-GEN shares one posterior sample between the n_samples copies of a condition,
    # COP-GEN-Beta draws one per copy (reference behaviour of each family).
    posterior_per_copy: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "vaes", _frozen_mapping(self.vaes))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)

    def modality(self, name: str) -> Modality:
        for m in self.modalities:
            if m.name == name:
                return m
        raise UnknownModalityError(f"unknown modality {name!r} for {self.name}; "
                                   f"known: {', '.join(self.names)}")

    def index(self, name: str) -> int:
        return self.names.index(self.modality(name).name)

    @property
    def num_tokens(self) -> int:
        return len(self.modalities) + sum(m.num_tokens for m in self.modalities)

    def vae_for(self, name: str) -> VAESpec:
        m = self.modality(name)
        if m.vae is None:
            raise KeyError(f"modality {name} is a scalar and has no autoencoder")
        if m.vae not in self.vaes:
            raise KeyError(f"spec {self.name} describes no autoencoder for {name}")
        return self.vaes[m.vae]

    def pixel_shape(self, name: str) -> tuple[int, int, int]:
        """Model-space pixel tensor (C, H, W) of a modality (its latent shape for scalars)."""
        m = self.modality(name)
        vae = self.vaes.get(m.vae) if m.vae is not None else None
        return m.pixel_shape(vae.downsampling if vae is not None else 8)

    def canonical(self, names: Iterable[str]) -> list[str]:
        """Validate modality names and return them in canonical order."""
        wanted = set(names)
        for n in wanted:
            self.modality(n)
        return [n for n in self.names if n in wanted]

    def replace(self, **changes: Any) -> ModelSpec:
        return dataclasses.replace(self, **changes)


class _FrozenDict(dict):
    def _readonly(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("spec mappings are immutable")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly

    def __hash__(self) -> int:  # type: ignore[override]  # dict's stub declares __hash__ None
        return hash(tuple(sorted(self.items())))


def _frozen_mapping(m: Mapping) -> Mapping:
    return m if isinstance(m, _FrozenDict) else _FrozenDict(m)
