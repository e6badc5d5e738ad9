"""The cube front door (copgen_rt.cube): the pixels `infer` writes, numpy now or dask lazily."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from copgen_rt import Pipeline, specs
from copgen_rt.demo import default_scene
from copgen_rt.scenes.inputs.open import open_input
from copgen_rt.scenes.job import SceneJob, SceneOptions
from copgen_rt.scenes.run import run_scene

xr = pytest.importorskip("xarray")
rioxarray = pytest.importorskip("rioxarray")
pytest.importorskip("dask")
from copgen_rt import cube  # noqa: E402

SIDE = 120  # px of the chip's corner: 4 Earth-anchored tiles
OPTIONS = dict(steps=1, batch_size=1, seed=5)  # one tile per call: bit for bit whatever the blocks


@pytest.fixture(scope="module")
def demo():
    return Pipeline.demo(engine="torch", dtype="fp32")  # no engine to compile: a fast test


@pytest.fixture(scope="module")
def corner(tmp_path_factory):
    """The bundled chip's corner as a file (what infer reads) and as a DataArray (what the cube gets)."""
    path = tmp_path_factory.mktemp("cube") / "corner.tif"
    with rasterio.open(default_scene()) as src:
        profile = src.profile | dict(width=SIDE, height=SIDE)
        data = src.read(window=((0, SIDE), (0, SIDE)))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path, rioxarray.open_rasterio(path)


@pytest.fixture(scope="module")
def infer_outputs(corner, demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("infer")
    job = SceneJob(specs.get("copgen-demo"), [open_input(corner[0])], out,
                   SceneOptions(generate=("DEM_DEM", "S1RTC_vh_vv"), **OPTIONS))
    return {p.name: p for p in run_scene(job, demo).outputs}


@pytest.fixture(scope="module")
def now(corner, demo):
    return cube.generate({"S2L2A": corner[1]}, ["DEM", "S1RTC"], pipeline=demo, **OPTIONS)


def test_numpy_inputs_give_what_infer_writes(now, infer_outputs, tmp_path):
    assert set(now.data_vars) == {"DEM_DEM", "S1RTC_vh_vv"}
    assert now.attrs["COPGEN_RANDOM_WEIGHTS"] == "true" and now.attrs["COPGEN_TILING"] == "earth"
    s1 = now["S1RTC_vh_vv"]
    assert list(s1["band_S1RTC_vh_vv"].values) == ["VV", "VH"] and s1.attrs["units"] == "dB"
    s1.rio.to_raster(tmp_path / "s1.tif")
    dem = now["DEM_DEM"].rio.set_spatial_dims(x_dim="x_30m", y_dim="y_30m")  # a grid of its own
    assert dem.attrs["units"] == "m"
    dem.rio.to_raster(tmp_path / "dem.tif")
    for var, mine, name in (("S1RTC_vh_vv", "s1.tif", "corner_S1RTC_VV_VH.tif"),
                            ("DEM_DEM", "dem.tif", "corner_DEM_DEM.tif")):
        with rasterio.open(tmp_path / mine) as a, rasterio.open(infer_outputs[name]) as b:
            assert now[var].rio.transform() == b.transform  # each grid its own grid mapping
            assert (a.crs, a.transform, a.shape, a.count) == (b.crs, b.transform, b.shape, b.count)
            assert np.array_equal(a.read(), b.read(), equal_nan=True), name


def test_dask_inputs_are_lazy_and_give_the_same_values(corner, now, demo):
    chunked = corner[1].chunk({"y": 70, "x": 65})  # blocks that cut tiles and the 30 m grid anywhere
    lazy = cube.generate({"S2L2A": chunked}, ["DEM", "S1RTC"], pipeline=demo, **OPTIONS)
    assert lazy["S1RTC_vh_vv"].chunks is not None and lazy["S1RTC_vh_vv"].data.numblocks == (1, 2, 2)
    computed = lazy.compute(scheduler="synchronous")
    for name in now.data_vars:
        assert computed[name].shape == now[name].shape
        assert np.array_equal(computed[name].values, now[name].values, equal_nan=True), name
        assert computed[name].rio.transform() == now[name].rio.transform()


def _s2(crs="EPSG:32633", bands=None, side=8, value=1500, dtype=np.uint16, left=500000):
    names = bands or list(specs.PRODUCTS["S2L2A"])
    da = xr.DataArray(np.full((len(names), side, side), value, dtype), dims=("band", "y", "x"),
                      coords={"band": names, "y": 5200000 - 10 * (np.arange(side) + 0.5),
                              "x": left + 10 * (np.arange(side) + 0.5)})
    return da.rio.write_crs(crs) if crs else da


@pytest.mark.parametrize("inputs,message", [
    (lambda: {"S2L2A": _s2(crs=None)}, "S2L2A: no CRS"),
    (lambda: {"S2L2A": _s2(crs="EPSG:4326")}, "is geographic"),
    (lambda: {"S2L2A": _s2(bands=["B02", "BLUEISH"] + ["B03"] * 10)}, "unknown band(s) BLUEISH"),
    (lambda: {"S2L2A": _s2(), "S1RTC": _s2(bands=["VV", "VH"], value=-12.0, dtype=np.float32, left=900000)},
     "does not overlap"),
    (lambda: {"S5P": _s2()}, "unknown product 'S5P'"),
    (lambda: [1, 2], "inputs must be an xarray.Dataset"),
])
def test_bad_inputs_are_one_clear_exception(inputs, message):
    with pytest.raises(cube.CubeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cube.generate(inputs(), ["DEM"], steps=1)
