"""Many scenes: the sequential CLI path, and Ray (a local runtime with 2 CPU workers) against
single-process `run_scene` with the same options, bit for bit."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from scene_helpers import RAY, smooth_s2, write_raster

from copgen_rt import Pipeline, specs
from copgen_rt.cli import main
from copgen_rt.demo import demo_weights
from copgen_rt.plan import resolve
from copgen_rt.runs.batch import Batch
from copgen_rt.runs.ray_workers import WorkerPool, run_on_ray, tile_ranges
from copgen_rt.runs.record import RUN_MANIFEST, RunManifest
from copgen_rt.runs.report import Report
from copgen_rt.runs.scenelist import SceneEntry, expand, read_manifest
from copgen_rt.runs.scheduler import run
from copgen_rt.runs.source import PipelineSource
from copgen_rt.scenes.inputs.open import open_input
from copgen_rt.scenes.job import SceneJob, SceneOptions
from copgen_rt.scenes.run import run_scene

DEMO = specs.get("copgen-demo")
OPTIONS = SceneOptions(steps=2, batch_size=2, generate=("DEM_DEM", "LULC_LULC"))
SPLIT = 4  # the big scene (16 Earth-anchored tiles) is split into 4 ranges; the small ones (4) are not


def _make_job(entry: SceneEntry) -> SceneJob:
    return SceneJob(DEMO, [open_input(entry.scene)], entry.out, OPTIONS)


def _source() -> PipelineSource:
    # the plan the reference's Pipeline.from_pretrained resolves for itself
    return PipelineSource.create(DEMO, demo_weights(), None, resolve(DEMO, "cpu", dtype="fp32"))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("scenes")
    big = write_raster(folder / "big.tif", smooth_s2(400, 400, seed=7))  # first: it starts at once
    return [big] + [write_raster(folder / f"small{i}.tif", smooth_s2(200, 230, seed=i)) for i in range(3)]


@pytest.fixture(scope="module")
def reference(scenes, tmp_path_factory) -> dict[str, tuple]:
    """Every output file of single-process run_scene (a fresh pipeline per scene, as `infer SCENE`)."""
    out = tmp_path_factory.mktemp("reference")
    files = {}
    for path in scenes:
        job = SceneJob(DEMO, [open_input(path)], out, OPTIONS)
        for p in run_scene(job, Pipeline.from_pretrained(DEMO, demo_weights())).outputs:
            files[p.name] = _read(p)
    return files


def _read(path: Path):
    if path.suffix == ".json":
        return json.loads(path.read_text())
    with rasterio.open(path) as f:
        return f.read(), f.tags()


def _assert_same_as_reference(out: Path, reference: dict) -> None:
    for name, expected in reference.items():
        got = _read(out / name)
        if name.endswith(".json"):
            assert got == expected, name
        else:
            assert np.array_equal(got[0], expected[0], equal_nan=True), name
            assert got[1] == expected[1], name  # same provenance tags too


@pytest.fixture(scope="module")
def ray_runtime():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200_000_000, log_to_driver=False,
             logging_level="WARNING")
    yield ray
    ray.shutdown()


def test_tile_ranges_start_on_batch_boundaries():
    assert tile_ranges(25, 2, 8) == [(0, 8), (8, 16), (16, 24), (24, 25)]
    assert tile_ranges(65, 4, 64) == [(0, 36), (36, 65)]
    assert tile_ranges(64, 4, 64) == [] and tile_ranges(10, 16, 8) == []  # whole scenes


@RAY
def test_ray_matches_single_process_and_a_rerun_skips_everything(ray_runtime, scenes, reference, tmp_path):
    out = tmp_path / "out"
    entries = expand([str(p) for p in scenes], None, (), str(out))
    summary = run(entries, _make_job, _source(), out, ray_address="local", split_tiles=SPLIT, quiet=True)
    assert (summary.succeeded, summary.skipped, summary.failed) == (4, 0, [])
    _assert_same_as_reference(out, reference)
    records = json.loads((out / RUN_MANIFEST).read_text())["scenes"]
    assert records[str(out / "big")]["tile_ranges"] == 4
    assert {r["tile_ranges"] for k, r in records.items() if "small" in k} == {1}
    assert all(r["status"] == "done" and r["provenance"]["steps"] == 2 for r in records.values())
    assert not list(out.glob(".copgen-work-*"))

    mtimes = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    again = run(entries, _make_job, _source(), out, ray_address="local", split_tiles=SPLIT, quiet=True)
    assert (again.succeeded, again.skipped, again.failed) == (0, 4, [])
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes  # nothing rewritten
    assert json.loads((out / RUN_MANIFEST).read_text())["scenes"] == records


@RAY
def test_a_killed_worker_loses_no_scene(ray_runtime, scenes, reference, tmp_path):
    out = tmp_path / "out"
    entries = expand([str(p) for p in scenes], None, (), str(out))
    with WorkerPool.start(_source()) as pool:
        assert len(pool.actors) == 2
        batch = Batch(entries, _make_job, RunManifest(out / RUN_MANIFEST), pool.provenance,
                      Report(len(entries), quiet=True))
        runner = threading.Thread(target=run_on_ray, args=(batch, pool, SPLIT))
        runner.start()
        latents = out / ".copgen-work-big" / "latents"
        deadline = time.monotonic() + 120
        while not list(latents.glob("*.safetensors")) and time.monotonic() < deadline:
            time.sleep(0.01)
        for actor in pool.actors:  # mid-range: both workers are busy with the big scene
            ray_runtime.kill(actor, no_restart=False)
        runner.join(timeout=300)
    assert not runner.is_alive()
    summary = batch.summary
    assert summary.retried >= 1 and (summary.succeeded, summary.failed) == (4, [])
    _assert_same_as_reference(out, reference)


@RAY
def test_cli_ray_flag_and_a_scene_failing_on_a_worker(ray_runtime, scenes, tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    manifest = tmp_path / "scenes.csv"
    manifest.write_text(f"scene,out\n{scenes[1]},\n{scenes[2]},\n{scenes[3]},{not_a_folder}\n")
    r = _cli(["--manifest", str(manifest), "--ray", "--out", str(tmp_path / "o")])
    assert r.exit_code == 8, r.output
    assert "[3/3]" in r.output and "tiles/s" in r.output
    assert "2 succeeded, 0 skipped (already complete), 1 failed" in r.output
    failures = [line for line in r.output.splitlines() if line.startswith("copgen-rt: failed:")]
    assert len(failures) == 1 and "small2.tif" in failures[0] and "Traceback" not in r.output
    assert len(list((tmp_path / "o").glob("*_DEM_DEM.tif"))) == 2


# --- the sequential path of the command line ----------------------------------------------------


def _cli(args):
    return CliRunner().invoke(main, ["infer", *args, "--steps", "2", "--generate", "DEM"])


def test_cli_many_scenes_in_process_with_a_bad_one(tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    for i in range(2):
        write_raster(folder / f"s{i}.tif", smooth_s2(200, 200, seed=i))
    (folder / "broken.tif").write_bytes(b"II*\x00 this is not a tiff")
    out = tmp_path / "out"
    r = _cli([str(folder / "*.tif"), "--out", str(out), "-q"])
    assert r.exit_code == 8, r.output
    assert "3 scenes in" in r.output and "2 succeeded, 0 skipped (already complete), 1 failed" in r.output
    failures = [line for line in r.output.splitlines() if line.startswith("copgen-rt: failed:")]
    assert len(failures) == 1 and "broken.tif: not a readable raster" in failures[0]
    assert "Traceback" not in r.output and len(list(out.glob("*_DEM_DEM.tif"))) == 2
    records = json.loads((out / RUN_MANIFEST).read_text())["scenes"]
    assert records[str(out / "broken")]["status"] == "failed"

    again = _cli([str(folder / "*.tif"), "--out", str(out), "-q"])
    assert again.exit_code == 8 and "0 succeeded, 2 skipped" in again.output
    seed = _cli([str(folder / "s*.tif"), "--out", str(out), "-q", "--seed", "1"])  # other settings
    assert seed.exit_code == 8 and "exists; pass --overwrite" in seed.output


def test_cli_manifest_csv_matches_single_scene_runs(tmp_path):
    a = write_raster(tmp_path / "a.tif", smooth_s2(200, 200, seed=1))
    write_raster(tmp_path / "b.tif", smooth_s2(220, 200, seed=2))
    s1 = write_raster(tmp_path / "s1.tif", -15 + smooth_s2(200, 200)[:2].astype(np.float32) / 500,
                      descriptions=["VV", "VH"])
    manifest = tmp_path / "scenes.csv"
    manifest.write_text("scene,cond,out\n# a comment\na.tif,S1RTC=s1.tif,a_out\nb.tif,,\n")
    r = _cli(["--manifest", str(manifest), "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert "[2/2]" in r.output and "2 succeeded" in r.output
    single = _cli([str(a), "--cond", f"S1RTC={s1}", "--out", str(tmp_path / "single"), "-q"])
    assert single.exit_code == 0, single.output
    assert _read(tmp_path / "single" / "a_tiles.json") == _read(tmp_path / "a_out" / "a_tiles.json")
    (one, one_tags), (many, many_tags) = (_read(tmp_path / d / "a_DEM_DEM.tif") for d in ("single", "a_out"))
    assert np.array_equal(one, many) and one_tags == many_tags
    assert (tmp_path / "out" / "b_DEM_DEM.tif").exists()
    scenes = json.loads((tmp_path / "out" / f"scenes.{RUN_MANIFEST}").read_text())["scenes"]
    record = scenes[str(tmp_path / "a_out" / "a")]
    assert record["conds"] == [f"S1RTC={s1}"] and record["status"] == "done"


def test_a_manifest_with_its_own_out_folders_keeps_its_record_beside_it(tmp_path, monkeypatch):
    """Every row names its `out`: no ./copgen-out made only for the record; the record and the
    Collection are named after the manifest, beside it; another manifest's record is never merged."""
    monkeypatch.chdir(tmp_path)
    for name in ("a", "b"):
        write_raster(tmp_path / f"{name}.tif", smooth_s2(200, 200, seed=len(name)))
    manifest = tmp_path / "scenes.csv"
    manifest.write_text("scene,out\na.tif,a_out\nb.tif,b_out\n")
    r = _cli(["--manifest", str(manifest), "-q"])
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "copgen-out").exists()
    record = json.loads((tmp_path / f"scenes.{RUN_MANIFEST}").read_text())
    assert record["manifest"] == str(manifest) and set(record["scenes"]) == {
        str(tmp_path / "a_out" / "a"), str(tmp_path / "b_out" / "b")}
    collection = json.loads((tmp_path / "scenes.copgen-collection.json").read_text())
    assert sorted(link["href"] for link in collection["links"] if link["rel"] == "item") == [
        "a_out/a_item.json", "b_out/b_item.json"]
    again = _cli(["--manifest", str(manifest), "-q"])
    assert again.exit_code == 0 and "0 succeeded, 2 skipped" in again.output, again.output
    # another manifest of the same name, writing to the same folder: refused before running
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "scenes.csv").write_text(f"scene,out\n{tmp_path / 'a.tif'},{tmp_path}\n")
    clash = _cli(["--manifest", str(tmp_path / "other" / "scenes.csv"), "--out", str(tmp_path)])
    assert clash.exit_code == 3, clash.output
    assert f"the run record of --manifest {manifest}, not of --manifest {tmp_path / 'other'}" in clash.output
    assert not (tmp_path / "a_DEM_DEM.tif").exists()


