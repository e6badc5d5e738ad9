"""What every raster file of an input must be (georeferenced north-up, a known data type, readable,
data in every band) and what its values say: S1 units, class values or codes, S2 DNs or not.

Shared by every input form (and by the readers: GDAL read failures as one-line SceneErrors).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from copgen_rt.errors import SceneError
from copgen_rt.scenes.inputs.scene_input import ImplausibleDNWarning

SUPPORTED_DTYPES = {"uint8", "uint16", "int16", "uint32", "int32", "float32", "float64"}
S1_DB_RANGE = (-60.0, 45.0)  # plausible backscatter in dB (the model's own outputs reach 40.2)
S1_LINEAR_RANGE = (0.0, 100.0)  # plausible linear gamma0
# S2 DNs are reflectance x 10000 (+1000 from baseline 04.00): even dark water scenes have a 99th
# percentile well above this; 8-bit visualisations (0-255) and reflectances in 0-1 stay below it
S2_MIN_DN_P99 = 300.0
MAX_COORDINATE = 1e8  # metres or degrees: far beyond any Earth CRS's extent


@contextmanager
def reading(path: Path) -> Iterator[None]:
    """GDAL read failures (corrupt or truncated data) become a one-line SceneError."""
    try:
        yield
    except RasterioIOError as e:
        cause = e.__cause__ or e  # GDAL's own message is the chained one
        detail = (str(cause).splitlines() or [type(cause).__name__])[0][:200]
        raise SceneError(f"{path}: cannot read pixels (corrupt or truncated file?): {detail}") from None


def check_raster(path: Path | str, src) -> None:
    """What every input file must be: georeferenced north-up, a known data type, readable first
    and last blocks, data in every band."""
    problem = georeferencing_problem(src)
    if problem:
        raise SceneError(f"{path}: {problem}")
    if src.transform.b != 0 or src.transform.d != 0:
        raise SceneError(f"{path}: rotated rasters are not supported; warp to north-up first")
    _check_georeferencing(Path(path), src)
    dtype = src.dtypes[0]
    if dtype not in SUPPORTED_DTYPES:
        raise SceneError(f"{path}: unsupported data type {dtype}")
    if src.width < 2 or src.height < 2:
        raise SceneError(f"{path}: {src.width}x{src.height} px is too small to be a scene")
    _read_first_and_last_pixels(src)
    empty = [b for b in range(1, src.count + 1) if not _has_data(src, b)]
    if len(empty) == src.count:
        raise SceneError(f"{path}: no valid pixel (everything is nodata)")
    if empty:
        raise SceneError(f"{path}: band {empty[0]} ({src.descriptions[empty[0] - 1] or 'unnamed'}) has no "
                         "valid pixel (all nodata): a pixel is used only where every band has data")


def georeferencing_problem(src) -> str | None:
    """Why a raster cannot be placed on the Earth, said as it is (ground control points only, a
    zero pixel size, no CRS), else None."""
    gcps, _ = src.gcps
    if src.crs is None and gcps:
        return (f"georeferenced by {len(gcps)} ground control points only (no geotransform): warp it "
                "to a grid first (e.g. gdalwarp -t_srs EPSG:32633 in.tif out.tif)")
    t = src.transform
    if t.a == 0 or t.e == 0:
        return "zero pixel size in its geotransform; fix it (gdal_edit.py -a_ullr)"
    if src.crs is None:
        return ("no CRS: outputs could not be georeferenced; assign one first "
                "(e.g. gdal_edit.py -a_srs EPSG:32633)")
    return None


def _read_first_and_last_pixels(src) -> None:
    """GDAL reads their whole blocks: a truncated file fails here (and in `info`), not mid-run."""
    src.read(1, window=Window(0, 0, 1, 1))
    src.read(src.count, window=Window(src.width - 1, src.height - 1, 1, 1))


def _has_data(src, band: int) -> bool:
    """Any valid pixel in `band`? Scans block by block and stops at the first one (bounded memory)."""
    is_float = np.dtype(src.dtypes[band - 1]).kind == "f"
    for _, window in src.block_windows(band):
        mask = src.read_masks(band, window=window) > 0
        if mask.any() and (not is_float or np.isfinite(src.read(band, window=window)[mask]).any()):
            return True
    return False


def _check_georeferencing(path: Path, src) -> None:
    t = src.transform
    values = (t.a, t.c, t.e, t.f, t.c + src.width * t.a, t.f + src.height * t.e)
    if not all(map(math.isfinite, values)) or max(map(abs, values)) > MAX_COORDINATE:
        raise SceneError(f"{path}: its georeferencing is not plausible (origin {t.c:g}, {t.f:g}, pixel "
                         f"{t.a:g} x {-t.e:g}); fix the geotransform (gdal_edit.py -a_ullr)")


def _sample(src, max_side: int = 256) -> np.ma.MaskedArray:
    factor = max(1, math.ceil(max(src.width, src.height) / max_side))
    shape = (src.count, max(1, src.height // factor), max(1, src.width // factor))
    return src.read(out_shape=shape, masked=True, resampling=Resampling.nearest)


def s1_units_of(src, requested: str) -> str:
    """The units of an S1 raster, "db" or "linear": `requested` unless "auto", else told by the
    metadata and the values (implausible values are a SceneError; so is "linear" for negative
    values: power is never negative, so those are dB)."""
    if requested == "db":
        return requested  # the user's word, even for odd values
    values = _sample(src).compressed().astype(np.float64)
    values = values[np.isfinite(values)]
    if requested == "linear":
        # the 1st percentile, as below: a few negative pixels (noise removal) are no evidence
        if values.size and (low := float(np.percentile(values, 1))) < 0:
            raise SceneError(f"{src.name}: --s1-units linear, but the S1 values are negative (1st "
                             f"percentile {low:g}): linear power is never negative; these look like dB "
                             "(pass --s1-units db or auto)")
        return requested
    text = " ".join(filter(None, [*src.descriptions, *(src.units or ()), *src.tags().values()])).lower()
    if not values.size:
        return "linear"
    # linear gamma0 is positive and mostly < 1; dB backscatter is mostly negative
    units = "db" if "db" in text.split() or "decibel" in text or np.median(values) < 0 else "linear"
    low, high = np.percentile(values, [1, 99])  # a few outliers are no evidence
    allowed = S1_DB_RANGE if units == "db" else S1_LINEAR_RANGE
    if low < allowed[0] or high > allowed[1]:
        raise SceneError(f"{src.name}: S1 values ({low:g} to {high:g}, 1st-99th percentile) look like "
                         f"neither dB ({S1_DB_RANGE[0]:g} to {S1_DB_RANGE[1]:g}) nor linear power "
                         f"({S1_LINEAR_RANGE[0]:g} to {S1_LINEAR_RANGE[1]:g}); rescale them (e.g. dB x 100 "
                         "-> dB), or pass --s1-units db|linear to use them as they are")
    return units


def _corner_blocks(src) -> np.ndarray:
    """Valid values of every band in the first and the last block: the blocks opening reads
    anyway, so that a look at the values neither reads a whole scene nor a corrupt block."""
    rows, cols = src.block_shapes[0]
    last = Window((src.width - 1) // cols * cols, (src.height - 1) // rows * rows, 0, 0)
    windows = [Window(0, 0, min(cols, src.width), min(rows, src.height)),
               Window(last.col_off, last.row_off, src.width - last.col_off, src.height - last.row_off)]
    values = np.concatenate([src.read(window=w, masked=True).compressed().astype(np.float64)
                             for w in windows])
    return values[np.isfinite(values)]


def warn_if_not_dns(src, stacklevel: int) -> None:
    """One ImplausibleDNWarning when an S2 raster is 8-bit or its values are far below DNs
    (`stacklevel` as warnings.warn's, counted from here)."""
    values = _corner_blocks(src)
    high = float(np.percentile(values, 99)) if values.size else math.nan
    if src.dtypes[0] == "uint8" or high < S2_MIN_DN_P99:
        what = "8-bit S2 data" if src.dtypes[0] == "uint8" else "S2 values"
        warnings.warn(f"{Path(src.name).name}: {what} (99th percentile {high:g}) do not look like digital "
                      "numbers (reflectance x 10000, as L1C/L2A products store them): a picture or "
                      "reflectances in 0-1 make meaningless conditions; use the DN product",
                      ImplausibleDNWarning, stacklevel=stacklevel)


def class_values_of(src, product: str, requested: str) -> str:
    """How a LULC or CLOUD raster stores its classes, "index" or "code" (`requested` unless "auto")."""
    if requested != "auto":
        return requested
    values = np.unique(_sample(src).compressed())
    if product == "LULC":
        if np.isin(values, [10, 11]).any():
            return "code"
        return "index"  # indices 0..9 (Major TOM / TerraMesh chips); codes would use 10, 11
    return "code"  # cloud mask codes and indices coincide (0..3)
