from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from scene_helpers import CHIPS, EchoPipeline, interrupt_after_tiles, smooth_s2, write_raster

from copgen_rt import Pipeline, processing, specs
from copgen_rt.cli import main
from copgen_rt.demo import default_scene, demo_weights
from copgen_rt.errors import OutputExistsError, SceneError
from copgen_rt.scenes import job as scene_job
from copgen_rt.scenes.inputs.open import open_input
from copgen_rt.scenes.job import SceneJob, SceneOptions
from copgen_rt.scenes.reader import CoarseInputWarning
from copgen_rt.scenes.run import run_scene
from copgen_rt.scenes.tile_inputs import TileReader
from copgen_rt.scenes.tiling import blend_ramp

DEMO = specs.get("copgen-demo")


@pytest.fixture(scope="module")
def demo():
    return Pipeline.from_pretrained(DEMO, demo_weights())


def _job(tmp_path, inputs, **options):
    return SceneJob(DEMO, [open_input(p) for p in inputs], tmp_path / "out",
                    SceneOptions(**{"steps": 2, **options}))


def test_recognition_of_the_real_chips():
    s2 = open_input(default_scene())
    assert s2.product == "S2L2A" and s2.bands[8] == "B8A" and len(s2.bands) == 12
    assert open_input(CHIPS / "S2L1C_433D_629L_3_1.tif").product == "S2L1C"
    s1 = open_input(CHIPS / "S1RTC_433D_629L_3_1.tif")
    assert (s1.product, s1.units) == ("S1RTC", "db") and s1.date is not None
    assert open_input(CHIPS / "DEM_433D_629L_3_1.tif").product == "DEM"
    lulc = open_input(CHIPS / "LULC_433D_629L_3_1.tif")
    assert (lulc.product, lulc.units) == ("LULC", "index")


def test_real_chip_end_to_end_georeferenced(tmp_path, demo):
    inputs = [default_scene(), CHIPS / "S1RTC_433D_629L_3_1.tif"]
    job = SceneJob(DEMO, [open_input(inputs[0]), open_input(inputs[1], product="S1RTC")],
                   tmp_path / "out", SceneOptions(steps=2, generate=("DEM_DEM", "LULC_LULC",
                                                                     "S2L1C_B05_B06_B07_B11_B12_B8A")))
    assert "mean_timestamps" in job.scalar_conditions  # date from the S1 metadata
    result = run_scene(job, demo)
    with rasterio.open(default_scene()) as src:
        crs, transform = src.crs, src.transform
    names = {p.name: p for p in result.outputs}
    with rasterio.open(names["S2L2A_433D_629L_3_1_LULC_LULC.tif"]) as lulc:
        assert lulc.crs == crs and lulc.transform == transform and (lulc.width, lulc.height) == (224, 224)
        assert lulc.dtypes[0] == "uint8" and lulc.nodata == 255
        assert set(np.unique(lulc.read(1))) <= {0, 1, 2, 4, 5, 7, 8, 9, 10, 11}
        tags = lulc.tags()
        assert tags["COPGEN_RANDOM_WEIGHTS"] == "true"
        assert "RANDOM WEIGHTS" in tags["TIFFTAG_IMAGEDESCRIPTION"]
        assert tags["COPGEN_MODEL"] == "copgen-demo" and tags["COPGEN_STEPS"] == "2"
        assert "S1RTC_vh_vv<-S1RTC_433D_629L_3_1.tif" in tags["COPGEN_CONDITIONS"]
        assert lulc.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    with rasterio.open(names["S2L2A_433D_629L_3_1_S2L1C_B05_B06_B07_B8A_B11_B12.tif"]) as s2:
        assert s2.transform == Affine(20, 0, transform.c, 0, -20, transform.f)
        assert s2.descriptions == ("B05", "B06", "B07", "B8A", "B11", "B12")
        assert s2.dtypes[0] == "float32" and np.isnan(s2.nodata)
    with rasterio.open(names["S2L2A_433D_629L_3_1_DEM_DEM.tif"]) as dem:
        assert dem.res == (30, 30) and dem.units == ("m",) and (dem.read(1) > 0).all()


