"""Earth-anchored tiles (docs/chains.md): the same tiles, seeds and pixels whatever window asks."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from scene_helpers import EchoPipeline, only_inside, smooth_s2, write_raster

from copgen_rt import Pipeline, specs
from copgen_rt.demo import demo_weights
from copgen_rt.scenes.inputs.open import open_input
from copgen_rt.scenes.job import SceneJob, SceneOptions
from copgen_rt.scenes.reader import SceneFrame
from copgen_rt.scenes.run import run_scene
from copgen_rt.scenes.tiling import plan_tiles

DEMO = specs.get("copgen-demo")
# a corner on the 60 m lattice, 600 m before a lattice tile in x and y (320 and 3333 strides)
LEFT, TOP = 498600.0, 5200080.0
FIELD = smooth_s2(360, 360, seed=3)


def _scene(tmp_path, name: str, rows: slice, cols: slice):
    """A window of FIELD as its own GeoTIFF, georeferenced where it lies in the field."""
    transform = Affine(10, 0, LEFT + 10 * (cols.start or 0), 0, -10, TOP - 10 * (rows.start or 0))
    return write_raster(tmp_path / f"{name}.tif", FIELD[:, rows, cols], transform=transform)


def _run(tmp_path, pipeline, path, name: str, generate: str, **options):
    job = SceneJob(DEMO, [open_input(path)], tmp_path / name,
                   SceneOptions(steps=1, batch_size=1, generate=(generate,), **options))
    with rasterio.open(run_scene(job, pipeline).outputs[0]) as out:
        return job.plan, out.read(1), out.transform


def _shared(a, b, gsd: float, box) -> tuple[np.ndarray, np.ndarray]:
    """Values of runs a and b at the pixels that only tiles fully inside `box` cover in a."""
    plan, values, transform = a
    _, other, other_transform = b
    mask = only_inside(plan, transform, values.shape, gsd, box)
    dr, dc = round((transform.f - other_transform.f) / gsd), round((other_transform.c - transform.c) / gsd)
    rows, cols = np.nonzero(mask)
    return values[rows, cols], other[rows - dr, cols - dc]


def _box(rows: slice, cols: slice) -> tuple[float, float, float, float]:
    return LEFT + 10 * cols.start, TOP - 10 * rows.stop, LEFT + 10 * cols.stop, TOP - 10 * rows.start


def test_tile_origins_are_multiples_of_the_stride_in_crs_metres():
    frame = SceneFrame(CRS.from_epsg(32633), LEFT + 4680, TOP - 1200, 2240, 3000)
    plan = plan_tiles(frame)
    assert all(t.left % plan.stride_m == 0 and t.top % plan.stride_m == 0 for t in plan.tiles)
    assert all(t.left < frame.left + frame.width_m and t.left + plan.footprint_m > frame.left
               for t in plan.tiles)  # every tile touches the frame ...
    wider = plan_tiles(SceneFrame(frame.crs, frame.left - 3120, frame.top + 1560, 9000, 9000))
    assert {(t.left, t.top, t.anchor) for t in plan.tiles} <= {(t.left, t.top, t.anchor) for t in wider.tiles}
    scene = plan_tiles(frame, tiling="scene")  # ... the scene-anchored one starts at the corner
    assert (scene.tiles[0].left, scene.tiles[0].top, len(scene)) == (frame.left, frame.top, 4)
    assert (plan.n_rows, plan.n_cols) == (3, 3)  # its corner lies 960 m and 600 m into a lattice tile


@pytest.fixture(scope="module")
def demo():
    return Pipeline.from_pretrained(DEMO, demo_weights(), dtype="fp32", engine="torch")


def test_sub_window_and_overlapping_scene_agree_with_the_full_scene(tmp_path, demo):
    full_rows, full_cols = slice(0, 300), slice(0, 300)
    sub_rows, sub_cols = slice(48, 300), slice(36, 300)  # cut on the 60 m lattice: 6 px steps
    other_rows, other_cols = slice(54, 354), slice(42, 342)  # reaches past the full scene
    runs = {name: _run(tmp_path, demo, _scene(tmp_path, name, r, c), name, "DEM_DEM")
            for name, r, c in [("full", full_rows, full_cols), ("sub", sub_rows, sub_cols),
                               ("other", other_rows, other_cols)]}
    for name, box in [("sub", _box(sub_rows, sub_cols)), ("other", _box(slice(54, 300), slice(42, 300)))]:
        mine, theirs = _shared(runs["full"], runs[name], 30.0, box)
        assert mine.size > 1000  # DEM pixels (30 m) that only shared tiles cover
        assert np.array_equal(mine, theirs), name  # bit for bit at one batch composition (1 tile)
    mine, theirs = _shared(runs["full"], runs["sub"], 30.0, (0, 0, 1e9, 1e9))  # every pixel, edges too
    assert not np.array_equal(mine, theirs)  # near the sub-window's edge its tiles see padding


@pytest.mark.parametrize("tiling", ["earth", "scene"])
def test_neighbouring_scenes_mosaic_without_seams(tmp_path, tiling):
    """Outputs that depend on the tile seeds alone (the echo pipeline's per-tile levels) mosaic
    into the full scene exactly with Earth-anchored tiles; the scene-anchored ones do not."""
    echo = EchoPipeline()
    rows = slice(0, 300)
    parts = [("full", slice(0, 360)), ("west", slice(0, 180)), ("east", slice(180, 360))]
    runs = {name: _run(tmp_path, echo, _scene(tmp_path, name, rows, cols), name, "S1RTC_vh_vv",
                       tiling=tiling)[1] for name, cols in parts}
    mosaic = np.concatenate([runs["west"], runs["east"]], axis=1)
    if tiling == "earth":
        assert np.array_equal(mosaic, runs["full"])
    else:  # the east scene's tiles start at its own corner, with the west scene's seeds
        spread = runs["full"].max() - runs["full"].min()
        assert np.abs(mosaic - runs["full"])[:, 180:].max() > 0.1 * spread
