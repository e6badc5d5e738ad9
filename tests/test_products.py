"""Real Sentinel product forms in (SAFE folder / zip, per-band files, STAC Items): the same scene
through each form gives the same pixels as the stacked GeoTIFF, bad products are one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from product_fixtures import make_band_folder, make_condition_items, make_safe, make_stac_item, stacked_chip

from copgen_rt.cli import main
from copgen_rt.scenes.inputs.open import open_input

RUN = ["--steps", "1", "--dtype", "fp32", "--backend", "torch", "--generate", "S1RTC,LULC", "-q",
       "--date", "2021-06-15",
       "--tiling", "scene"]  # tiles from the corner: 4 on the chip, not 9 (tiling is not tested here)


def _infer(scene: str, out: Path, *extra: str) -> dict[str, np.ndarray]:
    r = CliRunner().invoke(main, ["infer", scene, "--out", str(out), *RUN, *extra])
    assert r.exit_code == 0, r.output
    pixels = {}
    for path in sorted(out.glob("*.tif")):  # SCENE-STEM_MODALITY.tif
        with rasterio.open(path) as src:
            name = next(path.name[path.name.index(m):] for m in ("S1RTC_", "LULC_") if m in path.name)
            pixels[name] = src.read()
    return pixels


@pytest.fixture(scope="module")
def forms(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("forms")
    stacked = stacked_chip(tmp)
    bands = make_band_folder(tmp, stacked)
    return {
        "stacked": str(stacked),
        "SAFE 05.09": str(make_safe(tmp, stacked)),
        "SAFE 02.14 (no offset)": str(make_safe(tmp, stacked, baseline="02.14")),
        "SAFE zip": str(make_safe(tmp, stacked, as_zip=True)),
        "band folder": str(bands),
        "band list, any order": ",".join(str(p) for p in sorted(bands.glob("*.tif"), reverse=True)),
        "STAC relative hrefs": str(make_stac_item(tmp, bands)),
        "STAC file:// hrefs": str(make_stac_item(tmp, bands, file_urls=True)),
    }


def test_every_input_form_gives_the_stacked_outputs_bit_for_bit(forms, tmp_path):
    """infer end to end: the SAFE (both baselines, folder and zip), per-band files and STAC forms
    read every band from its own file on its native grid and give the stacked run's pixels."""
    reference = (_infer(forms["stacked"], tmp_path / "stacked"))
    assert set(reference) == {"S1RTC_VV_VH.tif", "LULC_LULC.tif"}
    for i, (form, scene) in enumerate(forms.items()):
        if form == "stacked":
            continue
        found = (_infer(scene, tmp_path / f"form{i}"))
        assert set(found) == set(reference), form
        for name, values in reference.items():
            assert np.array_equal(found[name], values, equal_nan=True), f"{form}: {name} differs"


def test_products_are_read_from_their_own_files_at_native_resolution(forms):
    safe = open_input(forms["SAFE 05.09"])
    files = {b: Path(h).name for b, h, _ in safe.sources}
    assert files["B05"].endswith("_B05_20m.jp2") and files["B01"].endswith("_B01_60m.jp2")
    assert files["B02"].endswith("_B02_10m.jp2")  # not the 20 m copy the MTD also lists
    assert safe.transform.a == 10 and safe.baseline == "05.09" and safe.dn_offset == 0
    old = open_input(forms["SAFE 02.14 (no offset)"])
    assert old.dn_offset == 1000 and "shifted by +1000" in old.dn_convention
    listed = open_input(forms["band list, any order"])
    assert listed.bands == open_input(forms["stacked"]).bands  # names, not file order


def _bad_input_cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    stacked = stacked_chip(tmp)
    no_mtd = make_safe(tmp, stacked, baseline="04.00", with_mtd=False)
    bands = make_band_folder(tmp, stacked)
    two = tmp / "two-products"
    two.mkdir()
    for f in list(bands.glob("B0[2-4].tif")):
        (two / f"S2A_20210615_{f.name}").write_bytes(f.read_bytes())
        (two / f"S2B_20210620_{f.name}").write_bytes(f.read_bytes())
    l1c_old = make_safe(tmp, stacked_chip(tmp, "S2L1C"), "S2L1C", baseline="03.01")
    return {
        "SAFE without MTD": ([str(no_mtd)], "without its MTD_MSIL1C.xml / MTD_MSIL2A.xml"),
        "STAC missing band": (
            [str(make_stac_item(tmp, bands, drop="B05"))],
            "no asset for band(s) B05 of S2L2A",
        ),
        "STAC unreachable": (
            [str(make_stac_item(tmp, bands, href_of={"B02": "http://127.0.0.1:9/B02.tif"}))],
            "asset http://127.0.0.1:9/B02.tif cannot be read",
        ),
        "mixed baselines": (
            [str(make_safe(tmp, stacked)), "--cond", f"S2L1C={l1c_old}"],
            "mixed S2 processing baselines",
        ),
        "two products in one folder": ([str(two)], "band B02 is given twice"),
    }