def test_tiling_and_blending_reproduce_the_input_exactly(tmp_path):
    """Odd size, several km: an echoing pipeline must give back the input, pixel for pixel."""
    data = smooth_s2(517, 389)
    path = write_raster(tmp_path / "scene.tif", data)
    job = _job(tmp_path, [path], generate=("S2L1C_B02_B03_B04_B08", "S2L1C_B05_B06_B07_B11_B12_B8A"),
               batch_size=3)
    assert job.plan.n_rows == 4 and job.plan.n_cols == 3
    result = run_scene(job, EchoPipeline())
    with rasterio.open(result.outputs[0]) as out:
        assert out.shape == (517, 389)
        echoed = out.read()
    expected = data[[3, 2, 1, 7]].astype(np.float32)  # B04 B03 B02 B08
    assert np.abs(echoed - expected).max() < 0.05
    with rasterio.open(result.outputs[1]) as out20:  # 20 m: the average of 2x2 blocks of the input
        assert out20.shape == (259, 195)
        b05 = out20.read(1)
    ref = data[4, :516, :388].astype(np.float64).reshape(258, 2, 194, 2).mean(axis=(1, 3))
    assert np.abs(b05[:258, :194] - ref).max() < 0.05


def test_no_seams_between_disagreeing_tiles(tmp_path):
    path = write_raster(tmp_path / "scene.tif", smooth_s2(400, 400))
    job = _job(tmp_path, [path], generate=("DEM_DEM",), overlap_m=480.0)
    result = run_scene(job, EchoPipeline())
    with rasterio.open(result.outputs[0]) as out:
        dem = out.read(1).astype(np.float64)
    # each tile outputs its own constant; blending must ramp between them, never step
    levels = np.unique(np.round(dem, 3))
    assert len(levels) > 4
    jumps = max(np.abs(np.diff(dem, axis=0)).max(), np.abs(np.diff(dem, axis=1)).max())
    spread = dem.max() - dem.min()
    overlap_px = 480 // 30
    assert jumps < spread * 3.0 / overlap_px  # a step would be ~ the whole spread
    ramp = blend_ramp(64, overlap_px)
    assert ramp.min() > 0 and ramp[overlap_px: 64 - overlap_px].min() == 1.0


def test_nodata_holes_and_another_crs(tmp_path, demo):
    data = smooth_s2(300, 260)
    data[:, 100:180, 60:200] = -9999
    transform = Affine(10, 0, 4321000, 0, -10, 3210000)
    path = write_raster(tmp_path / "laea.tif", data, crs="EPSG:3035", transform=transform, nodata=-9999)
    job = _job(tmp_path, [path], generate=("S1RTC_vh_vv",))
    result = run_scene(job, demo)
    with rasterio.open(result.outputs[0]) as out:
        assert out.crs.to_epsg() == 3035 and out.transform == transform
        s1 = out.read(1)
    hole = np.zeros((300, 260), bool)
    hole[100:180, 60:200] = True
    assert np.isnan(s1[hole]).all() and np.isfinite(s1[~hole]).all()


def test_determinism_across_batch_sizes(tmp_path, demo):
    path = write_raster(tmp_path / "scene.tif", smooth_s2(250, 250))
    outs = []
    for batch in (1, 3):
        job = SceneJob(DEMO, [open_input(path)], tmp_path / f"b{batch}",
                       SceneOptions(steps=2, batch_size=batch, generate=("DEM_DEM",)))
        with rasterio.open(run_scene(job, demo).outputs[0]) as out:
            outs.append(out.read())
    assert np.allclose(outs[0], outs[1], rtol=1e-4, atol=1e-3)


