"""The processing kinds: the constants of each physical <-> model-space mapping of a modality
(the conversions themselves are in `copgen_rt.processing`)."""

from __future__ import annotations

from dataclasses import dataclass


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
    plausible: tuple[float, float] | None = None  # physical values a product can hold (None: not checked)


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
