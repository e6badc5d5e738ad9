"""Reading scene inputs on native grids: a `SceneFrame` is a scene's extent in a projected CRS, a
`ModalityReader` reads any window of one spec modality on that modality's native grid of the frame
(resampled with GDAL where the file is on another grid), in the physical units the processing
expects, with a validity mask. What the inputs are: `copgen_rt.scenes.inputs`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import CRSError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from copgen_rt.errors import SceneError
from copgen_rt.processing import UnknownClassCodeWarning
from copgen_rt.scenes.inputs.raster_checks import reading
from copgen_rt.scenes.inputs.scene_input import SceneInput
from copgen_rt.specs import Classes, Modality

COARSE_FACTOR = 4.0  # inputs coarser than this many native pixels get a CoarseInputWarning


class CoarseInputWarning(UserWarning):
    """An input is much coarser than a modality read from it: it is upsampled, detail is invented."""


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
            with reading(Path(href)):
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