def test_interrupted_run_resumes_without_recomputing(tmp_path, demo):
    path = write_raster(tmp_path / "scene.tif", smooth_s2(400, 300))
    make = lambda out: SceneJob(DEMO, [open_input(path)], out,  # noqa: E731
                                SceneOptions(steps=2, batch_size=2, generate=("DEM_DEM",)))
    job = make(tmp_path / "out")
    stop_after_two_batches = interrupt_after_tiles(4)  # batches of 2: the first two are saved

    with pytest.raises(KeyboardInterrupt):
        run_scene(job, demo, progress=stop_after_two_batches)
    assert not any(p.path.exists() for p in job.outputs)  # nothing half-written under a final name
    assert len(list(job.work_dir.glob("latents/*.safetensors"))) == 4
    resumed = run_scene(job, demo)
    assert resumed.resumed == 4 and resumed.tiles == 12  # 4 x 3 Earth-anchored tiles touch the scene
    fresh = run_scene(make(tmp_path / "fresh"), demo)
    with rasterio.open(resumed.outputs[0]) as a, rasterio.open(fresh.outputs[0]) as b:
        assert np.array_equal(a.read(), b.read())
    assert not job.work_dir.exists()


def test_outputs_of_the_same_run_are_rewritten_others_are_kept(tmp_path, demo):
    """A run killed while publishing leaves some outputs: the rerun writes the rest (and those
    again, identically) without --overwrite; files it did not make, or made with other settings,
    are never replaced."""
    path = write_raster(tmp_path / "scene.tif", smooth_s2(250, 250))
    make = lambda seed: SceneJob(DEMO, [open_input(path)], tmp_path / "out",  # noqa: E731
                                 SceneOptions(steps=1, seed=seed, generate=("DEM_DEM", "S1RTC_vh_vv")))
    first = run_scene(make(0), demo)
    dem, s1 = (p for p in first.outputs if p.suffix == ".tif")
    with rasterio.open(dem) as src:
        before = src.read()
    s1.unlink()  # as if the kill came between the two renames
    again = run_scene(make(0), demo)
    assert s1.exists() and sorted(again.outputs) == sorted(first.outputs)
    with rasterio.open(dem) as src:
        assert np.array_equal(src.read(), before)
    with pytest.raises(OutputExistsError):  # other settings: the user's earlier results stay
        run_scene(make(1), demo)
    write_raster(s1, smooth_s2(10, 10)[:2])  # a GeoTIFF of someone else's at that name
    with pytest.raises(OutputExistsError, match="S1RTC_VV_VH.tif exists"):
        run_scene(make(0), demo)


def test_run_manifests_of_concurrent_runs_merge(tmp_path):
    from copgen_rt.runs.record import RunManifest

    path = tmp_path / "copgen-run.json"
    a, b = RunManifest(path), RunManifest(path)
    a.record("scene-a", {"status": "done"})
    b.record("scene-b", {"status": "done"})
    a.save()
    b.save()
    assert set(RunManifest(path).scenes) == {"scene-a", "scene-b"}


def test_memory_is_bounded_by_width_not_area(tmp_path):
    small = write_raster(tmp_path / "small.tif", smooth_s2(400, 300))
    tall = write_raster(tmp_path / "tall.tif", smooth_s2(1600, 300))
    peaks = []
    for path in (small, tall):
        job = SceneJob(DEMO, [open_input(path)], tmp_path / path.stem,
                       SceneOptions(steps=1, generate=("S2L1C_B02_B03_B04_B08",)))
        peaks.append(run_scene(job, EchoPipeline()).peak_buffer_rows)
    assert max(peaks) <= 192 + 156  # a tile and a stride (where the rows fall depends on the lattice)


