"""Analysis-ready outputs: rioxarray's mask_and_scale gives physical values (checked against the
input product's own MTD), class rasters carry colours and names, --samples outputs say what they
are, --grid 10 puts every output on the scene's 10 m grid."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rioxarray
from click.testing import CliRunner
from product_fixtures import make_safe, stacked_chip

from copgen_rt import specs
from copgen_rt.cli import main

RUN = ["--steps", "1", "--dtype", "fp32", "--backend", "torch", "-q", "--samples", "2",
       "--tiling", "scene"]  # tiles from the corner: 4 on the chip, not 9 (tiling is not tested here)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("ard")
    stacked = stacked_chip(tmp)
    safe = make_safe(tmp, stacked)
    outs = {}
    for grid in ("native", "10"):
        outs[grid] = tmp / f"out-{grid}"
        r = CliRunner().invoke(main, ["infer", str(safe), "--out", str(outs[grid]), "--grid", grid, *RUN])
        assert r.exit_code == 0, r.output
    outs["scene"], outs["safe"] = stacked, safe
    return outs


def _output(folder: Path, name: str) -> Path:
    return next(p for p in folder.glob("*.tif") if p.name.endswith(f"_{name}.tif"))


def _mtd_offset_and_quantification(safe: Path) -> tuple[float, float]:
    text = (safe / "MTD_MSIL2A.xml").read_text()
    add = float(re.search(r"<BOA_ADD_OFFSET band_id=\"\d+\">(-?\d+)<", text).group(1))
    q = float(re.search(r"<BOA_QUANTIFICATION_VALUE[^>]*>(\d+)<", text).group(1))
    return add, q


def test_mask_and_scale_gives_reflectance_backscatter_and_metres(runs):
    add, q = _mtd_offset_and_quantification(runs["safe"])  # the input's own rule: (DN + add) / q
    for name in ("S2L1C_B04_B03_B02_B08", "S2L1C_B05_B06_B07_B8A_B11_B12", "S2L1C_B01_B09_B10"):
        path = _output(runs["native"], name)
        with rasterio.open(path) as src:
            dn = src.read().astype(np.float64)
        x = rioxarray.open_rasterio(path, mask_and_scale=True)
        # this input's DNs needed no shift (baseline 05.09): output DNs follow the input's convention
        np.testing.assert_allclose(x.values, (dn + add) / q, rtol=1e-6, atol=1e-7)
        assert set(x.attrs["units"]) == {"top-of-atmosphere reflectance (TOA, L1C)"}
        assert 0.0 < float(np.nanmedian(x.values)) < 1.0
        assert (
            "inferred" in x.attrs["COPGEN_S2_DN_CONVENTION"]
            and "MTD_MSIL2A.xml" in x.attrs["COPGEN_S2_DN_CONVENTION"]
        )
    std = rioxarray.open_rasterio(_output(runs["native"], "S2L1C_B04_B03_B02_B08_std"), mask_and_scale=True)
    with rasterio.open(_output(runs["native"], "S2L1C_B04_B03_B02_B08_std")) as src:
        np.testing.assert_allclose(std.values, src.read() / q, rtol=1e-6)  # a spread has no offset
    for name, unit in (("S1RTC_VV_VH", "dB"), ("DEM_DEM", "m")):
        path = _output(runs["native"], name)
        x = rioxarray.open_rasterio(path, mask_and_scale=True)
        with rasterio.open(path) as src:
            np.testing.assert_array_equal(x.values, src.read())
        assert set(x.attrs["units"] if isinstance(x.attrs["units"], tuple) else [x.attrs["units"]]) == {unit}


def test_class_rasters_carry_colours_names_and_the_code_convention(runs):
    for name, classes in (("LULC_LULC", specs.LULC_CLASSES), ("S2L1C_cloud_mask", specs.CLOUD_CLASSES)):
        with rasterio.open(_output(runs["native"], name)) as src:
            cmap = src.colormap(1)
            tags = src.tags(1)
            values = np.unique(src.read(1))
        assert cmap[classes.codes[1]][:3] == tuple(int(classes.colors[1][i : i + 2], 16) for i in (1, 3, 5))
        assert tags["CLASS_NAMES"].split(",") == list(classes.names)
        assert (
            tags["CLASS_CODES"] == ",".join(map(str, classes.codes))
            and "indices 0-9" in tags["CLASS_CONVENTION"]
        )
        assert set(values) <= set(classes.codes) | {255}


def test_sample_statistics_are_named_and_described(runs):
    described = {}
    for path in runs["native"].glob("*.tif"):
        with rasterio.open(path) as src:
            described[path.stem.split("T170000_")[-1]] = (src.tags()["COPGEN_STATISTIC"], src.descriptions[0])
    assert described["S1RTC_VV_VH"] == ("mean", "VV mean of 2 samples")
    assert described["S1RTC_VV_VH_std"] == ("standard deviation", "VV standard deviation of 2 samples")
    assert described["LULC_LULC_confidence"][0].startswith("class confidence")
    assert described["LULC_LULC"][0].startswith("most likely class")


def test_grid_10_puts_every_output_on_the_scenes_own_grid(runs):
    with rasterio.open(runs["scene"]) as scene:
        bounds, transform, shape = scene.bounds, scene.transform, scene.shape
    native = {p.name: p for p in runs["native"].glob("*.tif")}
    for path in runs["10"].glob("*.tif"):
        with rasterio.open(path) as ten, rasterio.open(native[path.name]) as own:
            assert (ten.bounds, ten.transform, ten.shape) == (bounds, transform, shape), path.name
            f = round(own.res[0] / 10)
            repeated = own.read().repeat(f, axis=1).repeat(f, axis=2)[:, : shape[0], : shape[1]]
            np.testing.assert_array_equal(ten.read(), repeated)  # values unchanged, pixels repeated
