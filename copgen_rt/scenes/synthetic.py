"""Synthetic rasters for benchmarks and tests: smooth fields a seam would show up in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine


def write_raster(path: Path, data: np.ndarray, crs="EPSG:32633", transform=None, nodata=None,
                 descriptions=None, tags=None) -> Path:
    count, height, width = data.shape
    transform = transform or Affine(10, 0, 500000, 0, -10, 5200000)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count,
                       dtype=data.dtype, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions or (), 1):
            dst.set_band_description(i, d)
        if tags:
            dst.update_tags(**tags)
    return path


def smooth_s2(height: int, width: int, seed: int = 0) -> np.ndarray:
    """12-band int16 Sentinel-2 L2A-like DNs varying smoothly in space."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    rng = np.random.default_rng(seed)
    bands = []
    for b in range(12):
        fx, fy, phase = rng.uniform(0.002, 0.01), rng.uniform(0.002, 0.01), rng.uniform(0, 6)
        bands.append(1500 + 800 * np.sin(fx * x + phase) * np.cos(fy * y) + 30 * b)
    return np.stack(bands).astype(np.int16)