def test_samples_write_mean_and_std(tmp_path, demo):
    job = _job(tmp_path, [default_scene()], generate=("DEM_DEM", "S2L1C_cloud_mask"), samples=3)
    result = run_scene(job, demo)
    names = sorted(p.name for p in result.outputs)
    assert any(n.endswith("DEM_DEM_std.tif") for n in names)
    assert any(n.endswith("S2L1C_cloud_mask_confidence.tif") for n in names)
    std = next(p for p in result.outputs if p.name.endswith("DEM_DEM_std.tif"))
    with rasterio.open(std) as out:
        std_values = out.read(1)
    assert (std_values >= 0).all() and (std_values > 0).mean() > 0.9  # 0 only where all clamp
    sidecar = json.loads(next(p for p in result.outputs if p.suffix == ".json").read_text())
    assert len(sidecar["tiles"]) == 9  # 3 x 3 Earth-anchored tiles touch the chip


# --- the command line -------------------------------------------------------------------------


def _cli(args):
    return CliRunner().invoke(main, args)


def test_cli_default_job_and_refusal_to_overwrite(tmp_path):
    out = tmp_path / "o"
    r = _cli(["infer", "--out", str(out), "--steps", "2", "-q"])
    assert r.exit_code == 0, r.output
    assert "RANDOM WEIGHTS" in r.output and len(list(out.glob("*.tif"))) == 7
    stamps = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    again = _cli(["infer", "--out", str(out), "--steps", "2"])  # the same command: nothing to do
    assert again.exit_code == 0 and "already complete" in again.output, again.output
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    other = _cli(["infer", "--out", str(out), "--steps", "3", "-q"])  # other settings: refused
    assert other.exit_code == 5 and "--overwrite" in other.output
    info = _cli(["info", default_scene()])
    assert info.exit_code == 0 and "3 x 3 = 9 tiles" in info.output


@pytest.mark.parametrize("case,message", [
    ("five_bands", "5 bands: cannot tell"),
    ("no_crs", "no CRS"),
    ("complex", "unsupported data type"),
    ("all_nodata", "no valid pixel"),
    ("one_pixel", "too small"),
    ("garbage", "not a readable raster"),
    ("geographic", "not projected"),
    ("missing", "no such file"),
    ("feet", "in US survey foot, not metres"),
    ("s1_db_x100", "look like neither dB (-60 to 45) nor linear power"),
    ("truncated", "cannot read pixels (corrupt or truncated file?)"),
])
def test_bad_inputs_fail_in_one_line(tmp_path, case, message):
    path = tmp_path / f"{case}.tif"
    if case == "five_bands":
        write_raster(path, np.ones((5, 50, 50), np.int16))
    elif case == "no_crs":
        write_raster(path, np.ones((12, 50, 50), np.int16), crs=None)
    elif case == "complex":
        write_raster(path, np.ones((2, 50, 50), np.complex64))
    elif case == "all_nodata":
        write_raster(path, np.zeros((12, 50, 50), np.int16), nodata=0)
    elif case == "one_pixel":
        write_raster(path, np.ones((12, 1, 1), np.int16))
    elif case == "garbage":
        path.write_bytes(b"II*\x00 this is not a tiff")
    elif case == "geographic":
        write_raster(path, np.ones((12, 50, 50), np.int16), crs="EPSG:4326",
                     transform=Affine(0.0001, 0, 10, 0, -0.0001, 50))
    elif case == "feet":
        write_raster(path, smooth_s2(50, 50), crs="EPSG:2263", transform=Affine(10, 0, 1e6, 0, -10, 1e6))
    elif case == "s1_db_x100":  # int16 dB x 100
        write_raster(path, np.random.default_rng(0).integers(-2500, -500, (2, 50, 50)).astype(np.int16))
    elif case == "truncated":
        write_raster(path, smooth_s2(100, 100))
        path.write_bytes(path.read_bytes()[:150_000])
    r = _cli(["infer", str(path), "--out", str(tmp_path / "o"), "--steps", "1", "-q"])
    assert r.exit_code == 3, r.output
    lines = [line for line in r.output.splitlines() if line.startswith("copgen-rt: error")]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.output


