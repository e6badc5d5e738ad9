"""Model specs: the modality registry and the hyper-parameters of each released model.

This is the only module that knows modality facts (order, bands, resolutions, normalisation,
latent shapes, which VAE encodes what). Everything else reads them from a `ModelSpec`.
Specs are immutable; custom specs are made with `dataclasses.replace` (see `from_json`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn


class UnknownModalityError(KeyError, ValueError):
    """A modality name the spec does not have (a KeyError for lookups, a ValueError for callers)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# --- processing kinds: the constants of each physical <-> model-space mapping ------------------


@dataclass(frozen=True)
class Reflectance:
    """Sentinel-2 digital numbers: x = DN / scale * 2 - 1 (no clipping, no offset handling)."""

    scale: float = 10000.0
    units: str = "DN (reflectance x 10000)"
    plausible: tuple[float, float] = (-1000.0, 65535.0)  # uint16 DNs, less a removed baseline offset


@dataclass(frozen=True)
class LogRange:
    """Log-scaled min-max range: S1 backscatter (10 log10, dB) or DEM height (log1p, metres)."""

    log: str  # "db" or "log1p"
    low: float
    high: float
    min_positive: float
    units: str = ""


@dataclass(frozen=True)
class Classes:
    """Categorical raster: codes mapped to indices, one-hot in [-1, 1]; decoded by argmax."""

    codes: tuple[int, ...]
    names: tuple[str, ...]
    units: str = "class code"
    colors: tuple[str, ...] = ()  # display colour per class (quicklooks), "#rrggbb"


@dataclass(frozen=True)
class LatLon:
    """Location (lat, lon) in degrees as a unit 3-vector (x, y, z)."""

    units: str = "degrees (lat, lon)"


@dataclass(frozen=True)
class Date:
    """Acquisition date as (sin doy, cos doy, 2 (year - 1950) / 100 - 1)."""

    units: str = "date (day, month, year)"


DATE_SPAN = ("1950-01-01", "2050-12-31")  # the years a Date's third component maps to [-1, 1]


@dataclass(frozen=True)
class RGB8:
    """8-bit RGB thumbnail: x = (u / 255 - 0.5) / 0.5; decoded with clamp and round half up."""

    units: str = "uint8 RGB"


Processing = Reflectance | LogRange | Classes | LatLon | Date | RGB8


# --- modality, components, model ---------------------------------------------------------------


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


# --- the registry -------------------------------------------------------------------------------

S2_60M_L1C = ("B01", "B09", "B10")
S2_60M_L2A = ("B01", "B09")
S2_10M = ("B04", "B03", "B02", "B08")
S2_20M = ("B05", "B06", "B07", "B8A", "B11", "B12")

LULC_CLASSES = Classes(
    codes=(0, 1, 2, 4, 5, 7, 8, 9, 10, 11),
    names=("NoData", "Water", "Trees", "Flooded Vegetation", "Crops", "Built-up Areas",
           "Bare Ground", "Snow/Ice", "Clouds", "Rangeland"),
    colors=("#000000", "#419bdf", "#397d49", "#7a87c6", "#e49635", "#c4281b", "#a59b8f", "#a8ebff",
            "#616161", "#e3e2c3"),  # the Esri 10 m land cover palette
)
CLOUD_CLASSES = Classes(codes=(0, 1, 2, 3), names=("Clear", "Thick", "Thin", "Shadow"),
                        colors=("#2b5d2b", "#ffffff", "#b0b0b0", "#303030"))

_S1 = LogRange("db", -55.787186, 40.225800, 2.6380407689430285e-06, units="linear gamma0")
_DEM = LogRange("log1p", 0.000006, 9.088, 5.899129519093549e-06, units="m")
_S2 = Reflectance()

# Input products as users hold them: band layout of the usual files, in file order.
PRODUCTS: dict[str, tuple[str, ...]] = {
    "S2L2A": ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"),
    "S2L1C": ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"),
    "S1RTC": ("VV", "VH"),
    "DEM": ("DEM",),
    "LULC": ("LULC",),
    "CLOUD": ("cloud_mask",),
}

