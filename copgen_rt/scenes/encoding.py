"""How each generated modality is written to file: data type, nodata, band names and units,
the values it blends (class scores, bands) and the conversion to file units."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from copgen_rt.specs import Classes, LogRange, Modality, Reflectance

KINDS = ("mean", "std", "confidence")  # what an output file holds of a modality's samples


@dataclass(frozen=True)
class Encoding:
    dtype: str
    nodata: float | int
    names: list[str]  # band descriptions
    units: list[str]
    categorical: bool = False
    scales: list[float] | None = None


def encoding(m: Modality, kind: str) -> Encoding:
    """dtype, nodata, band names and units of one output file."""
    p = m.processing
    if isinstance(p, Classes):
        if kind == "confidence":
            return Encoding("float32", float("nan"), ["confidence"], ["1"])
        return Encoding("uint8", 255, [m.name], ["class code"], categorical=True)
    suffix = "" if kind == "mean" else f" {kind}"
    if isinstance(p, LogRange) and p.log == "db":
        units = ["dB"] * len(m.bands)
    elif isinstance(p, Reflectance):
        units = ["DN"] * len(m.bands)
    else:
        units = [p.units] * len(m.bands)
    scales = [1.0 / p.scale] * len(m.bands) if isinstance(p, Reflectance) and kind == "mean" else None
    return Encoding("float32", float("nan"), [b + suffix for b in m.bands], units, scales=scales)


def to_file_units(m: Modality, values: np.ndarray) -> np.ndarray:
    p = m.processing
    if isinstance(p, LogRange) and p.log == "db":  # backscatter is written in dB
        return 10.0 * np.log10(np.maximum(values, 1e-12))
    return values


def blend_channels(m: Modality, kind: str) -> int:
    """Channels one output blends: class scores or bands, plus the validity channel."""
    if isinstance(m.processing, Classes) and kind == "mean":
        return len(m.processing.codes) + 1
    return len(encoding(m, kind).names) + 1