def test_bad_options_fail_in_one_line(tmp_path):
    r = _cli(["infer", "--generate", "S3OLCI", "--out", str(tmp_path), "-q"])
    assert r.exit_code == 3 and "not a modality or product" in r.output
    r = _cli(["infer", "--overlap", "100", "--out", str(tmp_path), "-q"])
    assert r.exit_code == 3 and "multiple of 60" in r.output
    r = _cli(["infer", "--cond", "S1RTC", "--out", str(tmp_path), "-q"])
    assert r.exit_code == 3 and "PRODUCT=PATH" in r.output
    r = _cli(["infer", "--model", "copgen-base", "--out", str(tmp_path), "-q"])
    assert r.exit_code == 3 and "needs --weights" in r.output
    r = _cli(["infer", "--frobnicate"])
    assert r.exit_code == 2


def test_quicklooks(tmp_path, demo):
    from PIL import Image

    job = _job(tmp_path, [default_scene()], generate=("DEM_DEM", "LULC_LULC", "S1RTC_vh_vv"), quicklook=True)
    result = run_scene(job, demo)
    pngs = [p for p in result.outputs if p.suffix == ".png"]
    assert len(pngs) == 3
    for png in pngs:
        with Image.open(png) as img:
            assert img.mode == "RGB" and img.size[0] > 0
            assert img.info["COPGEN_RANDOM_WEIGHTS"] == "true"
            assert img.info["Description"].startswith("RANDOM")
            assert img.info["COPGEN_STEPS"] == str(job.options.sampler[1])
    lulc = next(p for p in pngs if "LULC" in p.name)
    colours = {tuple(c) for c in np.asarray(Image.open(lulc)).reshape(-1, 3)}
    palette = {tuple(int(h[i:i + 2], 16) for i in (1, 3, 5))
               for h in DEMO.modality("LULC_LULC").processing.colors}
    assert colours <= palette


def test_coverage_of_rasters_without_nodata_value(tmp_path):
    """Warped reads of a raster with no nodata value must still say where it does not reach."""
    from copgen_rt.scenes.reader import SceneFrame, coverage_reader

    big = open_input(write_raster(tmp_path / "big.tif", smooth_s2(300, 300)))
    dem = open_input(write_raster(tmp_path / "dem.tif", np.full((1, 40, 40), 100, np.int16),
                                  transform=Affine(30, 0, 500000, 0, -30, 5200000)))  # 1.2 km
    reader = coverage_reader(dem, SceneFrame.of(big), 10.0)
    try:
        _, valid = reader.read(0, 0, 192)
    finally:
        reader.close()
    assert valid[:120, :120].all() and not valid[120:].any() and not valid[:, 120:].any()


# --- inputs that used to give silent garbage ------------------------------------------------------


def _s1_db(height, width, seed=0):
    """2-band float32 VV, VH backscatter in dB (about -20 to -4)."""
    return ((smooth_s2(height, width, seed)[:2].astype(np.float32) - 1500) / 100 - 12)


def test_condition_that_does_not_overlap_the_scene_is_refused(tmp_path):
    with pytest.raises(SceneError, match="S2L2A_282D_485L_3_3.tif: does not overlap S1RTC_433D_629L_3_1.tif"):
        _job(tmp_path, [CHIPS / "S1RTC_433D_629L_3_1.tif", CHIPS / "S2L2A_282D_485L_3_3.tif"])


