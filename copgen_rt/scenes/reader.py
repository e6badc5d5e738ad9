"""Scene inputs: recognise what a raster holds and read footprint windows on native grids.

A `SceneInput` says which product a file is (S2L2A, S2L1C, S1RTC, DEM, LULC, CLOUD), its bands
in file order and its units. A `ModalityReader` reads any window of one spec modality on that
modality's native grid of the scene frame (resampled with GDAL where the file is on another
grid), in the physical units the processing expects, with a validity mask.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import CRSError, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from copgen_rt.processing import UnknownClassCodeWarning
from copgen_rt.specs import PRODUCTS, S2_DN_CONVENTION, S2_MODEL_ADD, S2_QUANTIFICATION, Classes, Modality

SUPPORTED_DTYPES = {"uint8", "uint16", "int16", "uint32", "int32", "float32", "float64"}
S1_UNITS = ("auto", "db", "linear")
LULC_VALUES = ("auto", "index", "code")
S1_DB_RANGE = (-60.0, 45.0)  # plausible backscatter in dB (the model's own outputs reach 40.2)
S1_LINEAR_RANGE = (0.0, 100.0)  # plausible linear gamma0
COARSE_FACTOR = 4.0  # inputs coarser than this many native pixels get a CoarseInputWarning
# S2 DNs are reflectance x 10000 (+1000 from baseline 04.00): even dark water scenes have a 99th
# percentile well above this; 8-bit visualisations (0-255) and reflectances in 0-1 stay below it
S2_MIN_DN_P99 = 300.0


class SceneError(ValueError):
    """An input raster cannot be used as given (message is one line)."""


class ImplausibleDNWarning(UserWarning):
    """S2 values that do not look like digital numbers (8-bit pictures, reflectances in 0-1)."""


class CoarseInputWarning(UserWarning):
    """An input is much coarser than a modality read from it: it is upsampled, detail is invented."""


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """GDAL read failures (corrupt or truncated data) become a one-line SceneError."""
    try:
        yield
    except RasterioIOError as e:
        cause = e.__cause__ or e  # GDAL's own message is the chained one
        detail = (str(cause).splitlines() or [type(cause).__name__])[0][:200]
        raise SceneError(f"{path}: cannot read pixels (corrupt or truncated file?): {detail}") from None


@dataclass(frozen=True)
class SceneInput:
    path: Path
    product: str
    bands: tuple[str, ...]  # band name of each file band, file order
    crs: CRS
    transform: Affine
    width: int
    height: int
    nodata: float | None
    units: str  # S1: "db" | "linear"; LULC/CLOUD: "index" | "code"; others: ""
    date: dt.date | None
    dn_offset: float = 0.0  # added to S2 DNs before use
    boa_offset: float | None = None  # BOA_ADD_OFFSET found in the metadata, if any
    # several files (SAFE, per-band files, STAC): (band, file, band index in that file) per band,
    # each read on its own grid; empty: every band is in `path`, in file order
    sources: tuple[tuple[str, str, int], ...] = ()
    baseline: str | None = None  # S2 processing baseline from the metadata, e.g. "04.00"
    dn_convention: str = ""  # how the DNs were brought to the model's convention (provenance)
    form: str = "stacked GeoTIFF"  # SAFE, SAFE zip, per-band files, STAC Item, stacked GeoTIFF

    def band_source(self, band: str) -> tuple[str, int]:
        """(file, 1-based band index in it) of one band."""
        for name, href, index in self.sources:
            if name == band:
                return href, index
        return str(self.path), self.bands.index(band) + 1

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top), whichever way the rows and columns run."""
        t = self.transform
        xs, ys = (t.c, t.c + self.width * t.a), (t.f, t.f + self.height * t.e)
        return min(xs), min(ys), max(xs), max(ys)

    def describe(self) -> str:
        res = f"{abs(self.transform.a):g} m" if self.crs.is_projected else f"{abs(self.transform.a):g} deg"
        extra = f", units {self.units}" if self.units else ""
        when = f", date {self.date}" if self.date else ""
        if self.product.startswith("S2"):
            extra += f", DN offset {self.dn_offset:+g}" + (
                f" (metadata BOA_ADD_OFFSET {self.boa_offset:g})" if self.boa_offset is not None else "")
        form = "" if not self.sources else f" [{self.form}, {len({h for _, h, _ in self.sources})} files]"
        return (f"{self.path.name}{form}: {self.product} ({len(self.bands)} bands: {' '.join(self.bands)}), "
                f"{self.width}x{self.height} px at {res}, {self.crs.to_string()}{extra}{when}")


