"""The openEO UDF (copgen_rt/openeo/udf.py), run offline as a backend runs it, on two chunkings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS
from scene_helpers import only_inside, smooth_s2

from copgen_rt.scenes.reader import SceneFrame
from copgen_rt.scenes.tiling import plan_tiles

xr = pytest.importorskip("xarray")
pytest.importorskip("rioxarray")
openeo_udf = pytest.importorskip("openeo.udf")

import copgen_rt.openeo.udf  # noqa: E402

UDF = Path(copgen_rt.openeo.udf.__file__).read_text()  # what a user sends to the backend
LEFT, TOP = 498600.0, 5200080.0  # a lattice tile starts 600 m in, in x and y
CONTEXT = {"crs": "EPSG:32633", "generate": ["S1RTC"], "steps": 1, "seed": 3, "batch_size": 1,
           "engine": "torch", "dtype": "fp32"}


def _cube(rows: int = 300, cols: int = 360) -> xr.DataArray:
    """A Sentinel-2 L2A chunk as openEO hands it to a UDF: (t, bands, y, x) float64 on x/y centres."""
    from copgen_rt import specs

    values = smooth_s2(rows, cols, seed=2).astype(np.float64)[None]
    return xr.DataArray(values, dims=("t", "bands", "y", "x"), coords={
        "t": np.array(["2021-06-15"], "datetime64[ns]"), "bands": list(specs.PRODUCTS["S2L2A"]),
        "y": TOP - 10 * (np.arange(rows) + 0.5), "x": LEFT + 10 * (np.arange(cols) + 0.5)})


def _run(chunk: xr.DataArray) -> xr.DataArray:
    context_udf = __import__("openeo").UDF(code=UDF, context=CONTEXT)
    result = openeo_udf.execute_local_udf(context_udf, chunk)
    return result.get_datacube_list()[0].get_array()


def test_two_chunkings_agree_where_their_tiles_do(tmp_path):
    cube = _cube()
    whole = _run(cube)
    assert whole.dims == ("t", "bands", "y", "x") and whole.shape == (1, 2, 300, 360)
    assert list(whole["bands"].values) == ["S1RTC_vh_vv:VV", "S1RTC_vh_vv:VH"]
    assert np.isfinite(whole.values).all()
    plan = plan_tiles(SceneFrame(CRS.from_epsg(32633), LEFT, TOP, 3600, 3000))
    transform = Affine(10, 0, LEFT, 0, -10, TOP)
    checked = 0
    for cols in (slice(0, 300), slice(46, 360)):  # overlapping chunks; 460 m: off the 60 m lattice
        chunk = _run(cube.isel(x=cols))
        box = (LEFT + 10 * cols.start, TOP - 3000, LEFT + 10 * cols.stop, TOP)
        mask = only_inside(plan, transform, (300, 360), 10.0, box)[:, cols]
        assert mask.sum() > 5000
        mine, theirs = chunk.values[0][:, mask], whole.isel(x=cols).values[0][:, mask]
        assert np.array_equal(mine, theirs)  # bit for bit (one tile per call)
        checked += 1
    assert checked == 2


def test_the_crs_must_be_given():
    context_udf = __import__("openeo").UDF(code=UDF, context={"generate": ["S1RTC"]})
    with pytest.raises(Exception, match="give the cube's CRS in the context"):
        openeo_udf.execute_local_udf(context_udf, _cube(8, 8))
