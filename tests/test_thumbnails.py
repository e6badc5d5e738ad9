from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from copgen_rt.thumbnails import (
    center_crop,
    dem_hillshade,
    read_thumbnail,
    s1_false_colour,
    s2_true_colour,
    write_png,
)


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png_16_bit(path: Path, values: np.ndarray, color_type: int) -> Path:
    """A 16-bit PNG written by hand (Pillow cannot write 48-bit RGB)."""
    h, w = values.shape[:2]
    rows = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))
    return path


def _one_line_error(path: Path, match: str) -> None:
    with pytest.raises(ValueError, match=match) as e:
        read_thumbnail(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


# --- reading and writing ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt,suffix,options", [("PNG", "png", {}), ("WEBP", "webp", {"lossless": True})])
def test_lossless_formats_read_back_exactly(tmp_path, fmt, suffix, options):
    image = _rgb(259, 261)
    path = tmp_path / f"x.{suffix}"
    Image.fromarray(image).save(path, format=fmt, **options)
    out = read_thumbnail(path)
    assert out.dtype == np.uint8 and out.shape == (259, 261, 3)
    assert np.array_equal(out, image)


@pytest.mark.parametrize("fmt,suffix", [("JPEG", "jpg"), ("WEBP", "webp")])
def test_lossy_formats(tmp_path, fmt, suffix):
    image = np.repeat(np.repeat(_rgb(33, 17), 8, axis=0), 8, axis=1)  # smooth enough to compress well
    path = tmp_path / f"x.{suffix}"
    Image.fromarray(image).save(path, format=fmt, quality=95)
    out = read_thumbnail(path)
    assert out.dtype == np.uint8 and out.shape == (264, 136, 3)
    assert np.abs(out.astype(int) - image).mean() < 12


def test_palette_image_is_converted(tmp_path):
    image = np.zeros((5, 7, 3), np.uint8)
    image[1:3, 2:6] = (200, 30, 90)
    Image.fromarray(image).convert("P", palette=Image.Palette.ADAPTIVE, colors=2).save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    assert np.array_equal(read_thumbnail(tmp_path / "p.png"), image)


def test_bad_images(tmp_path):
    grey = np.zeros((4, 4), np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    _one_line_error(tmp_path / "grey.png", "greyscale image")
    Image.fromarray(grey).convert("1").save(tmp_path / "bilevel.png")
    _one_line_error(tmp_path / "bilevel.png", "greyscale image")
    Image.fromarray(np.zeros((4, 4, 4), np.uint8), "RGBA").save(tmp_path / "rgba.png")
    _one_line_error(tmp_path / "rgba.png", "alpha channel")
    Image.fromarray(np.zeros((4, 4, 4), np.uint8), "RGBA").save(tmp_path / "rgba.webp", lossless=True)
    _one_line_error(tmp_path / "rgba.webp", "alpha channel")
    Image.fromarray(np.zeros((4, 4, 2), np.uint8), "LA").save(tmp_path / "la.png")
    _one_line_error(tmp_path / "la.png", "alpha channel")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).convert("P").save(tmp_path / "tp.png", transparency=0)
    _one_line_error(tmp_path / "tp.png", "alpha channel")
    Image.fromarray(np.full((4, 4), 1000, np.uint16)).save(tmp_path / "grey16.png")
    _one_line_error(tmp_path / "grey16.png", "more than 8 bits")
    rgb16 = _png_16_bit(tmp_path / "rgb16.png", np.full((4, 5, 3), 1000), color_type=2)
    _one_line_error(rgb16, "more than 8 bits")


def test_unreadable_files(tmp_path):
    _one_line_error(tmp_path / "missing.png", "no such file")
    (tmp_path / "noise.png").write_bytes(np.random.default_rng(0).bytes(300))
    _one_line_error(tmp_path / "noise.png", "not a readable image")
    write_png(tmp_path / "whole.png", _rgb(64, 64))
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    _one_line_error(tmp_path / "truncated.png", "not a readable image")


def test_write_png_round_trip_and_atomic_replace(tmp_path, monkeypatch):
    path = tmp_path / "out" / "x.png"
    first, second = _rgb(5, 9, seed=1), _rgb(5, 9, seed=2)
    write_png(path, first)
    assert np.array_equal(read_thumbnail(path), first)
    assert path.stat().st_mode & 0o777 == 0o644

    def failing_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_png(path, second)
    monkeypatch.undo()
    assert np.array_equal(read_thumbnail(path), first)  # the old file is untouched
    assert [p.name for p in path.parent.iterdir()] == ["x.png"]  # no temporary left behind
    write_png(path, second)
    assert np.array_equal(read_thumbnail(path), second)


def test_write_png_rejects_non_rgb8(tmp_path):
    with pytest.raises(ValueError, match=r"uint8 \(H, W, 3\)"):
        write_png(tmp_path / "x.png", np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"uint8 \(H, W, 3\)"):
        write_png(tmp_path / "x.png", np.zeros((4, 4), np.uint8))


# --- centre crop --------------------------------------------------------------------------------


@pytest.mark.parametrize("h,w,top,left", [(259, 261, 2, 2), (256, 256, 0, 0), (1068, 1069, 406, 406),
                                          (257, 263, 0, 4), (300, 256, 22, 0)])
def test_center_crop_offsets_round_half_to_even(h, w, top, left):
    image = _rgb(h, w)
    assert np.array_equal(center_crop(image), image[top:top + 256, left:left + 256])


def test_center_crop_batch():
    batch = np.stack([_rgb(259, 261, seed=s) for s in range(3)])
    out = center_crop(batch)
    assert out.shape == (3, 256, 256, 3)
    assert all(np.array_equal(out[i], center_crop(batch[i])) for i in range(3))


@pytest.mark.parametrize("h,w", [(200, 240), (250, 250), (180, 300)])
def test_small_images_are_reflection_padded_like_the_reference(h, w):
    image = _rgb(h, w)
    res = min(h, w)
    pad = (256 - res) // 2
    crop = center_crop(image, size=res)  # reference: CenterCrop(res) -> ReflectionPad2d(pad)
    expected = torch.nn.functional.pad(torch.from_numpy(crop).permute(2, 0, 1).float(), (pad,) * 4,
                                       mode="reflect").permute(1, 2, 0).to(torch.uint8).numpy()
    assert np.array_equal(center_crop(image), expected)


@pytest.mark.parametrize("res", [255, 201, 87])
def test_odd_padding_adds_the_extra_pixel_where_cropping_back_finds_the_input(res):
    image = _rgb(res, res + 10)
    out = center_crop(image)
    assert out.shape == (256, 256, 3)
    assert np.array_equal(center_crop(out, size=res), center_crop(image, size=res))


def test_center_crop_rejects_bad_input():
    with pytest.raises(ValueError, match="too small"):
        center_crop(_rgb(80, 80))
    with pytest.raises(ValueError, match="uint8"):
        center_crop(np.zeros((300, 300, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        center_crop(np.zeros((300, 300), np.uint8))


# --- Major TOM recipes --------------------------------------------------------------------------


def test_s2_true_colour():
    b04 = np.array([[0, 1000], [10000, 65535]], np.uint16)
    out = s2_true_colour(b04, b04 // 2, np.zeros_like(b04))
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    # 1.3 * 0.1 ** 0.6 * 255 = 83.27 -> 83 (truncation); 1.3 clips to 1
    assert out[..., 0].tolist() == [[0, 83], [255, 255]]
    assert out[0, 1, 1] == int(1.3 * 0.05 ** 0.6 * 255)
    assert (out[..., 2] == 0).all()


def test_s1_false_colour():
    vv = np.array([[-20.0, -10.0], [0.0, np.nan]], np.float32)
    vh = np.array([[-30.0, -25.0], [-20.0, -25.0]], np.float32)
    out = s1_false_colour(vv, vh)
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    # per-band stretch: VV 0, 127.5, 255, nodata 0; VH 0, 127.5, 255, 127.5; G = 255 (VV+VH) / 510
    assert out[..., 0].tolist() == [[0, 127], [255, 0]]
    assert out[..., 1].tolist() == [[0, 127], [255, 63]]
    assert out[..., 2].tolist() == [[0, 127], [255, 127]]


def test_s1_false_colour_degenerate_bands():
    flat = np.full((3, 3), -12.0)
    out = s1_false_colour(flat, flat)
    assert (out == 0).all()
    with pytest.raises(ValueError, match="no finite"):
        s1_false_colour(np.full((3, 3), np.nan), flat)


# matplotlib LightSource(azdeg=315, altdeg=45).hillshade(DEM, vert_exag=1) (dx = dy = 1), uint8
_DEM = np.array([[120, 135, 150, 140, 130], [110, 140, 175, 160, 125],
                 [100, 120, 150, 155, 120], [95, 100, 115, 130, 110]], np.float32)
_MPL = [[160, 255, 235, 175, 12], [191, 202, 234, 69, 24], [188, 146, 97, 0, 18], [145, 90, 81, 29, 6]]
_MPL_DX_THIRD = [[160, 255, 237, 176, 8], [193, 204, 231, 70, 25], [189, 148, 99, 0, 20],
                 [138, 91, 83, 30, 6]]


def test_dem_hillshade_matches_matplotlib():
    out = dem_hillshade(_DEM)
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3)
    assert (out == out[..., :1]).all()  # grey replicated
    assert out[..., 0].tolist() == _MPL
    assert dem_hillshade(_DEM, gsd=10.0)[..., 0].tolist() == _MPL_DX_THIRD  # dx = dy = 10 / 30


def test_dem_hillshade_light_from_the_north_west():
    rows = np.arange(6, dtype=np.float64)[:, None].repeat(7, axis=1)
    flat = dem_hillshade(np.zeros((6, 7)))
    assert (flat == int(255 * np.sin(np.radians(45)))).all()  # constant slope: no stretch, 180
    # rising to the south = facing north (towards the light): (0.5 + sin 45) / sqrt 2 -> 217
    assert (dem_hillshade(rows)[..., 0] == 217).all()
    assert (dem_hillshade(-rows)[..., 0] == 37).all()
    assert (dem_hillshade(rows.T)[..., 0] == 217).all()  # rising to the east = facing west


def test_dem_hillshade_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        dem_hillshade(np.array([[1.0, np.nan], [0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        dem_hillshade(np.zeros((1, 5)))