# The S2 DN convention COP-GEN was trained on. [inferred: neither Major TOM nor COP-GEN states
# it] Major TOM Core reads the SAFE JP2s with a plain windowed read (no offset or harmonisation
# code anywhere in its repository) and its products carry baselines N0400/N0500, whose DNs are
# reflectance x 10000 + 1000 (BOA_ADD_OFFSET / RADIO_ADD_OFFSET -1000). So the model's DNs are
#     model DN = reflectance x S2_QUANTIFICATION + S2_MODEL_ADD
# and an input whose metadata says reflectance = (DN + ADD_OFFSET) / QUANTIFICATION is shifted by
# ADD_OFFSET + S2_MODEL_ADD (0 for baseline >= 04.00, +1000 for older products).
S2_QUANTIFICATION = 10000.0
S2_MODEL_ADD = 1000.0
S2_DN_CONVENTION = ("model DN = reflectance x 10000 + 1000 (Major TOM Core: SAFE DNs as stored, baselines "
                    ">= 04.00; inferred from its code and product ids, not stated by Major TOM or COP-GEN)")

# what S2 reflectance outputs are, once scaled (scale 1/S2_QUANTIFICATION, offset -S2_MODEL_ADD/...)
REFLECTANCE_OF = {"S2L2A": "surface reflectance (BOA, L2A)",
                  "S2L1C": "top-of-atmosphere reflectance (TOA, L1C)"}
# class conventions: inputs may be indices 0..n-1 (Major TOM / TerraMesh chips) or the codes;
# outputs are always the codes (Esri land cover 0,1,2,4,5,7,8,9,10,11; cloud mask 0..3)
CLASS_CONVENTION = (
    "outputs are class codes (Esri 10 m land cover: 0 NoData, 1 Water, 2 Trees, 4 Flooded "
    "Vegetation, 5 Crops, 7 Built-up Areas, 8 Bare Ground, 9 Snow/Ice, 10 Clouds, 11 Rangeland; "
    "cloud mask: 0 Clear, 1 Thick, 2 Thin, 3 Shadow); land-cover inputs may be indices 0-9 "
    "(Major TOM chips) or these codes (--lulc-values)"
)

# Sentinel-2 band ids of the SAFE metadata (band_id="0".."12") and STAC common names
S2_BAND_IDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
COMMON_NAMES = {
    "coastal": "B01",
    "blue": "B02",
    "green": "B03",
    "red": "B04",
    "rededge1": "B05",
    "rededge2": "B06",
    "rededge3": "B07",
    "nir": "B08",
    "nir08": "B8A",
    "nir09": "B09",
    "cirrus": "B10",
    "swir16": "B11",
    "swir22": "B12",
    "vv": "VV",
    "vh": "VH",
    "elevation": "DEM",
    "dem": "DEM",
    "lulc": "LULC",
    "landcover": "LULC",
    "cloud_mask": "cloud_mask",
}