def test_bad_products_are_one_line_exit_3_and_nothing_written(tmp_path):
    for case, (args, message) in _bad_input_cases(tmp_path).items():
        out = tmp_path / f"out-{case.replace(' ', '-')}"
        r = CliRunner().invoke(main, ["infer", *args, "--out", str(out), *RUN])
        assert r.exit_code == 3, (case, r.output)
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("copgen-rt: error: ") and message in lines[0], (
            case,
            r.output,
        )
        assert not out.exists() or not any(out.iterdir()), case


def test_stac_items_as_conditions_match_the_stacked_chips(forms, tmp_path):
    """--cond S1RTC=item.json (VV and VH assets by key) and --cond DEM=item.json (one data asset)."""
    items = make_condition_items(tmp_path)
    chips = [a for p, (chip, _) in items.items() for a in ("--cond", f"{p}={chip}")]
    stac = [a for p, (_, item) in items.items() for a in ("--cond", f"{p}={item}")]
    reference = _infer(forms["stacked"], tmp_path / "chips", *chips, "--generate", "LULC")
    assert np.array_equal(
        _infer(forms["stacked"], tmp_path / "stac", *stac, "--generate", "LULC")["LULC_LULC.tif"],
        reference["LULC_LULC.tif"],
    )


def test_an_l1c_safe_of_an_old_baseline_gives_the_stacked_l1c_outputs(tmp_path):
    """L1C: RADIO_ADD_OFFSET absent (baseline 03.01, DNs without +1000) -> shifted by +1000."""
    stacked = stacked_chip(tmp_path, "S2L1C")
    safe = make_safe(tmp_path, stacked, "S2L1C", baseline="03.01")
    assert open_input(safe).dn_offset == 1000
    reference = _infer(str(stacked), tmp_path / "stacked", "--generate", "LULC")
    assert np.array_equal(
        _infer(str(safe), tmp_path / "safe", "--generate", "LULC")["LULC_LULC.tif"],
        reference["LULC_LULC.tif"],
    )


def test_a_low_dem_as_per_band_files_is_not_taken_for_s2_values(tmp_path):
    """Only S2 values are checked against digital numbers: a 0-100 m DEM is no picture."""
    import warnings

    from copgen_rt.scenes.inputs.scene_input import ImplausibleDNWarning
    from copgen_rt.scenes.synthetic import write_raster

    folder = tmp_path / "dem"
    folder.mkdir()
    write_raster(folder / "DEM.tif", np.linspace(0, 100, 64 * 64, dtype=np.float32).reshape(1, 64, 64))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImplausibleDNWarning)
        scene = open_input(str(folder))
    assert scene.product == "DEM"


@pytest.mark.parametrize("form", ["band folder", "STAC Item"])
def test_a_many_scene_rerun_notices_a_band_file_rewritten_in_place(form, tmp_path):
    """One run identity for single and many scenes: every file of every input form is in it, so a
    band rewritten in place is run again, and the scene whose files did not change is skipped."""
    import shutil

    stacked = stacked_chip(tmp_path)
    bands = make_band_folder(tmp_path, stacked)
    folders = [shutil.copytree(bands, tmp_path / name) for name in ("bands-a", "bands-b")]
    if form == "band folder":
        scenes = [str(f) for f in folders]
    else:  # Items named apart: a scene's outputs are named by its file's stem
        scenes = [str(make_stac_item(tmp_path, f).rename(tmp_path / "stac" / f"{f.name}.json"))
                  for f in folders]

    def run(*extra: str, code: int = 0) -> str:
        r = CliRunner().invoke(main, ["infer", *scenes, "--out", str(tmp_path / "out"), *RUN, *extra])
        assert r.exit_code == code, r.output
        return r.output

    assert "2 succeeded, 0 skipped" in run()
    assert "0 succeeded, 2 skipped" in run()
    band = folders[0] / "B04.tif"
    with rasterio.open(band, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as f:  # in place: same name, other values
        f.write(f.read() + 1)
    # as a single-scene run: outputs of other inputs are not replaced without --overwrite ...
    changed = run(code=8)
    assert "0 succeeded, 1 skipped (already complete), 1 failed" in changed
    assert "bands-a_LULC_LULC.tif exists; pass --overwrite" in changed
    # ... and with it, only the changed scene runs again (complete scenes are skipped regardless)
    assert "1 succeeded, 1 skipped" in run("--overwrite")
