"""Georeferenced outputs: rows streamed into a tiled GeoTIFF, then turned into a COG atomically.

Nothing is written under the final name until the COG is complete: the partial file and the
COG under construction carry temporary names in the output folder, and a rename publishes it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window


class CogWriter:
    def __init__(self, path: Path, crs: CRS, transform: Affine, width: int, height: int, count: int,
                 dtype: str, nodata: float | int, descriptions: list[str], units: list[str],
                 tags: dict[str, str], categorical: bool = False,
                 scales: list[float] | None = None, alpha: bool = False):
        self.path = Path(path)
        self.partial = self.path.with_name(f".{self.path.name}.partial.tif")
        self.categorical = categorical
        profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=dtype, crs=crs,
                       transform=transform, nodata=nodata, tiled=True, blockxsize=256, blockysize=256,
                       compress="deflate", BIGTIFF="IF_SAFER")
        self.dst = rasterio.open(self.partial, "w", **profile)
        for i, (desc, unit) in enumerate(zip(descriptions, units), start=1):
            self.dst.set_band_description(i, desc)
            self.dst.set_band_unit(i, unit)
        if scales:
            self.dst.scales = scales
        if alpha:  # RGB + alpha: the last band says where there is data
            from rasterio.enums import ColorInterp

            self.dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
        self.dst.update_tags(**tags)
        self.dtype, self.width = dtype, width

    def write_rows(self, row: int, data: np.ndarray) -> None:
        self.dst.write(data.astype(self.dtype, copy=False), window=Window(0, row, self.width, data.shape[1]))

    def close(self) -> Path:
        self.dst.close()
        building = self.path.with_name(f".{self.path.name}.cog.tmp")
        try:
            rasterio.shutil.copy(self.partial, building, driver="COG", COMPRESS="DEFLATE",
                                 BLOCKSIZE=256, OVERVIEWS="AUTO", BIGTIFF="IF_SAFER",
                                 RESAMPLING="NEAREST" if self.categorical else "AVERAGE")
            os.replace(building, self.path)
        finally:
            building.unlink(missing_ok=True)
            self.partial.unlink(missing_ok=True)
        return self.path

    def abort(self) -> None:
        if not self.dst.closed:
            self.dst.close()
        self.partial.unlink(missing_ok=True)
