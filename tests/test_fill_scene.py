"""Gap filling of whole scenes (`copgen-rt fill`, `SceneOptions(fill=...)`): valid pixels kept bit
for bit, gaps generated, no seam at tile borders, copied and fully masked tiles, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from product_fixtures import make_safe, native_bands, stacked_chip
from scene_helpers import CHIPS, EchoPipeline, smooth_s2, write_raster

from copgen_rt import Pipeline, specs
from copgen_rt.cli import main
from copgen_rt.demo import default_scene, demo_weights
from copgen_rt.scenes.encoding import StoredType
from copgen_rt.scenes.fill import FillOptions
from copgen_rt.scenes.inputs.open import open_input
from copgen_rt.scenes.job import SceneJob, SceneOptions
from copgen_rt.scenes.reader import ModalityReader
from copgen_rt.scenes.run import run_scene

DEMO = specs.get("copgen-demo")
S1 = CHIPS / "S1RTC_433D_629L_3_1.tif"
TEN_M = "S2L2A_B02_B03_B04_B08"
TEN_M_FILE = "S2L2A_B04_B03_B02_B08"  # its files: the bands in stored order


class RecordingEcho(EchoPipeline):
    """EchoPipeline that records what each call knew."""

    def __init__(self):
        super().__init__()
        self.known: list[dict] = []

    def generate(self, generate, conditions, known=None, **kwargs):
        self.known.append({k: (v.numpy().copy(), m.numpy().copy()) for k, (v, m) in (known or {}).items()})
        self.jumps = (kwargs["jumps"], kwargs["jump_length"], kwargs["solver"])
        return super().generate(generate, conditions, **kwargs)


@pytest.fixture(scope="module")
def demo():
    return Pipeline.from_pretrained(DEMO, demo_weights())


def _mask_like(path, scene, gap: np.ndarray, **kw):
    with rasterio.open(scene) as src:
        return write_raster(path, gap.astype(np.uint8)[None], crs=src.crs, transform=src.transform, **kw)


def _fill_job(tmp_path, scene, fill: FillOptions, conds=(), out="out", **options):
    inputs = [open_input(scene)] + [open_input(c, product="S1RTC") for c in conds]
    return SceneJob(DEMO, inputs, tmp_path / out, SceneOptions(**{"steps": 2, "fill": fill, **options}))


def _native(scene, name: str) -> np.ndarray:
    """The scene's values of a modality on its native grid, as the outputs store them."""
    s = open_input(scene)
    from copgen_rt.scenes.reader import SceneFrame

    reader = ModalityReader(s, DEMO.modality(name), SceneFrame.of(s))
    try:
        return reader.read(0, 0, reader.width, reader.height)[0]
    finally:
        reader.close()


def _read(result, suffix: str) -> np.ndarray:
    (path,) = [p for p in result.outputs if p.name.endswith(suffix)]
    with rasterio.open(path) as src:
        return src.read()


def test_real_chip_valid_pixels_kept_bit_for_bit_and_gap_generated(tmp_path, demo):
    """The bundled chip with a synthetic cloud, S1 as a condition, the demo model: every target
    keeps its valid pixels exactly (on its own grid), the gap is generated and finite, and the
    `generated` raster says which pixels are which; tiles without a gap pixel are copied."""
    chip = default_scene()
    y, x = np.mgrid[0:224, 0:224]
    cloud = (y - 90) ** 2 + (x - 120) ** 2 < 50**2
    mask = _mask_like(tmp_path / "clouds.tif", chip, cloud)
    job = _fill_job(tmp_path, chip, FillOptions(mask=mask), conds=[S1], batch_size=4)
    assert job.filled == sorted(job.filled) and len(job.filled) == 3 and "S1RTC_vh_vv" in job.conditions
    result = run_scene(job, demo)
    assert result.copied == 7  # 7 of the 9 Earth-anchored tiles hold no cloud pixel
    for name in job.filled:
        label = job.spec.modality(name).file_label  # the bands in stored order
        filled = _read(result, f"_filled_{label}.tif")
        generated = _read(result, f"_filled_{label}_generated.tif")[0]
        gap = generated == 1
        assert set(np.unique(generated)) == {0, 1} and gap.any()
        assert np.array_equal(filled[:, ~gap], _native(chip, name)[:, ~gap])  # bit for bit
        assert np.isfinite(filled[:, gap]).all()
        if name == TEN_M:
            assert np.array_equal(gap, cloud)
        assert result.generated_pixels[name] == gap.sum()
    record = json.loads(job.sidecar.read_text())
    assert sorted(t["fill"] for t in record["tiles"].values()) == ["copied"] * 7 + ["filled"] * 2
    assert "clouds.tif" in record["COPGEN_FILL"]