# (name, processing, latent shape, bands, gsd, VAE scale factor, released VAE folder, description)
_COPGEN_TABLE = (
    ("3d_cartesian_lat_lon", LatLon(), (1, 1, 3), (), None, None, None, "location"),
    ("DEM_DEM", _DEM, (8, 8, 8), ("DEM",), 30.0, 0.404247, "DEM_64x64_DEM_latent_8", "Copernicus DEM GLO-30"),
    (
        "LULC_LULC",
        LULC_CLASSES,
        (8, 24, 24),
        (),
        10.0,
        0.464794,
        "LULC_192x192_LULC_latent_8",
        "Esri/IO land cover",
    ),
    (
        "S1RTC_vh_vv",
        _S1,
        (8, 24, 24),
        ("VV", "VH"),
        10.0,
        0.633804,
        "S1RTC_192x192_VV_VH_latent_8",
        "Sentinel-1 RTC",
    ),
    (
        "S2L1C_B01_B09_B10",
        _S2,
        (8, 4, 4),
        S2_60M_L1C,
        60.0,
        0.565812,
        "S2L1C_32x32_B1_9_10_latent_8",
        "Sentinel-2 L1C 60 m",
    ),
    (
        "S2L1C_B02_B03_B04_B08",
        _S2,
        (8, 24, 24),
        S2_10M,
        10.0,
        0.772514,
        "S2L1C_192x192_B4_3_2_8_latent_8",
        "Sentinel-2 L1C 10 m",
    ),
    (
        "S2L1C_B05_B06_B07_B11_B12_B8A",
        _S2,
        (8, 12, 12),
        S2_20M,
        20.0,
        0.765817,
        "S2L1C_96x96_B5_6_7_8A_11_12_latent_8",
        "Sentinel-2 L1C 20 m",
    ),
    (
        "S2L1C_cloud_mask",
        CLOUD_CLASSES,
        (8, 24, 24),
        (),
        10.0,
        0.557045,
        "S2L1C_192x192_cloud_mask_latent_8",
        "Sentinel-2 L1C cloud mask",
    ),
    (
        "S2L2A_B01_B09",
        _S2,
        (8, 4, 4),
        S2_60M_L2A,
        60.0,
        0.571367,
        "S2L2A_32x32_B1_9_latent_8",
        "Sentinel-2 L2A 60 m",
    ),
    (
        "S2L2A_B02_B03_B04_B08",
        _S2,
        (8, 24, 24),
        S2_10M,
        10.0,
        0.853416,
        "S2L2A_192x192_B4_3_2_8_latent_8",
        "Sentinel-2 L2A 10 m",
    ),
    (
        "S2L2A_B05_B06_B07_B11_B12_B8A",
        _S2,
        (8, 12, 12),
        S2_20M,
        20.0,
        0.567267,
        "S2L2A_96x96_B5_6_7_8A_11_12_latent_8",
        "Sentinel-2 L2A 20 m",
    ),
    ("mean_timestamps", Date(), (1, 1, 3), (), None, None, None, "date"),
)


def _copgen(
    name: str, denoiser: DenoiserSpec, denoiser_files: tuple[str, ...], hub_id: str | None
) -> ModelSpec:
    modalities, vaes, vae_files = [], {}, {}
    for key, proc, latent, bands, gsd, scale, folder, desc in _COPGEN_TABLE:
        is_image = scale is not None
        product = {"S2L1C_cloud_mask": "CLOUD"}.get(key, key.split("_")[0]) if is_image else ""
        modalities.append(
            Modality(
                key,
                proc,
                latent,
                patch_size=2 if is_image else 1,
                bands=bands,
                gsd=gsd,
                vae=key if is_image else None,
                description=desc,
                product=product,
            )
        )
        if scale is not None:
            channels = len(proc.codes) if isinstance(proc, Classes) else len(bands)
            vaes[key] = VAESpec(in_channels=channels, scale_factor=scale)
            vae_files[key] = (
                f"models/vae/{folder}/model-50-ema.pth",
                f"{folder}/model-50-ema.pth",
                f"models/vae/{folder}/model-50.pt",
                f"{folder}/model-50.pt",
            )
    release = ReleaseSpec(
        denoiser_hub_id=hub_id,
        vae_hub_id="mespinosami/copgen-vaes",
        denoiser_files=denoiser_files,
        vae_files=vae_files,
    )
    return ModelSpec(
        name=name,
        family="copgen",
        modalities=tuple(modalities),
        denoiser=denoiser,
        vaes=vaes,
        release=release,
    )


_BETA_MODALITIES = (
    ("dem", "DEM hillshade thumbnail"),
    ("s1_rtc", "Sentinel-1 RTC false colour"),
    ("s2_l1c", "Sentinel-2 L1C true colour"),
    ("s2_l2a", "Sentinel-2 L2A true colour"),
)


