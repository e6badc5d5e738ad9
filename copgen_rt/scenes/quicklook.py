"""Quicklook PNGs of written outputs, for people who would rather look than read: S2 true colour,
S1 false colour, DEM hillshade (the Major TOM thumbnail recipes) and coloured class maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling

from copgen_rt import thumbnails
from copgen_rt.specs import Classes, LogRange, Modality, Reflectance

MAX_SIDE = 1024


def _read(path: Path, categorical: bool) -> tuple[np.ndarray, float]:
    """Bands at most MAX_SIDE pixels on a side (from overviews when large), and the pixel size."""
    with rasterio.open(path) as src:
        factor = max(1.0, max(src.width, src.height) / MAX_SIDE)
        shape = (src.count, max(1, round(src.height / factor)), max(1, round(src.width / factor)))
        data = src.read(out_shape=shape, resampling=Resampling.nearest if categorical else Resampling.average,
                        masked=True)
        return data, abs(src.transform.a) * factor


def render(modality: Modality, path: Path) -> np.ndarray | None:
    """uint8 (H, W, 3) picture of one output file, or None when there is no recipe for it."""
    p = modality.processing
    data, gsd = _read(path, isinstance(p, Classes))
    if isinstance(p, Classes):
        palette = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in p.colors], np.uint8)
        index = np.searchsorted(np.asarray(p.codes), data[0].filled(p.codes[0]))
        return palette[np.clip(index, 0, len(palette) - 1)]
    if isinstance(p, Reflectance) and {"B04", "B03", "B02"} <= set(modality.bands):
        b = {name: data[modality.bands.index(name)].filled(0) for name in ("B04", "B03", "B02")}
        return thumbnails.s2_true_colour(b["B04"], b["B03"], b["B02"])
    if isinstance(p, LogRange) and p.log == "db":
        vv, vh = (data[modality.bands.index(n)].filled(np.nan) for n in ("VV", "VH"))
        return thumbnails.s1_false_colour(vv, vh)
    if isinstance(p, LogRange) and p.log == "log1p":
        dem = data[0].filled(0)
        return thumbnails.dem_hillshade(dem, gsd)
    return None


def write_quicklooks(outputs: list[tuple[Modality, Path, Path]]) -> list[Path]:
    """A PNG for each (modality, GeoTIFF, PNG path) that has a recipe, with the GeoTIFF's tags."""
    written = []
    for modality, path, png in outputs:
        picture = render(modality, path)
        if picture is not None:
            with rasterio.open(path) as src:
                tags = src.tags()
            thumbnails.write_png(png, picture, tags)
            written.append(png)
    return written