def test_no_seam_at_tile_borders_and_a_feathered_edge(tmp_path):
    """Every tile generates its own constant: across tile borders inside a gap the blend ramps
    (no step); at the gap's edge the feather carries the input into the fill."""
    data = smooth_s2(400, 400)
    scene = write_raster(tmp_path / "scene.tif", data)
    gap = np.zeros((400, 400), bool)
    gap[:, 100:300] = True  # a band of cloud across every tile border
    mask = _mask_like(tmp_path / "mask.tif", scene, gap)
    job = _fill_job(tmp_path, scene, FillOptions(mask=mask, feather=3), overlap_m=480.0)
    result = run_scene(job, EchoPipeline())
    filled = _read(result, f"_filled_{TEN_M_FILE}.tif")[0].astype(np.float64)
    original = data[3].astype(np.float64)  # B04, the first band of the 10 m modality
    assert np.array_equal(filled[~gap], original[~gap])
    inside = filled[:, 104:296]  # beyond the seam: the blended tile constants alone
    spread = inside.max() - inside.min()
    assert len(np.unique(np.round(inside, 3))) > 4 and spread > 0
    steps = max(np.abs(np.diff(inside, axis=0)).max(), np.abs(np.diff(inside, axis=1)).max())
    assert steps < spread * 3.0 / 48  # a step would be ~ the whole spread
    # the feather: the first gap column is closer to the input than the generated value is
    edge, deep = np.abs(filled[:, 100] - original[:, 99]), np.abs(filled[:, 104] - original[:, 99])
    assert (edge < deep).mean() > 0.9


def test_fully_masked_tile_is_generated_from_the_other_conditions(tmp_path):
    data = smooth_s2(400, 190)  # one column of tiles
    scene = write_raster(tmp_path / "scene.tif", data)
    s1 = write_raster(tmp_path / "s1.tif", np.full((2, 400, 190), -12.0, np.float32),
                      descriptions=["VV", "VH"])
    gap = np.zeros((400, 190), bool)
    gap[:230] = True  # covers the first row of tiles (192 px) whole, and part of the second
    mask = _mask_like(tmp_path / "mask.tif", scene, gap)
    echo = RecordingEcho()
    job = _fill_job(tmp_path, scene, FillOptions(mask=mask, jumps=3, jump_length=2), conds=[s1], batch_size=1,
                    solver="ddim", tiling="scene")  # tiles from the scene's corner: the first row is all gap
    result = run_scene(job, echo)
    record = json.loads(job.sidecar.read_text())["tiles"]
    assert record["r0000c0000"]["fill"] == "generated" and record["r0001c0000"]["fill"] == "filled"
    assert echo.known[0] == {}  # nothing valid in the first tile: the other conditions alone
    assert echo.jumps == (3, 2, "ddim")  # the last call, with a known region: RePaint resampling
    assert TEN_M in echo.known[1] and not echo.known[1][TEN_M][1][0, :38].any()  # rows 156-193: masked
    filled = _read(result, f"_filled_{TEN_M_FILE}.tif")
    assert np.isfinite(filled).all() and np.array_equal(filled[0, 230:], data[3, 230:].astype(np.float32))


def test_empty_mask_gives_the_input_without_generating(tmp_path):
    data = smooth_s2(300, 300)
    scene = write_raster(tmp_path / "scene.tif", data)
    mask = _mask_like(tmp_path / "mask.tif", scene, np.zeros((300, 300), bool))
    echo = EchoPipeline()
    result = run_scene(_fill_job(tmp_path, scene, FillOptions(mask=mask)), echo)
    assert echo.calls == 0 and result.copied == result.tiles == 9  # 3 x 3 Earth-anchored tiles
    assert not any(result.generated_pixels.values())
    assert np.array_equal(_read(result, f"_filled_{TEN_M_FILE}.tif"), data[[3, 2, 1, 7]].astype(np.float32))
    assert not _read(result, f"_filled_{TEN_M_FILE}_generated.tif").any()