def _copgen_beta() -> ModelSpec:
    modalities = tuple(
        Modality(
            n,
            RGB8(),
            (4, 32, 32),
            patch_size=2,
            bands=("R", "G", "B"),
            vae="sd-kl-f8",
            description=d,
            product=p,
        )
        for (n, d), p in zip(_BETA_MODALITIES, ("DEM", "S1RTC", "S2L1C", "S2L2A"), strict=True)
    )
    vae = VAESpec(in_channels=3, scale_factor=0.18215, z_channels=4)
    release = ReleaseSpec(
        denoiser_hub_id="mespinosami/COP-GEN-Beta",
        vae_hub_id=None,
        denoiser_files=("nnet_ema_114000.pth", "nnet_ema.pth"),
        vae_files={"sd-kl-f8": ("autoencoder_kl_ema.pth", "assets/stable-diffusion/autoencoder_kl_ema.pth")},
    )
    return ModelSpec(
        name="copgen-beta",
        family="copgen-beta",
        modalities=modalities,
        denoiser=DenoiserSpec(1024, 20, 16),
        vaes={"sd-kl-f8": vae},
        release=release,
        posterior_per_copy=True,
    )


def _demo() -> ModelSpec:
    """The built-in default: COP-GEN layout, tiny widths, random weights shipped in the package."""
    base = _copgen("copgen-demo", DenoiserSpec(64, 4, 4), ("denoiser.safetensors",), None)
    tiny = {
        k: dataclasses.replace(v, ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1) for k, v in base.vaes.items()
    }
    return base.replace(vaes=tiny, release=ReleaseSpec())


_REGISTRY: dict[str, ModelSpec] = {
    "copgen-base": _copgen(
        "copgen-base",
        DenoiserSpec(1024, 20, 16),
        ("500000_nnet_ema.pth", "nnet_ema.pth"),
        "mespinosami/copgen-base",
    ),
    "copgen-large": _copgen("copgen-large", DenoiserSpec(1152, 28, 16), ("nnet_ema.pth",), None),
    "copgen-huge": _copgen(
        "copgen-huge", DenoiserSpec(1536, 30, 24), ("273000_nnet_ema.pth", "nnet_ema.pth"), None
    ),
    "copgen-beta": _copgen_beta(),
    "copgen-demo": _demo(),
}


def names() -> list[str]:
    return list(_REGISTRY)