def test_bad_scene_lists_fail_in_one_line(tmp_path):
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        write_raster(tmp_path / sub / "scene.tif", smooth_s2(50, 50))
    cases = [
        ([str(tmp_path / "nothing" / "*.tif")], "no file matches"),
        ([str(tmp_path / "x" / "scene.tif"), str(tmp_path / "y" / "scene.tif")],
         "would write the same outputs"),
        (["--ray", str(tmp_path / "x" / "scene.tif")], "not a Ray address"),
        (["--manifest", str(tmp_path / "missing.txt")], "cannot read it"),
    ]
    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("scene,when\nx/scene.tif,today\n")
    cases.append((["--manifest", str(bad_header)], "expected scene,cond,out"))
    for args, message in cases:
        r = _cli([*args, "--out", str(tmp_path / "o"), "-q"])
        assert r.exit_code == 3, (args, r.output)
        lines = [line for line in r.output.splitlines() if line.startswith("copgen-rt: error")]
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.output


@RAY
def test_workers_that_could_never_start_are_refused(ray_runtime):
    with pytest.raises(ValueError, match="--cpus-per-worker 3: the Ray cluster has 2 CPU"):
        WorkerPool.start(_source(), cpus_per_worker=3)


def test_an_address_without_a_ray_head_fails_fast():
    """Checked before ray.init, which would retry a dead address for minutes (connect() itself
    cannot be tried here: this module's Ray runtime is already initialised)."""
    from copgen_rt.runs.ray_workers import _check_reachable

    start = time.monotonic()
    for address in ("127.0.0.1:1", "no-such-host.invalid:6379"):
        with pytest.raises(ValueError, match=f"--ray {address}: no Ray head answers there"):
            _check_reachable(address)
    assert time.monotonic() - start < 15


