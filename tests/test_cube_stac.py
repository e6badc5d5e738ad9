"""STAC in: odc-stac loads local file:// Items of a scene (a COG per band) straight into
`cube.generate`, and the result is what `infer` makes of the same Items."""

from __future__ import annotations

import numpy as np
import pystac
import pytest
import rasterio
from product_fixtures import make_band_folder, make_stac_item, stacked_chip
from rasterio.warp import transform_bounds

from copgen_rt import Pipeline, specs
from copgen_rt.scenes.inputs.open import open_input
from copgen_rt.scenes.job import SceneJob, SceneOptions
from copgen_rt.scenes.run import run_scene

odc_stac = pytest.importorskip("odc.stac")
pytest.importorskip("rioxarray")
from odc.geo.geobox import GeoBox  # noqa: E402

from copgen_rt import cube  # noqa: E402

OPTIONS = dict(steps=1, batch_size=1, seed=11)


def test_odc_stac_load_goes_straight_into_the_cube_and_equals_infer(tmp_path):
    item_path = make_stac_item(tmp_path, make_band_folder(tmp_path, stacked_chip(tmp_path)), file_urls=True)
    item = pystac.Item.from_file(str(item_path))
    with rasterio.open(item.assets["blue"].href) as b02:  # the product's own 10 m grid
        geobox = GeoBox((b02.height, b02.width), b02.transform, b02.crs)
        west, south, east, north = transform_bounds(b02.crs, "EPSG:4326", *b02.bounds)
    item.bbox = [west, south, east, north]  # odc-stac wants a footprint (the fixture has none)
    item.geometry = {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north],
                                                         [west, north], [west, south]]]}
    data = odc_stac.load([item], geobox=geobox, chunks={})  # dask-backed, a variable per band asset
    assert "blue" in data.data_vars and data.sizes["time"] == 1

    demo = Pipeline.demo(engine="torch", dtype="fp32")
    out = cube.generate(data, ["S1RTC", "DEM"], pipeline=demo, **OPTIONS).compute()
    job = SceneJob(specs.get("copgen-demo"), [open_input(item_path)], tmp_path / "infer",
                   SceneOptions(generate=("DEM_DEM", "S1RTC_vh_vv"), **OPTIONS))
    files = {p.name: p for p in run_scene(job, demo).outputs}
    assert out.attrs["COPGEN_DATE"] == "2021-06-15" == job.date.isoformat()  # from the Item, both ways
    for name in ("S1RTC_vh_vv", "DEM_DEM"):
        label = specs.get("copgen-demo").modality(name).file_label  # files name bands as stored
        with rasterio.open(files[f"{item_path.stem}_{label}.tif"]) as src:
            assert out[name].rio.transform() == src.transform
            assert np.array_equal(out[name].values, src.read(), equal_nan=True), name