def test_nodata_is_filled_and_std_only_inside_the_gap(tmp_path):
    data = smooth_s2(260, 260)
    data[:, 50:120, 80:200] = -9999
    scene = write_raster(tmp_path / "scene.tif", data, nodata=-9999)
    s1 = write_raster(tmp_path / "s1.tif", np.full((2, 260, 260), -12.0, np.float32),
                      descriptions=["VV", "VH"])
    result = run_scene(_fill_job(tmp_path, scene, FillOptions(), conds=[s1], samples=2), EchoPipeline())
    hole = np.zeros((260, 260), bool)
    hole[50:120, 80:200] = True
    assert np.array_equal(_read(result, f"_filled_{TEN_M_FILE}_generated.tif")[0] == 1, hole)
    filled, std = _read(result, f"_filled_{TEN_M_FILE}.tif"), _read(result, f"_filled_{TEN_M_FILE}_std.tif")
    assert np.isfinite(filled).all() and np.array_equal(filled[:, ~hole], data[[3, 2, 1, 7]][:, ~hole])
    assert np.isnan(std[:, ~hole]).all() and np.isfinite(std[:, hole]).all()


def test_filled_outputs_keep_the_input_integer_type_where_the_values_fit(tmp_path):
    """A uint16 scene (BOA_ADD_OFFSET 0: its DNs sit 1000 below the model's) with no declared
    nodata: the 10 m output, on its input's grid, is uint16 in the input's own DNs, with S2's
    nodata 0 and the scale and offset that make it reflectance; the 20 m and 60 m outputs hold
    averages of the 10 m input, which do not fit it, and stay float32."""
    data = (smooth_s2(260, 260) - 400).astype(np.uint16)
    scene = write_raster(tmp_path / "scene.tif", data, tags={"BOA_ADD_OFFSET": "0"})
    gap = np.zeros((260, 260), bool)
    gap[100:160, 40:200] = True
    mask = _mask_like(tmp_path / "mask.tif", scene, gap)
    job = _fill_job(tmp_path, scene, FillOptions(mask=mask))
    result = run_scene(job, EchoPipeline())
    (path,) = [p for p in result.outputs if p.name.endswith(f"_filled_{TEN_M_FILE}.tif")]
    with rasterio.open(path) as src:
        filled = src.read()
        assert src.dtypes == ("uint16",) * 4 and src.nodata == 0
        assert src.scales == (1e-4,) * 4 and src.offsets == (0.0,) * 4  # reflectance = DN / 10000
    assert np.array_equal(filled[:, ~gap], data[[3, 2, 1, 7]][:, ~gap])  # the input's own DNs
    assert (filled[:, gap] > 0).all()
    for name in ("S2L2A_B05_B06_B07_B11_B12_B8A", "S2L2A_B01_B09"):
        label = job.spec.modality(name).file_label
        assert _read(result, f"_filled_{label}.tif").dtype == np.float32
    item = json.loads(job.stac_item.read_text())
    band = item["assets"][path.stem]["bands"][0]
    assert (band["data_type"], band["nodata"], band["raster:offset"]) == ("uint16", 0, 0.0)


def test_a_filled_safe_is_its_own_uint16_dns_on_every_native_grid(tmp_path):
    """A SAFE of an old baseline (uint16 JP2s at 10, 20 and 60 m, DNs 1000 below the model's, no
    offset in the MTD): every filled S2 output is uint16 in the product's own DNs on its own grid,
    scaled to reflectance as the product says (DN / 10000)."""
    stacked = stacked_chip(tmp_path)
    safe = make_safe(tmp_path, stacked, baseline="02.14")
    gap = np.zeros((224, 224), bool)
    gap[60:130, 90:170] = True
    mask = _mask_like(tmp_path / "mask.tif", stacked, gap)
    job = _fill_job(tmp_path, safe, FillOptions(mask=mask))
    result = run_scene(job, EchoPipeline())
    bands, _, _ = native_bands(stacked, "S2L2A")
    for name in job.filled:
        m = job.spec.modality(name)
        (path,) = [p for p in result.outputs if p.name.endswith(f"_filled_{m.file_label}.tif")]
        kept = _read(result, f"_filled_{m.file_label}_generated.tif")[0] == 0
        with rasterio.open(path) as src:
            filled = src.read()
            assert set(src.dtypes) == {"uint16"} and src.nodata == 0 and set(src.offsets) == {0.0}, name
            order = [d.split()[0] for d in src.descriptions]  # stored band order
        product_dns = np.stack([bands[b].astype(np.int32) - 1000 for b in order])
        assert kept.any() and np.array_equal(filled[:, kept], product_dns[:, kept]), name


def test_stored_type_rounds_clips_and_keeps_off_the_nodata_code():
    uint16 = StoredType("uint16", 0, shift=1000.0)
    stored, met = uint16.store(np.array([np.nan, 500.0, 1000.0, 67000.0, 1234.6]))
    assert stored.dtype == np.uint16 and stored.tolist() == [0, 1, 1, 65535, 235] and met == 2
    int16 = StoredType("int16", -9999)
    stored, met = int16.store(np.array([-9999.2, 5.4, -40000.0, np.inf]))
    assert stored.tolist() == [-9998, 5, -32768, -9999] and met == 1