def test_a_glob_over_the_output_folder_skips_the_outputs(tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    write_raster(folder / "s0.tif", smooth_s2(200, 200))
    first = _cli([str(folder / "*.tif"), "--out", str(folder), "-q"])
    assert first.exit_code == 0, first.output
    again = _cli([str(folder / "*.tif"), "--out", str(folder)])
    assert again.exit_code == 0, again.output
    assert "1 matching file(s) are copgen-rt outputs, not taken as scenes" in again.output
    assert "0 succeeded, 1 skipped" in again.output
    assert sorted(p.name for p in folder.glob("*.tif")) == ["s0.tif", "s0_DEM_DEM.tif"]


def test_a_csv_manifest_with_a_byte_order_mark(tmp_path):
    write_raster(tmp_path / "s0.tif", smooth_s2(200, 200))
    (tmp_path / "scenes.csv").write_text("scene,cond,out\ns0.tif,,\n", encoding="utf-8-sig")
    entries = expand([], str(tmp_path / "scenes.csv"), (), str(tmp_path / "out"))
    assert [e.scene.name for e in entries] == ["s0.tif"]


def test_an_open_quote_in_a_manifest_does_not_swallow_the_lines_after_it(tmp_path):
    """One csv.reader over every line let a quote opened on one line run on into the next: the
    scenes after it vanished into one bogus entry. Each line is parsed as its own row."""
    manifest = tmp_path / "scenes.csv"
    manifest.write_text('scene,out\n"a.tif,a_out\nb.tif,b_out\nc.tif,c_out\n')
    with pytest.raises(ValueError, match=r"scenes.csv line 2: not a CSV row"):
        read_manifest(manifest, (), tmp_path / "out")
    manifest.write_text('scene,out\n"a, 1.tif",a_out\nb.tif\n')  # quotes within a line still work
    entries = read_manifest(manifest, (), tmp_path / "out")
    assert [(e.scene.name, e.out.name) for e in entries] == [("a, 1.tif", "a_out"), ("b.tif", "out")]
