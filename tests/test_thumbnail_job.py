from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import BETA
from PIL import Image
from scene_helpers import CHIPS

from copgen_rt import Pipeline, thumbnails
from copgen_rt.scenes.synthetic import smooth_s2, write_raster
from copgen_rt.scenes.thumbnail_job import run_thumbnails


@pytest.fixture(scope="module")
def beta(beta_spec):
    return Pipeline.from_weights(beta_spec, BETA / "denoiser.safetensors",
                                 vaes={"sd-kl-f8": BETA / "vae.safetensors"})


def test_png_in_png_out_with_samples(tmp_path, beta):
    img = np.random.default_rng(0).integers(0, 255, (300, 270, 3), dtype=np.uint8)
    thumbnails.write_png(tmp_path / "s1.png", img)
    Image.fromarray(img).save(tmp_path / "s1.webp", lossless=True)
    out = run_thumbnails(beta, {"s1_rtc": tmp_path / "s1.webp"}, tmp_path / "o", generate=["s2_l2a", "dem"],
                         samples=3, steps=2)
    names = sorted(p.name for p in out)
    assert names == ["dem_000.png", "dem_001.png", "dem_002.png", "dem_std.png",
                     "s2_l2a_000.png", "s2_l2a_001.png", "s2_l2a_002.png", "s2_l2a_std.png"]
    a, b = (thumbnails.read_thumbnail(tmp_path / "o" / f"dem_00{i}.png") for i in (0, 1))
    assert a.shape == (256, 256, 3) and not np.array_equal(a, b)  # independent samples
    with Image.open(tmp_path / "o" / "dem_std.png") as img:  # provenance in every PNG
        assert img.info["COPGEN_MODEL"] == beta.spec.name and img.info["COPGEN_STEPS"] == "2"
        assert img.info["COPGEN_CONDITIONS"] == "s1_rtc<-s1.webp"
        assert img.info["COPGEN_RANDOM_WEIGHTS"] == "false"
    single = run_thumbnails(beta, {"s1_rtc": tmp_path / "s1.png"}, tmp_path / "p", steps=2)
    assert sorted(p.name for p in single) == ["dem.png", "s2_l1c.png", "s2_l2a.png"]
    from copgen_rt.errors import OutputExistsError

    with pytest.raises(OutputExistsError):
        run_thumbnails(beta, {"s1_rtc": tmp_path / "s1.png"}, tmp_path / "p", steps=2)


def test_too_small_image_names_the_file(tmp_path, beta):
    thumbnails.write_png(tmp_path / "small.png", np.zeros((80, 100, 3), np.uint8))  # 100 wide, 80 high
    with pytest.raises(ValueError, match=r"small.png: image of 100x80 px \(width x height\) is too small"):
        run_thumbnails(beta, {"s1_rtc": tmp_path / "small.png"}, tmp_path / "o", steps=1)


def test_raster_conditions_are_tiled_and_keep_georeferencing(tmp_path, beta):
    s1 = CHIPS / "S1RTC_433D_629L_3_1.tif"
    out = run_thumbnails(beta, {"s1_rtc": s1}, tmp_path / "o", generate=["s2_l2a"], steps=1)
    tif = next(p for p in out if p.suffix == ".tif")
    with rasterio.open(s1) as src, rasterio.open(tif) as dst:
        assert dst.crs == src.crs and dst.transform == src.transform and dst.shape == src.shape
        assert dst.count == 4 and dst.colorinterp[-1].name == "alpha"
        assert dst.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert (dst.read(4) == 255).all()
        assert dst.tags()["COPGEN_SOLVER"] == "reference" and dst.tags()["COPGEN_STEPS"] == "1"
    png = next(p for p in out if p.suffix == ".png")
    with Image.open(png) as img:
        assert img.info["COPGEN_SOFTWARE"].startswith("copgen-rt") and "Description" in img.info


def test_large_raster_with_nodata_and_samples(tmp_path, beta):
    data = smooth_s2(300, 300)
    data[:, :, 250:] = -1
    s2 = write_raster(tmp_path / "s2.tif", data, nodata=-1)
    dem = write_raster(tmp_path / "dem.tif", (smooth_s2(34, 40)[:1] // 10),  # 1.02 x 1.2 km at 30 m
                       transform=Affine(30, 0, 501800, 0, -30, 5200000))
    out = run_thumbnails(beta, {"s2_l2a": s2, "dem": dem}, tmp_path / "o",
                         generate=["s1_rtc"], steps=1, samples=2)
    names = sorted(p.name for p in out)
    assert names == ["s2_s1_rtc.png", "s2_s1_rtc.tif", "s2_s1_rtc_std.png", "s2_s1_rtc_std.tif"]
    with rasterio.open(tmp_path / "o" / "s2_s1_rtc.tif") as dst:
        alpha = dst.read(4)
    # S2 has no data in its last 50 columns; the DEM covers columns 180-300 of rows 0-102 there
    assert alpha[:, :250].all() and alpha[:102, 250:].all() and not alpha[102:, 250:].any()


def _cli(args):
    from click.testing import CliRunner

    from copgen_rt.cli import main

    return CliRunner().invoke(main, args)


def test_cli_beta(tmp_path):
    base = ["infer", "--spec-json", str(BETA / "spec.json"), "--weights", str(BETA), "--steps", "2", "-q"]
    img = np.random.default_rng(1).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    thumbnails.write_png(tmp_path / "s1.png", img)
    r = _cli([*base, "--cond", f"s1_rtc={tmp_path / 's1.png'}", "--generate", "dem",
              "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "dem.png").exists() and not (tmp_path / "o" / "s2_l2a.png").exists()
    Image.fromarray(img[..., 0]).save(tmp_path / "grey.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    for cond, message in [(f"s1_rtc={tmp_path / 'grey.png'}", "greyscale"),
                          (f"s1_rtc={tmp_path / 'broken.png'}", "not a readable image"),
                          (f"sentinel3={tmp_path / 's1.png'}", "unknown modality")]:
        r = _cli([*base, "--cond", cond, "--out", str(tmp_path / "x")])
        assert r.exit_code == 3 and message in r.output, r.output
        assert len([ln for ln in r.output.splitlines() if ln.startswith("copgen-rt: error")]) == 1