def test_scl_mask_on_another_grid_is_resampled(tmp_path):
    """A 20 m SCL band: its cloud classes become gaps on every target grid (nearest on the finer
    grid), other classes do not."""
    data = smooth_s2(240, 240)
    scene = write_raster(tmp_path / "scene.tif", data)
    scl = np.full((120, 120), 4, np.uint8)  # vegetation
    scl[10:40, 20:60] = 9  # cloud high probability
    scl[80:100, 80:100] = 11  # snow: not a gap by default
    scl_path = write_raster(tmp_path / "scl.tif", scl[None], transform=Affine(20, 0, 500000, 0, -20, 5200000))
    result = run_scene(_fill_job(tmp_path, scene, FillOptions(scl=scl_path)), EchoPipeline())
    expected = np.zeros((240, 240), bool)
    expected[20:80, 40:120] = True
    assert np.array_equal(_read(result, f"_filled_{TEN_M_FILE}_generated.tif")[0] == 1, expected)


def test_bad_fill_input_is_one_line(tmp_path):
    chip = default_scene()
    far = write_raster(tmp_path / "far.tif", np.ones((1, 50, 50), np.uint8))  # EPSG:32633, elsewhere
    ones = _mask_like(tmp_path / "all.tif", chip, np.ones((224, 224), bool))
    runner = CliRunner()
    cases = {
        "does not overlap": ["fill", chip, "--mask", str(far)],
        "nothing to fill from": ["fill", chip, "--mask", str(ones)],
        "say what to fill": ["fill", chip],
        "drop --generate": ["fill", chip, "--nodata", "--generate", "DEM"],
        "at most 3 px": ["fill", chip, "--nodata", "--feather", "4"],
        "SCL classes": ["fill", chip, "--scl", str(ones), "--scl-classes", "3,12"],
        "needs a singlestep solver": ["fill", chip, "--nodata", "--jumps", "2", "--preset", "fast"],
    }
    for expected, args in cases.items():
        result = runner.invoke(main, [*args, "--out", str(tmp_path / "out")])
        assert result.exit_code == 3, (expected, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (expected, result.output)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_cli_fill_rerun_and_infer_side_by_side(tmp_path):
    """`fill` writes its own files (a `_filled` stem) next to an `infer` of the same scene, and a
    rerun with the same settings finds its outputs complete."""
    chip = default_scene()
    mask = _mask_like(tmp_path / "clouds.tif", chip, np.pad(np.ones((40, 40), bool), ((20, 164), (20, 164))))
    out = str(tmp_path / "out")
    args = ["fill", chip, "--mask", str(mask), "--steps", "1", "--out", out, "--quiet"]
    runner = CliRunner()
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    assert any(p.endswith("_filled_S2L2A_B04_B03_B02_B08_generated.tif") for p in first.output.split())
    again = runner.invoke(main, args[:-1])
    assert again.exit_code == 0 and "already complete" in again.output
    infer = runner.invoke(main, ["infer", chip, "--steps", "1", "--generate", "DEM", "--out", out, "-q"])
    assert infer.exit_code == 0, infer.output


def test_cli_says_when_nothing_or_everything_is_a_gap(tmp_path):
    chip = default_scene()
    runner = CliRunner()
    notes, summaries = {}, {}
    for name, gap in [("none", np.zeros((224, 224), bool)), ("all", np.ones((224, 224), bool))]:
        mask = _mask_like(tmp_path / f"{name}.tif", chip, gap)
        result = runner.invoke(main, ["fill", chip, "--mask", str(mask), "--cond", f"S1RTC={S1}",
                                      "--steps", "1", "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        notes[name] = [line for line in result.output.splitlines() if line.startswith("note:")]
        summaries[name] = next(line for line in result.output.splitlines() if " tiles in " in line)
    # the tile counts agree with the note (it once said "0 copied, no gap" beside 100% generated)
    # 3 x 3 Earth-anchored tiles touch the chip
    assert "(0 with gaps, generated; 9 without, copied)" in summaries["none"], summaries
    assert "(9 with gaps, generated; 0 without, copied)" in summaries["all"], summaries
    assert "S2L2A_B02_B03_B04_B08 100.00%" in summaries["all"], summaries
    assert notes["none"] == ["note: no pixel of the scene is a gap: the outputs are the input"]
    assert notes["all"] == ["note: every pixel of the scene is a gap: generated from the other inputs alone"]
