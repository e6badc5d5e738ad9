"""copgen-rt as an openEO UDF: pass this file's source to openEO (docs/chains.md), e.g.

    udf = openeo.UDF.from_file(copgen_rt.openeo.udf.__file__, context={...})
    cube.apply_neighborhood(udf, size=[...], overlap=[...])

`apply_datacube` gets a chunk (t, bands, y, x) of a Sentinel-2 L2A (or S1 RTC, DEM, ...) cube on a
projected 10 m grid and returns the generated modalities' bands on the same grid (bands named
MODALITY:BAND). Its options come in the UDF context:
  crs (required: openEO hands the UDF coordinates, not the CRS), product (default S2L2A),
  generate (modalities or products, default ["S1RTC"]), weights (a weights directory or hub id,
  default the bundled demo model), preset, steps, seed, dtype, engine, batch_size.
The pipeline is loaded once per worker process (`copgen_rt.cube.loaded_pipeline`). Tiles are
anchored to the CRS, and each chunk is padded to the 60 m lattice of its grid, so neighbouring
chunks compute the same tiles: with an overlap of one tile footprint (192 px at 10 m) every
chunk's centre equals a whole-scene run.

No `from __future__ import annotations` here: openEO finds `apply_datacube` by its annotations,
which must be the XarrayDataCube class itself.
"""

import math
from typing import Any

import numpy as np
import xarray
from openeo.udf import XarrayDataCube

LATTICE_M = 60.0  # tiles start on this lattice of every native grid (copgen_rt.scenes.tiling.ALIGN_M)


def apply_datacube(cube: XarrayDataCube, context: dict) -> XarrayDataCube:
    from copgen_rt import cube as cubes

    array = cube.get_array()
    options = dict(context or {})
    crs = options.pop("crs", None)
    if crs is None:
        raise ValueError("copgen-rt UDF: give the cube's CRS in the context, e.g. {'crs': 'EPSG:32633'}")
    product = options.pop("product", "S2L2A")
    generate = options.pop("generate", ["S1RTC"])
    weights, engine = options.pop("weights", None), options.pop("engine", None)
    pipeline = _pipeline(weights, options.pop("dtype", None), engine)
    times = array["t"].values if "t" in array.dims else [None]
    results = []
    for t in times:
        chunk = array.sel(t=t) if t is not None else array
        padded, (top, left) = _on_lattice(chunk.rename(bands="band").astype(np.float32))
        inputs = {product: padded.rio.write_crs(crs)}
        date = str(t)[:10] if t is not None else None
        out = cubes.generate(inputs, generate, pipeline=pipeline, grid=10, date=date, **options)
        bands = []
        for name, var in out.data_vars.items():
            band_dim = f"band_{name}"
            values = var.isel(y=slice(top, top + chunk.sizes["y"]), x=slice(left, left + chunk.sizes["x"]))
            names = [f"{name}:{b}" for b in var[band_dim].values]
            values = values.rename({band_dim: "bands"}).assign_coords(bands=names)
            bands.append(values.drop_vars("spatial_ref", errors="ignore"))
        result = xarray.concat(bands, dim="bands").assign_coords(y=chunk["y"], x=chunk["x"])
        results.append(result.astype(np.float64))
    stacked = xarray.concat(results, dim="t").assign_coords(t=times) if "t" in array.dims else results[0]
    return XarrayDataCube(stacked.transpose(*[d for d in ("t", "bands", "y", "x") if d in stacked.dims]))


def _pipeline(weights: str | None, dtype: str | None, engine: str | None) -> Any:
    from copgen_rt.cube import loaded_pipeline

    return loaded_pipeline(weights, dtype, engine)


def _on_lattice(chunk: xarray.DataArray) -> tuple[xarray.DataArray, tuple[int, int]]:
    """The chunk padded with NaN (no data) up and left to where its grid meets the 60 m lattice of
    its pixel phase, so that every chunk of one cube gets the same tiles; and the padding (rows, cols)."""
    x, y = chunk["x"].values, chunk["y"].values
    pixel = float(x[1] - x[0]) if len(x) > 1 else 10.0
    left, top = x[0] - pixel / 2, y[0] + pixel / 2
    cols = _steps(left, pixel)
    rows = _steps(-top, pixel)
    padded = chunk.pad(y=(rows, 0), x=(cols, 0), constant_values=np.nan)
    padded = padded.assign_coords(x=np.concatenate([x[0] - pixel * np.arange(cols, 0, -1), x]),
                                  y=np.concatenate([y[0] + pixel * np.arange(rows, 0, -1), y]))
    return padded, (rows, cols)


def _steps(edge: float, pixel: float) -> int:
    """Pixels to step back from `edge` to a lattice point of the grid's own phase."""
    phase = math.fmod(edge, pixel) % pixel
    return round(((edge - phase) % LATTICE_M) / pixel) % round(LATTICE_M / pixel)
