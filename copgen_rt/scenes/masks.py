"""Gap masks for gap filling: which pixels of a scene are to be generated (True = gap).

Two sources, each returned on a target `Grid` (a modality's native grid of the scene frame); the
scene's own nodata is a gap too, found where the tiles are read (`scenes.fill`):

* `mask_from_raster`: a mask raster, any non-zero value is a gap (cloud / shadow / nodata = 1).
  The mask file's own nodata pixels are gaps too (nothing says they are clear).
* `mask_from_scl`: the scene classification (SCL) band of a Sentinel-2 L2A product, with the
  classes that count as gaps chosen by the caller (`parse_scl_classes` reads an option string).

Another grid. A mask on another grid or CRS is warped onto the target grid with GDAL's `max`
resampling of the 0/1 gap raster: a target pixel is a gap if ANY mask pixel it overlaps is a
gap. Where the target pixel lies inside one mask pixel (same grid, or a finer aligned grid)
that is exactly nearest-neighbour resampling; onto a coarser grid (a 10 m mask onto the 20 m or
60 m bands) it keeps a partly clouded coarse pixel out of the pixels kept as valid. A mask that
covers no pixel of the target grid is refused (`MaskError`); one that covers only part of it
warns (`PartialMaskWarning`) and leaves the uncovered pixels as they are (not gaps), since the
mask says nothing about them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.warp import reproject

from copgen_rt.errors import MaskError
from copgen_rt.reading import check_raster_file
from copgen_rt.scenes.inputs.raster_checks import georeferencing_problem

# Sentinel-2 L2A scene classification (SCL) classes, as defined by the L2A product
# specification (Sen2Cor): 0 no data, 1 saturated or defective, 2 dark area pixels (topographic
# cast shadows from processing baseline 04.00), 3 cloud shadows, 4 vegetation, 5 not vegetated,
# 6 water, 7 unclassified, 8 cloud medium probability, 9 cloud high probability, 10 thin cirrus,
# 11 snow or ice.
SCL_CLASSES: dict[int, str] = {
    0: "no data", 1: "saturated or defective", 2: "dark area pixels", 3: "cloud shadows",
    4: "vegetation", 5: "not vegetated", 6: "water", 7: "unclassified",
    8: "cloud medium probability", 9: "cloud high probability", 10: "thin cirrus", 11: "snow or ice",
}
# no data, cloud shadows, cloud medium probability, cloud high probability, thin cirrus
DEFAULT_SCL_GAP_CLASSES: tuple[int, ...] = (0, 3, 8, 9, 10)
_OUTSIDE = 255  # warped pixels the mask does not reach




class PartialMaskWarning(UserWarning):
    """The mask covers only part of the target grid; the rest is not masked by it."""


@dataclass(frozen=True)
class Grid:
    """A north-up pixel grid: for a scene modality, `Grid(frame.crs, *frame.grid(gsd))`."""

    crs: CRS
    transform: Affine
    width: int
    height: int


def parse_scl_classes(text: str) -> tuple[int, ...]:
    """"0,3,8,9,10" -> (0, 3, 8, 9, 10); every entry must be an SCL class code (0-11)."""
    try:
        codes = tuple(sorted({int(part) for part in text.replace(" ", "").split(",") if part}))
    except ValueError:
        raise MaskError(f"SCL classes {text!r}: expected comma-separated class codes, "
                        "e.g. 0,3,8,9,10") from None
    bad = [c for c in codes if c not in SCL_CLASSES]
    if not codes or bad:
        raise MaskError(f"SCL classes {text!r}: codes must be among 0-11 "
                        f"({', '.join(f'{k} {v}' for k, v in SCL_CLASSES.items())})")
    return codes


def mask_from_raster(path: str | Path, grid: Grid | None = None, band: int = 1) -> np.ndarray:
    """(H, W) bool on `grid` (default: the mask's own grid): non-zero or nodata mask pixels are gaps."""
    path = Path(path)
    with _open(path) as src:
        if not 1 <= band <= src.count:
            raise MaskError(f"{path}: no band {band} (the file has {src.count})")
        values = src.read(band, masked=True)
        gap = np.ma.filled(values != 0, True)
        if np.issubdtype(values.dtype, np.floating):
            gap |= ~np.isfinite(values.data)
        return _on_grid(path, gap, Grid(src.crs, src.transform, src.width, src.height), grid)


def mask_from_scl(path: str | Path, grid: Grid | None = None,
                  classes: Iterable[int] = DEFAULT_SCL_GAP_CLASSES) -> np.ndarray:
    """(H, W) bool on `grid`: SCL pixels whose class is in `classes` are gaps.

    The file holds the SCL band alone, or several bands one of which is described as "SCL".
    """
    path = Path(path)
    classes = tuple(classes)
    if not classes or any(c not in SCL_CLASSES for c in classes):
        raise MaskError(f"SCL classes {classes}: codes must be among 0-11")
    with _open(path) as src:
        if src.count == 1:
            band = 1
        else:
            named = [i for i, d in enumerate(src.descriptions, 1) if (d or "").strip().upper() == "SCL"]
            if len(named) != 1:
                raise MaskError(f"{path}: {src.count} bands and none described as SCL; "
                                "pass the SCL band file")
            band = named[0]
        values = src.read(band)
        if np.issubdtype(values.dtype, np.floating) and not np.array_equal(values, np.round(values)):
            raise MaskError(f"{path}: SCL values must be class codes (whole numbers 0-11)")
        if values.size and (values.min() < 0 or values.max() > max(SCL_CLASSES)):
            raise MaskError(f"{path}: values {values.min()}..{values.max()} are not SCL class codes (0-11)")
        gap = np.isin(values, classes)
        return _on_grid(path, gap, Grid(src.crs, src.transform, src.width, src.height), grid)


def _open(path: Path):
    check_raster_file(path, MaskError)  # a FIFO would block forever
    try:
        src = rasterio.open(path)
    except RasterioIOError as e:
        raise MaskError(f"{path}: not a readable raster ({str(e).splitlines()[0][:120]})") from None
    problem = georeferencing_problem(src)
    if problem:
        src.close()
        raise MaskError(f"{path}: cannot place the mask on the scene: {problem}")
    return src


def _on_grid(path: Path, gap: np.ndarray, source: Grid, target: Grid | None) -> np.ndarray:
    if target is None or target == source:
        return gap
    out = np.full((target.height, target.width), _OUTSIDE, np.uint8)
    reproject(gap.astype(np.uint8), out, src_transform=source.transform, src_crs=source.crs,
              dst_transform=target.transform, dst_crs=target.crs, src_nodata=None, dst_nodata=_OUTSIDE,
              resampling=Resampling.max, init_dest_nodata=True)
    outside = out == _OUTSIDE
    if outside.all():
        raise MaskError(f"{path}: the mask does not overlap the scene")
    if outside.any():
        warnings.warn(f"{path}: the mask covers {100 * (1 - outside.mean()):.1f}% of the scene; the rest is "
                      "not masked", PartialMaskWarning, stacklevel=3)
    return ~outside & (out == 1)