_BAND_RE = re.compile(r"^B0?(\d{1,2}A?)$", re.IGNORECASE)


def _canonical_band(name: str) -> str | None:
    text = (name or "").strip()
    m = _BAND_RE.match(text)
    if m:
        num = m.group(1).upper()
        return "B8A" if num == "8A" else f"B{int(num):02d}"
    upper = text.upper()
    return upper if upper in {"VV", "VH", "DEM", "LULC"} else None


def _date_from_tags(tags: dict[str, str]) -> dt.date | None:
    for key in ("datetime", "DATETIME", "TIFFTAG_DATETIME", "ACQUISITION_DATE", "DATE_ACQUIRED",
                "SENSING_TIME", "PRODUCT_START_TIME", "date"):
        value = tags.get(key)
        if value:
            match = re.match(r"(\d{4})[-:](\d{2})[-:](\d{2})", value)
            if match:
                try:
                    return dt.date(*map(int, match.groups()))
                except ValueError:
                    continue
    return None


def product_of_bands(names: list[str]) -> str | None:
    """The product whose bands these are, if one is."""
    known = set(names)
    for product in ("S2L1C" if "B10" in known else "S2L2A", "S1RTC", "DEM", "LULC", "CLOUD"):
        if known <= set(PRODUCTS[product]):
            return product
    return None


def _guess_product(src, names: list[str | None]) -> tuple[str, tuple[str, ...]]:
    named = [n for n in names if n]
    if len(named) == len(names):  # every band is named: trust the names
        product = product_of_bands(named)
        if product is not None and product != "CLOUD":
            return product, tuple(named)
    by_count = {12: "S2L2A", 13: "S2L1C", 2: "S1RTC"}
    if src.count in by_count:
        product = by_count[src.count]
        return product, PRODUCTS[product]
    if src.count == 1:
        product = "LULC" if src.dtypes[0] == "uint8" else "DEM"
        return product, PRODUCTS[product]
    raise SceneError(f"{src.name}: {src.count} bands: cannot tell which product this is; "
                     "pass --modality and --bands")


def open_input(path: str | Path, product: str | None = None, bands: tuple[str, ...] | None = None,
               s1_units: str = "auto", lulc_values: str = "auto", s2_offset: float | None = None,
               date: dt.date | None = None) -> SceneInput:
    """Open and recognise one input: a stacked raster, or (`copgen_rt.scenes.products`) a SAFE
    folder or .zip, a folder or comma-separated list of per-band files, a STAC Item. Every
    problem is a one-line SceneError."""
    from copgen_rt.scenes import products  # the multi-file forms, built on this module

    text = str(path)
    if products.is_product(text):
        return products.open_product(text, product=product, bands=bands, s1_units=s1_units,
                                     lulc_values=lulc_values, s2_offset=s2_offset, date=date)
    path = Path(path)
    if not path.exists():
        raise SceneError(f"{path}: no such file")
    if not path.is_file():  # a FIFO would block forever, a device never end
        raise SceneError(f"{path}: not a regular file")
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as e:
        raise SceneError(f"{path}: not a readable raster ({str(e).splitlines()[0][:120]})") from None
    with src, _reading(path):
        check_raster(path, src)
        names = [_canonical_band(d) for d in src.descriptions]
        if product is None:
            product, file_bands = _guess_product(src, names)
        else:
            product = product.upper()
            if product not in PRODUCTS:
                raise SceneError(f"unknown product {product!r}; choose {', '.join(PRODUCTS)}")
            named = [n for n in names if n]
            file_bands = tuple(named) if len(named) == len(names) else PRODUCTS[product]
        if bands is not None:
            file_bands = tuple(_canonical_band(b) or b for b in bands)
            if len(file_bands) != src.count:
                raise SceneError(f"{path}: --bands names {len(file_bands)} band(s) ({' '.join(file_bands)}) "
                                 f"but the file has {src.count}")
        if len(file_bands) != src.count:
            raise SceneError(f"{path}: {src.count} bands, but {product} expects {len(file_bands)} "
                             f"({' '.join(file_bands)}); pass --bands to say which is which")
        units = ""
        if product == "S1RTC":
            units = _s1_units(src, s1_units)
        elif product in ("LULC", "CLOUD"):
            units = _class_values(src, product, lulc_values)
        elif product.startswith("S2"):
            _warn_if_not_dns(src)
        # without offset metadata S2 DNs are used as distributed (as the model's, see specs)
        boa = _boa_offset(src.tags())
        offset, convention = model_dn_offset(product, DNOffsets(add=boa, where="file tags"), s2_offset)
        return SceneInput(path=path, product=product, bands=tuple(file_bands), crs=src.crs,
                          transform=src.transform, width=src.width, height=src.height,
                          nodata=src.nodata, units=units, date=date or _date_from_tags(src.tags()),
                          dn_offset=offset, boa_offset=boa, dn_convention=convention)


