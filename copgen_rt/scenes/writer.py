"""Georeferenced outputs: rows streamed into a tiled GeoTIFF, then turned into a COG.

Both are written inside the run's private staging folder (`copgen_rt.files.Staging`); the
caller publishes the finished COG under its final name with a rename.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio._err import CPLE_BaseError  # GDAL's own errors (not exported by rasterio.errors)
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.windows import Window

from copgen_rt.files import Staging, write_error

GDAL_ERRORS = (OSError, RasterioError, CPLE_BaseError)


class CogWriter:
    def __init__(self, staging: Staging, path: Path, crs: CRS, transform: Affine, width: int, height: int,
                 count: int, dtype: str, nodata: float | None, descriptions: list[str], units: list[str],
                 tags: dict[str, str], categorical: bool = False,
                 scales: list[float] | None = None, alpha: bool = False, offsets: list[float] | None = None,
                 colormap: dict[int, tuple[int, int, int, int]] | None = None,
                 band_tags: dict[str, str] | None = None):
        self.path = Path(path)  # where the caller publishes it
        self.partial = staging.file(f"{self.path.name}.partial.tif")
        self.staged = staging.file(self.path.name)
        self.categorical = categorical
        profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=dtype, crs=crs,
                       transform=transform, nodata=nodata, tiled=True, blockxsize=256, blockysize=256,
                       compress="none", BIGTIFF="IF_SAFER")
        try:
            self.dst = rasterio.open(self.partial, "w", **profile)
        except GDAL_ERRORS as e:
            raise write_error(self.path, e) from None
        for i, (desc, unit) in enumerate(zip(descriptions, units, strict=True), start=1):
            self.dst.set_band_description(i, desc)
            self.dst.set_band_unit(i, unit)
        if scales:
            self.dst.scales = scales
        if offsets:
            self.dst.offsets = offsets
        if colormap:
            self.dst.write_colormap(1, colormap)
        if band_tags:
            self.dst.update_tags(1, **band_tags)
        if alpha:  # RGB + alpha: the last band says where there is data
            from rasterio.enums import ColorInterp

            self.dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
        self.dst.update_tags(**tags)
        self.dtype, self.width = dtype, width

    def write_rows(self, row: int, data: np.ndarray) -> None:
        try:
            self.dst.write(data.astype(self.dtype, copy=False),
                           window=Window(0, row, self.width, data.shape[1]))
        except GDAL_ERRORS as e:
            raise write_error(self.path, e) from None

    def close(self) -> Path:
        """Finish the COG in the staging folder; returns it there (not yet published)."""
        try:
            self.dst.close()
            rasterio.shutil.copy(self.partial, self.staged, driver="COG", COMPRESS="DEFLATE",
                                 BLOCKSIZE=256, OVERVIEWS="AUTO", BIGTIFF="IF_SAFER",
                                 RESAMPLING="NEAREST" if self.categorical else "AVERAGE")
        except GDAL_ERRORS as e:
            raise write_error(self.path, e) from None
        finally:
            self.partial.unlink(missing_ok=True)
        return self.staged

    def abort(self) -> None:
        if not self.dst.closed:
            self.dst.close()
