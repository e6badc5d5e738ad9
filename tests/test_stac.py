"""A STAC Item per scene and a Collection per many-scene run, read back with pystac."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pystac
import rasterio
from click.testing import CliRunner
from product_fixtures import make_safe, stacked_chip

from copgen_rt.cli import main

RUN = ["--steps", "1", "--dtype", "fp32", "--backend", "torch", "-q", "--generate", "S1RTC,LULC,S2L1C",
       "--tiling", "scene"]  # tiles from the corner: 4 on the chip, not 9 (tiling is not tested here)


def test_each_scene_has_an_item_with_every_output_as_an_asset(tmp_path):
    safe = make_safe(tmp_path, stacked_chip(tmp_path))
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["infer", str(safe), "--out", str(out), *RUN])
    assert r.exit_code == 0, r.output
    item_path = next(out.glob("*_item.json"))
    assert str(item_path) in r.output.splitlines()
    item = pystac.Item.from_file(str(item_path))
    assert pystac.Item.from_dict(item.to_dict()).to_dict() == item.to_dict()  # round trip
    assert item.properties["copgen:random_weights"] is True and "RANDOM WEIGHTS" in item.properties["title"]
    assert str(item.datetime.date()) == "2021-06-15"  # from the MTD's PRODUCT_START_TIME
    assert item.properties["processing:software"]["copgen-rt"]
    tifs = sorted(out.glob("*.tif"))
    assert sorted(Path(a.get_absolute_href()).name for a in item.assets.values()) == [p.name for p in tifs]
    for asset in item.assets.values():
        path = Path(asset.get_absolute_href())
        d = asset.to_dict()
        with rasterio.open(path) as src:
            assert d["proj:code"] == f"EPSG:{src.crs.to_epsg()}" and d["proj:shape"] == list(src.shape)
            assert d["proj:transform"] == list(src.transform)[:6]
            assert [b.get("raster:scale", 1.0) for b in d["bands"]] == list(src.scales)
            assert [b.get("raster:offset", 0.0) for b in d["bands"]] == list(src.offsets)
            assert [b["name"] for b in d["bands"]] == list(src.descriptions)
            assert item.properties["copgen:provenance"]["COPGEN_RUN_KEY"] == src.tags()["COPGEN_RUN_KEY"]
        assert d["file:checksum"] == "1220" + hashlib.sha256(path.read_bytes()).hexdigest()
        assert d["file:size"] == path.stat().st_size
    lulc = next(a for k, a in item.assets.items() if k.endswith("LULC_LULC")).to_dict()
    assert [c["value"] for c in lulc["classification:classes"]] == [0, 1, 2, 4, 5, 7, 8, 9, 10, 11]
    blue = next(a for k, a in item.assets.items() if k.endswith("S2L1C_B04_B03_B02_B08")).to_dict()
    assert [b["eo:common_name"] for b in blue["bands"]] == ["red", "green", "blue", "nir"]
    (source,) = [link for link in item.links if link.rel == "derived_from"]
    assert Path(source.href) == safe.resolve()
    again = tmp_path / "again"  # no clock in it: a rerun (another worker) writes the same Item
    assert CliRunner().invoke(main, ["infer", str(safe), "--out", str(again), *RUN]).exit_code == 0
    assert (again / item_path.name).read_text() == item_path.read_text()
    for extension in (
        "projection/v2.0.0",
        "raster/v2.0.0",
        "eo/v2.0.0",
        "processing/v1.2.0",
        "classification",
    ):
        assert any(extension in url for url in item.stac_extensions), extension


def test_a_many_scene_run_writes_a_collection_of_its_items(tmp_path):
    first = stacked_chip(tmp_path)
    second = shutil.copy(first, tmp_path / "second.tif")
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["infer", str(first), str(second), "--out", str(out), *RUN])
    assert r.exit_code == 0, r.output
    collection = pystac.Collection.from_file(str(out / "copgen-collection.json"))
    items = list(collection.get_items())
    assert sorted(i.id for i in items) == ["S2L2A_stacked", "second"]
    assert collection.extra_fields["copgen:random_weights"] is True
    (box,) = collection.extent.spatial.bboxes
    for i in items:
        assert box[0] <= i.bbox[0] and box[1] <= i.bbox[1] and i.bbox[2] <= box[2] and i.bbox[3] <= box[3]
        assert all(Path(a.get_absolute_href()).is_file() for a in i.assets.values())