@dataclass
class DNOffsets:
    """What a product's metadata says about its S2 DNs: reflectance = (DN + add) / quantification."""

    add: float | None = None
    quantification: float | None = None
    baseline: str | None = None
    where: str = ""  # which metadata said so


def model_dn_offset(product: str, offsets: DNOffsets, override: float | None) -> tuple[float, str]:
    """The shift that brings an input's S2 DNs to the model's (`specs.S2_DN_CONVENTION`), and why."""
    if not product.startswith("S2"):
        return 0.0, ""
    if override is not None:
        return float(override), f"--s2-offset {override:+g} as given; {S2_DN_CONVENTION}"
    if offsets.add is None:
        return 0.0, f"no offset in the metadata: DNs used as distributed; {S2_DN_CONVENTION}"
    if offsets.quantification not in (None, S2_QUANTIFICATION):
        raise SceneError(f"quantification value {offsets.quantification:g} ({offsets.where}): only "
                         f"{S2_QUANTIFICATION:g} is supported")
    shift = offsets.add + S2_MODEL_ADD
    return shift, (f"{offsets.where}: reflectance = (DN {offsets.add:+g}) / {S2_QUANTIFICATION:g}"
                   + (f", baseline {offsets.baseline}" if offsets.baseline else "")
                   + f"; DNs shifted by {shift:+g} to the model's: {S2_DN_CONVENTION}")


def check_raster(path: Path | str, src) -> None:
    """What every input file must be: georeferenced north-up, a known data type, readable first
    and last blocks, data in every band."""
    if src.crs is None:
        raise SceneError(f"{path}: no CRS: outputs could not be georeferenced; assign one first "
                         "(e.g. gdal_edit.py -a_srs EPSG:32633)")
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


def _boa_offset(tags: dict[str, str]) -> float | None:
    for key, value in tags.items():
        if "ADD_OFFSET" in key.upper():
            try:
                return float(value)
            except ValueError:
                return None
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


MAX_COORDINATE = 1e8  # metres or degrees: far beyond any Earth CRS's extent


def _check_georeferencing(path: Path, src) -> None:
    t = src.transform
    values = (t.a, t.c, t.e, t.f, t.c + src.width * t.a, t.f + src.height * t.e)
    if not all(map(math.isfinite, values)) or max(map(abs, values)) > MAX_COORDINATE:
        raise SceneError(f"{path}: its georeferencing is not plausible (origin {t.c:g}, {t.f:g}, pixel "
                         f"{t.a:g} x {-t.e:g}); fix the geotransform (gdal_edit.py -a_ullr)")
    if t.a == 0 or t.e == 0:
        raise SceneError(f"{path}: zero pixel size in its geotransform; fix it (gdal_edit.py -a_ullr)")


