"""Gap masks (raster, SCL, nodata; other grids) and pixel-space compositing of filled tiles."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from copgen_rt.errors import MaskError
from copgen_rt.scenes.composite import composite, seam_offset, tile_action
from copgen_rt.scenes.masks import (
    DEFAULT_SCL_GAP_CLASSES,
    Grid,
    PartialMaskWarning,
    mask_from_raster,
    mask_from_scl,
    parse_scl_classes,
)
from copgen_rt.scenes.synthetic import write_raster

UTM = CRS.from_epsg(32633)
ORIGIN = (500000.0, 5200000.0)


def _grid(gsd: float, size: int, dx: float = 0.0, dy: float = 0.0) -> Grid:
    return Grid(UTM, Affine(gsd, 0, ORIGIN[0] + dx, 0, -gsd, ORIGIN[1] + dy), size, size)


def _write(path, data, gsd=10.0, dx=0.0, **kw):
    return write_raster(path, data, transform=_grid(gsd, 1, dx).transform, **kw)


# --- masks -----------------------------------------------------------------------------------


def test_raster_mask_nonzero_and_nodata_are_gaps(tmp_path):
    data = np.zeros((1, 8, 8), np.uint8)
    data[0, 2, 3] = 1
    data[0, 5, 5] = 7
    data[0, 0, 0] = 255  # the mask's own nodata
    gap = mask_from_raster(_write(tmp_path / "m.tif", data, nodata=255))
    expected = np.zeros((8, 8), bool)
    expected[2, 3] = expected[5, 5] = expected[0, 0] = True
    assert gap.dtype == bool and np.array_equal(gap, expected)
    with pytest.raises(MaskError, match="no band 2"):
        mask_from_raster(tmp_path / "m.tif", band=2)
    floats = np.zeros((1, 4, 4), np.float32)
    floats[0, 1, 2] = np.nan  # unknown: a gap
    assert np.nonzero(mask_from_raster(_write(tmp_path / "f.tif", floats))) == (np.array([1]), np.array([2]))


def test_scl_default_classes_and_option(tmp_path):
    assert DEFAULT_SCL_GAP_CLASSES == (0, 3, 8, 9, 10)
    codes = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    path = _write(tmp_path / "scl.tif", codes)
    assert np.array_equal(mask_from_scl(path), np.isin(codes[0], [0, 3, 8, 9, 10]))
    assert np.array_equal(mask_from_scl(path, classes=parse_scl_classes("8, 9")), np.isin(codes[0], [8, 9]))
    with pytest.raises(MaskError, match="codes must be among 0-11"):
        parse_scl_classes("3,12")
    with pytest.raises(MaskError, match="comma-separated"):
        parse_scl_classes("cloud")
    with pytest.raises(MaskError, match="not SCL class codes"):
        mask_from_scl(_write(tmp_path / "bad.tif", np.full((1, 2, 2), 40, np.uint8)))
    with pytest.raises(MaskError, match="none described as SCL"):
        mask_from_scl(_write(tmp_path / "two.tif", np.zeros((2, 2, 2), np.uint8)))
    named = _write(tmp_path / "named.tif", np.stack([np.zeros((3, 4), np.uint8), codes[0]]),
                   descriptions=["B02", "SCL"])
    assert np.array_equal(mask_from_scl(named), np.isin(codes[0], [0, 3, 8, 9, 10]))


def test_coarse_scl_onto_the_10m_grid_is_nearest(tmp_path):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 12, (1, 6, 6)).astype(np.uint8)
    gap = mask_from_scl(_write(tmp_path / "scl20.tif", codes, gsd=20.0), _grid(10.0, 12))
    expected = np.isin(codes[0], DEFAULT_SCL_GAP_CLASSES).repeat(2, 0).repeat(2, 1)
    assert np.array_equal(gap, expected)


def test_fine_mask_onto_a_coarse_grid_marks_partly_masked_pixels(tmp_path):
    fine = np.zeros((1, 12, 12), np.uint8)
    fine[0, 0, 0] = 1  # one 10 m pixel of the first 60 m pixel
    fine[0, 7, 11] = 1
    coarse = mask_from_raster(_write(tmp_path / "fine.tif", fine), _grid(60.0, 2))
    assert np.array_equal(coarse, np.array([[True, False], [False, True]]))


def test_shifted_mask_warns_and_foreign_mask_is_refused(tmp_path):
    data = np.ones((1, 8, 8), np.uint8)
    shifted = _write(tmp_path / "half.tif", data, dx=40.0)  # covers columns 4-11 of the target
    with pytest.warns(PartialMaskWarning, match="covers 50.0%"):
        gap = mask_from_raster(shifted, _grid(10.0, 8))
    assert gap[:, 4:].all() and not gap[:, :4].any()
    far = _write(tmp_path / "far.tif", data, dx=1e5)
    with pytest.raises(MaskError, match="does not overlap the scene"):
        mask_from_raster(far, _grid(10.0, 8))
    with pytest.raises(MaskError, match="no such file"):
        mask_from_raster(tmp_path / "missing.tif")
    (tmp_path / "junk.tif").write_text("not a raster")
    with pytest.raises(MaskError, match="not a readable raster"):
        mask_from_raster(tmp_path / "junk.tif")


def test_mask_in_another_crs_is_warped(tmp_path):
    # the same 10 m mask, warped to Web Mercator and back onto the scene's UTM grid
    target = _grid(10.0, 16)
    gap = np.zeros((16, 16), bool)
    gap[4:12, 6:10] = True
    other = Grid(CRS.from_epsg(3857), *_reprojected_transform(target))
    path = _write(tmp_path / "utm.tif", gap.astype(np.uint8)[None])
    moved = mask_from_raster(path, other)
    mercator = write_raster(tmp_path / "mercator.tif", moved.astype(np.uint8)[None], crs=other.crs,
                            transform=other.transform)
    back = mask_from_raster(mercator, target)
    assert back[gap].all()  # warping twice never loses a gap pixel (max resampling)
    assert back.sum() <= gap.sum() + 2 * (8 + 4) * 2  # at most a pixel ring more


def _reprojected_transform(grid: Grid) -> tuple[Affine, int, int]:
    from rasterio.warp import calculate_default_transform

    left, top = grid.transform.c, grid.transform.f
    right, bottom = left + grid.width * grid.transform.a, top + grid.height * grid.transform.e
    return calculate_default_transform(grid.crs, "EPSG:3857", grid.width, grid.height,
                                       left, bottom, right, top)


# --- compositing -----------------------------------------------------------------------------


def test_tile_action():
    gap = np.zeros((4, 4), bool)
    assert tile_action(gap) == "copy"
    gap[1, 1] = True
    assert tile_action(gap) == "fill"
    assert tile_action(np.ones((4, 4), bool)) == "generate"


def _tile(seed: int = 0):
    rng = np.random.default_rng(seed)
    original = rng.integers(0, 10000, (3, 24, 24)).astype(np.uint16)
    generated = rng.normal(5000, 500, (3, 24, 24)).astype(np.float32)
    gap = np.zeros((24, 24), bool)
    gap[6:18, 5:15] = True
    return original, generated, gap


@pytest.mark.parametrize("feather", [0, 3])
def test_valid_pixels_bit_for_bit_and_gap_generated(feather):
    original, generated, gap = _tile()
    out = composite(original, generated, gap, feather)
    assert out.dtype == np.float32
    assert np.array_equal(out[:, ~gap], original[:, ~gap].astype(np.float32))
    assert np.array_equal(out[:, ~gap].astype(np.uint16), original[:, ~gap])
    inner = np.zeros_like(gap)
    inner[6 + feather:18 - feather, 5 + feather:15 - feather] = True
    assert np.array_equal(out[:, inner], generated[:, inner])  # beyond the seam: generated as is
    ring = gap & ~inner
    if feather:
        assert not np.allclose(out[:, ring], generated[:, ring])
    else:
        assert not ring.any()


def test_seam_is_continuous_and_fades():
    """A constant step between input and generated values: the seam ramps it down linearly."""
    original = np.full((1, 20, 20), 100.0, np.float32)
    generated = np.full((1, 20, 20), 60.0, np.float32)
    gap = np.zeros((20, 20), bool)
    gap[:, 10:] = True
    out = composite(original, generated, gap, feather=4)
    assert np.allclose(out[0, 5, 8:16], [100, 100, 92, 84, 76, 68, 60, 60])
    assert np.allclose(seam_offset(original, generated, gap, 0), 0.0)


def test_seam_on_a_padded_window_matches_the_whole_scene():
    original, generated, gap = _tile(1)
    whole = composite(original, generated, gap, feather=3)
    window = (slice(None), slice(8, 20), slice(4, 13))  # cuts through the gap
    pad = (slice(None), slice(8 - 3, 20 + 3), slice(4 - 3, 13 + 3))
    part = composite(original[pad], generated[pad], gap[pad[1:]], feather=3)[:, 3:-3, 3:-3]
    assert np.array_equal(part, whole[window])


def test_class_rasters_and_bad_arguments():
    codes = np.array([[[1, 2], [4, 5]]], np.int64)
    gen = np.array([[[7, 7], [7, 7]]], np.int64)
    gap = np.array([[True, False], [False, False]])
    assert np.array_equal(composite(codes, gen, gap), [[[7, 2], [4, 5]]])
    with pytest.raises(ValueError, match="feather must be 0 for class rasters"):
        composite(codes, gen, gap, feather=2)
    with pytest.raises(ValueError, match="feather must be a whole number"):
        composite(codes.astype(float), gen.astype(float), gap, feather=-1)
    with pytest.raises(ValueError, match=r"must be \(C, H, W\)"):
        composite(codes[0], gen[0], gap)