def test_tiles_without_data_of_a_condition_are_not_fed_zeros(tmp_path, demo):
    """An S2 condition covering the left 2 km of a 4.5 km S1 scene: the right tiles (from 3.12 km)
    see no S2 pixel, so they run as if S2 were not given at all, whatever the S2 holds."""
    s1 = write_raster(tmp_path / "s1.tif", _s1_db(192, 450), descriptions=["VV", "VH"])
    outputs = []
    for name, s2_seed in (("alone", None), ("s2a", 0), ("s2b", 1)):
        inputs = [open_input(s1)]
        if s2_seed is not None:
            inputs.append(open_input(write_raster(tmp_path / f"{name}.tif", smooth_s2(192, 200, s2_seed))))
        job = SceneJob(DEMO, inputs, tmp_path / name,
                       SceneOptions(steps=2, batch_size=1, generate=("DEM_DEM",)))
        result = run_scene(job, demo)
        with rasterio.open(result.outputs[0]) as out:
            outputs.append(out.read(1))
        sidecar = json.loads(job.sidecar.read_text())["tiles"]
    alone, s2a, s2b = outputs
    right = slice(3480 // 30, None)  # 30 m DEM columns that only the last tile column touches
    assert np.array_equal(s2a[:, right], alone[:, right]) and np.array_equal(s2b[:, right], alone[:, right])
    assert not np.array_equal(s2a[:, :40], s2b[:, :40])  # where it has data, S2 does condition
    assert "S2L2A_B02_B03_B04_B08" in sidecar["r0000c0002"]["conditions_without_data"]
    assert "conditions_without_data" not in sidecar["r0000c0001"]


@pytest.mark.parametrize("flip", ["south_up", "westward"])
def test_flipped_rasters_are_read_as_their_north_up_equivalent(tmp_path, flip):
    data = smooth_s2(250, 230)
    north_up = write_raster(tmp_path / "north_up.tif", data)
    if flip == "south_up":
        flipped = write_raster(tmp_path / "flipped.tif", data[:, ::-1].copy(),
                               transform=Affine(10, 0, 500000, 0, 10, 5200000 - 2500))
    else:
        flipped = write_raster(tmp_path / "flipped.tif", data[:, :, ::-1].copy(),
                               transform=Affine(-10, 0, 500000 + 2300, 0, -10, 5200000))
    assert open_input(flipped).bounds == open_input(north_up).bounds
    results = []
    for path in (north_up, flipped):
        job = SceneJob(DEMO, [open_input(path)], tmp_path / path.stem,
                       SceneOptions(steps=1, generate=("S2L1C_B02_B03_B04_B08",)))
        with rasterio.open(run_scene(job, EchoPipeline()).outputs[0]) as out:
            results.append((out.transform, out.read()))
    assert results[1][0] == results[0][0] == Affine(10, 0, 500000, 0, -10, 5200000)
    assert results[1][1].shape == (4, 250, 230) and np.abs(results[1][1] - results[0][1]).max() < 0.05


def test_class_indices_out_of_range_are_counted_and_reported(tmp_path):
    lulc = np.random.default_rng(0).integers(1, 10, (1, 150, 150)).astype(np.uint8)
    lulc[:, :50, :40] = 77
    scene = open_input(write_raster(tmp_path / "lulc.tif", lulc))
    assert scene.units == "index"
    job = SceneJob(DEMO, [scene], tmp_path / "out",  # tile 0 at the scene's corner holds its pixels
                   SceneOptions(steps=1, generate=("DEM_DEM",), tiling="scene"))
    reader = TileReader(job)
    codes = reader.read(job.plan.tiles[0]).conditions["LULC_LULC"][0]
    with pytest.warns(processing.UnknownClassCodeWarning,
                      match=r"2000 of 22500 LULC_LULC pixels .* \(e\.g\. 77\)"):
        reader.close()
    classes = DEMO.modality("LULC_LULC").processing
    assert (codes[:50, :40] == classes.codes[0]).all()
    assert np.array_equal(codes[50:150, 40:150], np.asarray(classes.codes)[lulc[0, 50:, 40:]])


def test_s1_units_must_be_plausible_unless_forced(tmp_path):
    path = write_raster(tmp_path / "s1_x100.tif", (_s1_db(50, 50) * 100).astype(np.int16))
    with pytest.raises(SceneError, match="neither dB .* --s1-units"):
        open_input(path)
    assert open_input(path, s1_units="db").units == "db"
    linear = write_raster(tmp_path / "s1_linear.tif", 10 ** (_s1_db(50, 50) / 10))
    assert open_input(linear).units == "linear"
    assert open_input(write_raster(tmp_path / "s1_db.tif", _s1_db(50, 50))).units == "db"


def test_linear_s1_units_refused_for_negative_values(tmp_path):
    """Negative power is never linear backscatter: `--s1-units linear` on dB values is one line,
    exit 3, as other implausible units are."""
    db = write_raster(tmp_path / "s1_db.tif", _s1_db(50, 50))
    with pytest.raises(SceneError, match="--s1-units linear, but the S1 values are negative"):
        open_input(db, s1_units="linear")
    result = _cli(["infer", str(db), "--s1-units", "linear", "--out", str(tmp_path / "out")])
    assert result.exit_code == 3 and "linear power is never negative" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_corrupt_pixels_mid_file_fail_in_one_line(tmp_path):
    """The first and last blocks are fine (so the file opens); one in the middle is garbage."""
    path = tmp_path / "corrupt.tif"
    with rasterio.open(path, "w", driver="GTiff", width=512, height=512, count=12, dtype="int16",
                       crs="EPSG:32633", transform=Affine(10, 0, 500000, 0, -10, 5200000), tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate") as dst:
        dst.write(smooth_s2(512, 512))
    with rasterio.open(path) as src:
        offset, size = (int(src.get_tag_item(f"BLOCK_{k}_1_0", "TIFF", bidx=1)) for k in ("OFFSET", "SIZE"))
    raw = bytearray(path.read_bytes())
    raw[offset:offset + size] = b"\xff" * size
    path.write_bytes(bytes(raw))
    job = _job(tmp_path, [path], generate=("DEM_DEM",))
    with pytest.raises(SceneError, match=r"corrupt.tif: cannot read pixels .*IReadBlock failed"):
        run_scene(job, EchoPipeline())
    assert not any(p.path.exists() for p in job.outputs)


def test_too_wide_scenes_are_refused_before_running(tmp_path, monkeypatch):
    wide = tmp_path / "wide.tif"  # 1000 km wide, nothing written (sparse): opening it costs nothing
    with rasterio.open(wide, "w", driver="GTiff", width=100_000, height=400, count=12, dtype="int16",
                       crs="EPSG:32633", transform=Affine(10, 0, 500000, 0, -10, 5200000), tiled=True,
                       compress="deflate", sparse_ok=True):
        pass
    job = _job(tmp_path, [wide], generate=("LULC_LULC", "S1RTC_vh_vv"))
    lulc_channels = 10 + 1 + 1  # class scores, validity, weights
    assert job.blend_bytes > 2 * lulc_channels * (1920 + 1560) // 10 * 100_000 * 8  # > 6 GB
    monkeypatch.setattr(scene_job, "memory_limit", lambda: 2**30)
    assert "memory: about" in job.describe() and "(allowed: 1.0 GiB" in job.describe()
    with pytest.raises(SceneError, match=r"wide.tif: blending 2 outputs .* needs about .* GiB .* "
                                         r"more than the 1.0 GiB allowed .*gdal_translate -srcwin"):
        run_scene(job, EchoPipeline())
    assert not job.work_dir.exists()
    small = _job(tmp_path, [write_raster(tmp_path / "small.tif", smooth_s2(300, 300))], generate=("DEM_DEM",))
    assert small.blend_bytes < 2**30
    small.check_memory()


def test_coarse_inputs_warn(tmp_path):
    coarse = write_raster(tmp_path / "coarse.tif", smooth_s2(40, 40),
                          transform=Affine(1000, 0, 500000, 0, -1000, 5200000))
    with pytest.warns(CoarseInputWarning, match="coarse.tif: its 1000 m pixels are more than 4x coarser"):
        _job(tmp_path, [coarse], generate=("DEM_DEM",))
    dem = write_raster(tmp_path / "dem.tif", np.full((1, 60, 60), 100, np.int16),
                       transform=Affine(30, 0, 500000, 0, -30, 5200000))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CoarseInputWarning)
        _job(tmp_path, [write_raster(tmp_path / "s2.tif", smooth_s2(180, 180)), dem],
             generate=("S1RTC_vh_vv",))
