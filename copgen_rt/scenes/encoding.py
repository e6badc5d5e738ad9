"""How each generated modality is written to file: data type, nodata, band names and units,
the values it blends (class scores, bands) and the conversion to file units."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from copgen_rt.specs import (
    CLASS_CONVENTION,
    REFLECTANCE_OF,
    S2_MODEL_ADD,
    S2_QUANTIFICATION,
    Classes,
    LogRange,
    Modality,
    Reflectance,
)

KINDS = ("mean", "std", "confidence")  # what an output file holds of a modality's samples


@dataclass(frozen=True)
class Encoding:
    dtype: str
    nodata: float | int
    names: list[str]  # band descriptions
    units: list[str]
    categorical: bool = False
    scales: list[float] | None = None
    offsets: list[float] | None = None  # value = scale x stored + offset (GDAL, rioxarray mask_and_scale)
    statistic: str = "sample"  # what the file holds: sample, mean, standard deviation, class confidence
    classes: Classes | None = None  # class rasters: codes, names, colours


def encoding(m: Modality, kind: str, samples: int = 1) -> Encoding:
    """dtype, nodata, band names, units, scale and offset of one output file."""
    p = m.processing
    of = f" of {samples} samples" if samples > 1 else ""
    if isinstance(p, Classes):
        if kind == "confidence":
            return Encoding(
                "float32",
                float("nan"),
                [f"class confidence{of}"],
                ["1"],
                statistic="class confidence (mean score of the winning class / sum of the scores)",
            )
        statistic = (
            f"most likely class (argmax of the class scores averaged over {samples} samples)"
            if samples > 1
            else "sample"
        )
        return Encoding(
            "uint8",
            255,
            [f"{m.name} class code"],
            ["class code"],
            categorical=True,
            statistic=statistic,
            classes=p,
        )
    statistic = {"mean": "mean" if samples > 1 else "sample", "std": "standard deviation"}[kind]
    suffix = "" if kind == "mean" and samples == 1 else f" {statistic}{of}"
    if isinstance(p, LogRange) and p.log == "db":
        units = ["dB"] * len(m.bands)
    elif isinstance(p, Reflectance):
        units = [REFLECTANCE_OF.get(m.product, "reflectance")] * len(m.bands)
    else:
        units = [p.units] * len(m.bands)
    scales = offsets = None
    if isinstance(p, Reflectance):  # stored in the model's DNs (specs.S2_DN_CONVENTION)
        scales = [1.0 / S2_QUANTIFICATION] * len(m.bands)
        offsets = [-S2_MODEL_ADD / S2_QUANTIFICATION if kind == "mean" else 0.0] * len(m.bands)
    return Encoding(
        "float32",
        float("nan"),
        [b + suffix for b in m.bands],
        units,
        scales=scales,
        offsets=offsets,
        statistic=statistic,
    )


def class_tags(classes: Classes) -> dict[str, str]:
    """Category names and codes of a class raster, as band metadata (GeoTIFF has no other place
    that rasterio writes them: the colour table goes in the file itself)."""
    return {
        "CLASS_CODES": ",".join(map(str, classes.codes)),
        "CLASS_NAMES": ",".join(classes.names),
        "CLASS_CONVENTION": CLASS_CONVENTION,
    }


def colormap(classes: Classes) -> dict[int, tuple[int, int, int, int]]:
    return {
        code: (int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16), 255)
        for code, c in zip(classes.codes, classes.colors, strict=True)
    }


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