def get(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model spec {name!r}; known: {', '.join(_REGISTRY)}") from None


def from_json(path: str | Path) -> ModelSpec:
    """Read a spec.json of the golden fixtures (COP-GEN or COP-GEN-Beta layout).

    Modality facts (bands, processing) come from the registry's spec of the same family; the
    file replaces widths, latent shapes, patch sizes and VAE hyper-parameters. VAEs the file does
    not describe are absent from the resulting spec (their modalities cannot be encoded/decoded).
    """
    try:
        return _from_json_data(json.loads(Path(path).read_text()), Path(path))
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as e:
        reason = f"missing field {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
        raise ValueError(f"{path}: not a valid spec.json ({reason})") from None


def _from_json_data(data: dict, path: Path) -> ModelSpec:
    order = list(data["modality_order"])
    den = data["denoiser"]
    denoiser = DenoiserSpec(
        embed_dim=den["embed_dim"],
        depth=den["depth"],
        num_heads=den["num_heads"],
        mlp_ratio=float(den.get("mlp_ratio", 4.0)),
        qkv_bias=bool(den.get("qkv_bias", False)),
    )
    sched = data.get("schedule", {})
    schedule = ScheduleSpec(
        beta_start=sched.get("beta_start", 0.00085),
        beta_end=sched.get("beta_end", 0.012),
        num_timesteps=sched.get("n", sched.get("N", 1000)),
    )
    name = f"{Path(path).parent.name or 'custom'}"
    if "vae" in data:  # COP-GEN-Beta layout: one shared VAE
        base = get("copgen-beta")
        if order != list(base.names):
            raise ValueError(f"{path}: unexpected modality order {order}")
        dd = data["vae"]["ddconfig"]
        vae = VAESpec(
            in_channels=dd["in_channels"],
            scale_factor=data["vae"]["scale_factor"],
            ch=dd["ch"],
            ch_mult=tuple(dd["ch_mult"]),
            num_res_blocks=dd["num_res_blocks"],
            z_channels=dd["z_channels"],
        )
        shape = tuple(data["latent_shape"])
        mods = tuple(
            dataclasses.replace(m, latent_shape=shape, patch_size=den["patch_size"]) for m in base.modalities
        )
        return base.replace(
            name=name,
            modalities=mods,
            denoiser=denoiser,
            vaes={"sd-kl-f8": vae},
            schedule=schedule,
            release=ReleaseSpec(),
        )
    base = get("copgen-base")
    if order != list(base.names):
        raise ValueError(f"{path}: unexpected modality order {order}")
    patch = den.get("patch_size", {})
    patched: list[Modality] = []
    vaes = {}
    for m in base.modalities:
        latent = tuple(data["latent_shapes"][m.name])
        v = data.get("vaes", {}).get(m.name)
        if v is not None:
            vaes[m.name] = VAESpec(
                in_channels=v["in_channels"],
                scale_factor=v["scale_factor"],
                ch=v["ch"],
                ch_mult=tuple(v["ch_mult"]),
                num_res_blocks=v["num_res_blocks"],
                z_channels=v["z_channels"],
            )
        patched.append(
            dataclasses.replace(m, latent_shape=latent, patch_size=int(patch.get(m.name, m.patch_size)))
        )
    return base.replace(
        name=name,
        modalities=tuple(patched),
        denoiser=denoiser,
        vaes=vaes,
        schedule=schedule,
        release=ReleaseSpec(),
    )


# --- serialisation (export manifests carry their spec) -------------------------------------------

_PROCESSING_KINDS = {cls.__name__: cls for cls in (Reflectance, LogRange, Classes, LatLon, Date, RGB8)}


def to_dict(spec: ModelSpec) -> dict:
    """A JSON-ready description of a spec; `from_dict` gives the same spec back."""

    def encode(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj):
            data = {f.name: encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
            if type(obj).__name__ in _PROCESSING_KINDS:
                data["kind"] = type(obj).__name__
            return data
        if isinstance(obj, Mapping):
            return {k: encode(v) for k, v in obj.items()}
        if isinstance(obj, tuple):
            return [encode(v) for v in obj]
        return obj

    return encode(spec)


def from_dict(data: Mapping) -> ModelSpec:
    def tup(v: Any) -> Any:
        return tuple(tup(x) for x in v) if isinstance(v, list) else v

    def processing(d: Mapping) -> Processing:
        d = dict(d)
        return _PROCESSING_KINDS[d.pop("kind")](**{k: tup(v) for k, v in d.items()})

    modalities = tuple(
        Modality(
            **{
                **{k: tup(v) for k, v in m.items() if k != "processing"},
                "processing": processing(m["processing"]),
            }
        )
        for m in data["modalities"]
    )
    release_data = dict(data.get("release", {}))
    release = ReleaseSpec(
        **{
            **{k: tup(v) for k, v in release_data.items() if k != "vae_files"},
            "vae_files": {k: tup(v) for k, v in release_data.get("vae_files", {}).items()},
        }
    )
    return ModelSpec(
        name=data["name"],
        family=data["family"],
        modalities=modalities,
        denoiser=DenoiserSpec(**data["denoiser"]),
        vaes={k: VAESpec(**{kk: tup(vv) for kk, vv in v.items()}) for k, v in data["vaes"].items()},
        schedule=ScheduleSpec(**data.get("schedule", {})),
        release=release,
        posterior_per_copy=data.get("posterior_per_copy", False),
    )