def _sample(src, max_side: int = 256) -> np.ma.MaskedArray:
    factor = max(1, math.ceil(max(src.width, src.height) / max_side))
    shape = (src.count, max(1, src.height // factor), max(1, src.width // factor))
    return src.read(out_shape=shape, masked=True, resampling=Resampling.nearest)


def _s1_units(src, requested: str) -> str:
    if requested != "auto":
        return requested  # the user's word, even for odd values
    text = " ".join(filter(None, [*src.descriptions, *(src.units or ()), *src.tags().values()])).lower()
    values = _sample(src).compressed().astype(np.float64)
    values = values[np.isfinite(values)]
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


def _warn_if_not_dns(src) -> None:
    """One ImplausibleDNWarning when an S2 raster is 8-bit or its values are far below DNs."""
    values = _corner_blocks(src)
    high = float(np.percentile(values, 99)) if values.size else math.nan
    if src.dtypes[0] == "uint8" or high < S2_MIN_DN_P99:
        what = "8-bit S2 data" if src.dtypes[0] == "uint8" else "S2 values"
        warnings.warn(f"{Path(src.name).name}: {what} (99th percentile {high:g}) do not look like digital "
                      "numbers (reflectance x 10000, as L1C/L2A products store them): a picture or "
                      "reflectances in 0-1 make meaningless conditions; use the DN product",
                      ImplausibleDNWarning, stacklevel=3)


def _class_values(src, product: str, requested: str) -> str:
    if requested != "auto":
        return requested
    values = np.unique(_sample(src).compressed())
    if product == "LULC":
        if np.isin(values, [10, 11]).any():
            return "code"
        return "index"  # indices 0..9 (Major TOM / TerraMesh chips); codes would use 10, 11
    return "code"  # cloud mask codes and indices coincide (0..3)


# --- frame and per-modality readers -------------------------------------------------------------


@dataclass(frozen=True)
class SceneFrame:
    """The scene's extent in a projected CRS: every modality's native grid is derived from it."""

    crs: CRS
    left: float
    top: float
    width_m: float
    height_m: float

    @classmethod
    def of(cls, scene: SceneInput) -> SceneFrame:
        if not scene.crs.is_projected:
            raise SceneError(f"{scene.path}: CRS {scene.crs.to_string()} is not projected; "
                             "warp to a metric CRS (e.g. UTM) first")
        try:
            unit, factor = scene.crs.linear_units_factor
        except CRSError:
            unit, factor = scene.crs.linear_units or "unknown unit", math.nan
        if factor != 1.0:
            raise SceneError(f"{scene.path}: CRS {scene.crs.to_string()} is in {unit}, not metres; warp to "
                             "a metric CRS (e.g. UTM: gdalwarp -t_srs EPSG:326NN) first")
        left, bottom, right, top = scene.bounds
        return cls(scene.crs, left, top, right - left, top - bottom)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return self.left, self.top - self.height_m, self.left + self.width_m, self.top

    def overlaps(self, scene: SceneInput) -> bool:
        """Does `scene` cover part of the frame? Checked in both CRSs: far outside a projection's
        area of use, transformed coordinates can land anywhere."""
        theirs = _bounds_in(scene.bounds, scene.crs, self.crs)
        mine = _bounds_in(self.bounds, self.crs, scene.crs)
        return _intersect(theirs, self.bounds) and _intersect(mine, scene.bounds)

    def pixel_size(self, scene: SceneInput) -> float:
        """Side in frame metres of a pixel of `scene` (its mean footprint, whatever its CRS)."""
        left, bottom, right, top = _bounds_in(scene.bounds, scene.crs, self.crs)
        return math.sqrt(abs((right - left) * (top - bottom)) / (scene.width * scene.height))

    def grid(self, gsd: float) -> tuple[Affine, int, int]:
        """Transform and size of the native grid at `gsd` metres covering the frame."""
        width = max(1, math.ceil(self.width_m / gsd - 1e-6))
        height = max(1, math.ceil(self.height_m / gsd - 1e-6))
        return Affine(gsd, 0.0, self.left, 0.0, -gsd, self.top), width, height


def _bounds_in(bounds: tuple[float, float, float, float], src: CRS, dst: CRS) -> tuple[float, ...]:
    """`bounds` transformed from `src` to `dst` (NaN where PROJ cannot)."""
    try:
        return transform_bounds(src, dst, *bounds, densify_pts=21)
    except (CRSError, ValueError, RuntimeError):
        return (math.nan,) * 4


def _intersect(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Do two (left, bottom, right, top) boxes share an area? False when one is not finite."""
    return all(map(math.isfinite, a)) and a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


class _FileWarp:
    """Some bands of one file warped onto a grid of the frame."""

    def __init__(self, href: str, nodata: float | None, frame: SceneFrame, grid: tuple[Affine, int, int],
                 band_index: list[int], resampling: Resampling | Callable[[object], Resampling]):
        self.href, self.band_index = href, band_index
        self._src = rasterio.open(href)
        nodata = self._src.nodata if self._src.nodata is not None else nodata
        transform, width, height = grid
        # Flipped sources (south-up, westward) are warped onto this north-up grid like any other.
        # Without a nodata value, masked reads of a warped VRT call everything valid, even where
        # the source does not reach: an alpha band is the reliable record of coverage then.
        self.alpha = self._src.count + 1 if nodata is None else None
        chosen = resampling if isinstance(resampling, Resampling) else resampling(self._src)
        self.vrt = WarpedVRT(self._src, crs=frame.crs, transform=transform, width=width, height=height,
                             resampling=chosen, src_nodata=nodata, nodata=nodata, dtype="float32",
                             add_alpha=self.alpha is not None)

    def close(self) -> None:
        self.vrt.close()
        self._src.close()


class GridReader:
    """Reads windows of some bands of a scene on a grid of the frame (GDAL warping as needed),
    each band straight from the file that holds it."""

    def __init__(self, scene: SceneInput, frame: SceneFrame, gsd: float, bands: list[str],
                 resampling: Resampling | Callable[[object], Resampling]):
        self.scene, self.bands = scene, bands
        self.transform, self.width, self.height = frame.grid(gsd)
        by_file: dict[str, list[int]] = {}
        self._order: list[tuple[str, int]] = []  # (file, position among that file's bands) per band
        for band in bands:
            href, index = scene.band_source(band)
            self._order.append((href, len(by_file.setdefault(href, []))))
            by_file[href].append(index)
        self._files = {}
        try:
            for href, indexes in by_file.items():
                self._files[href] = _FileWarp(
                    href, scene.nodata, frame, (self.transform, self.width, self.height), indexes, resampling
                )
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for f in self._files.values():
            f.close()

    def read(self, col: int, row: int, size: int, height: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(C, height, size) float32 values and (height, size) validity (a square window by default);
        outside the scene -> invalid."""
        height = size if height is None else height
        data = np.zeros((len(self.bands), height, size), np.float32)
        valid = np.zeros((height, size), bool)
        c0, r0 = max(col, 0), max(row, 0)
        c1, r1 = min(col + size, self.width), min(row + height, self.height)
        if c1 <= c0 or r1 <= r0:
            return data, valid
        window = Window(c0, r0, c1 - c0, r1 - r0)
        mask = np.ones((r1 - r0, c1 - c0), bool)
        blocks = {}
        for href, f in self._files.items():
            with _reading(Path(href)):
                block = f.vrt.read(f.band_index, window=window, masked=True)
                alpha = f.vrt.read(f.alpha, window=window) > 0 if f.alpha is not None else True
            values = block.filled(0)
            mask &= ~np.ma.getmaskarray(block).any(axis=0) & np.isfinite(values).all(axis=0) & alpha
            blocks[href] = values
        values = np.stack([blocks[href][i] for href, i in self._order])
        data[:, r0 - row : r1 - row, c0 - col : c1 - col] = np.nan_to_num(
            values, nan=0.0, posinf=0.0, neginf=0.0
        )
        valid[r0 - row : r1 - row, c0 - col : c1 - col] = mask
        return data, valid


def coverage_reader(scene: SceneInput, frame: SceneFrame, gsd: float) -> GridReader:
    """Where a scene has data, on a fine grid (nearest: a pixel is valid iff its source pixel is)."""
    return GridReader(scene, frame, gsd, list(scene.bands), Resampling.nearest)


class ModalityReader(GridReader):
    """Reads one modality on its native grid, in the physical units the processing expects."""

    def __init__(self, scene: SceneInput, modality: Modality, frame: SceneFrame):
        bands = list(modality.bands or scene.bands[:1])
        for band in bands:
            if band not in scene.bands:
                raise SceneError(f"{scene.path.name}: band {band} of {modality.name} is missing")

        def resampling(src) -> Resampling:  # by the pixel size of the file each band comes from
            if isinstance(modality.processing, Classes):
                return Resampling.nearest
            if src.crs == frame.crs and abs(src.transform.a) < modality.image_gsd:
                return Resampling.average
            return Resampling.bilinear

        super().__init__(scene, frame, modality.image_gsd, bands, resampling)
        self.modality = modality
        self._pixels_read = self._not_indices = 0
        self._example: float | None = None

    def read(self, col: int, row: int, size: int, height: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        data, valid = super().read(col, row, size, height)
        return self._to_physical(data, valid), valid

    def close(self) -> None:
        super().close()
        m, classes = self.modality, self.modality.processing
        if self._not_indices and isinstance(classes, Classes):  # counted for classes only
            share = 100 * self._not_indices / self._pixels_read
            warnings.warn(
                f"{self.scene.path.name}: {self._not_indices} of {self._pixels_read} {m.name} "
                f"pixels read ({share:.2g}%) are not class indices "
                f"0-{len(classes.codes) - 1} (e.g. {self._example:g}); mapped to class "
                f"{classes.names[0]!r} as unknown codes are (--lulc-values code if they are codes)",
                UnknownClassCodeWarning,
                stacklevel=2,
            )

    def _to_physical(self, values: np.ndarray, valid: np.ndarray) -> np.ndarray:
        scene, proc = self.scene, self.modality.processing
        if scene.product == "S1RTC" and scene.units == "db":
            return np.power(10.0, values / 10.0, dtype=np.float32)
        if isinstance(proc, Classes) and scene.units == "index":
            codes = np.asarray(proc.codes, np.float32)
            outside = (values < 0) | (values > len(codes) - 1)
            counted = outside & valid  # nodata pixels are masked later, not unknown classes
            if counted.any():
                self._example = self._example if self._example is not None else float(values[counted][0])
                self._not_indices += int(counted.sum())
            self._pixels_read += int(valid.sum())
            return codes[np.where(outside, 0, values).astype(np.int64)]
        if scene.dn_offset:
            return values + np.float32(scene.dn_offset)
        return values
