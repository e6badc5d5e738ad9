"""8-bit RGB thumbnails, the pixel space of COP-GEN-Beta: reading, centre cropping, writing, and
the Major TOM Core recipes that turn physical rasters into thumbnails.

Arrays are numpy uint8 (H, W, 3) (or (B, H, W, 3) where noted), RGB, row-major; feed them to
`copgen_rt.processing.preprocess` (RGB8 kind) to get the model input.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile
from PIL.PngImagePlugin import PngInfo

from copgen_rt.errors import first_line
from copgen_rt.files import atomic_write

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_GREY_MODES = {"L", "1"}
_RGB_CONVERTIBLE = {"RGB", "P", "CMYK", "YCbCr"}


# --- files --------------------------------------------------------------------------------------


def read_thumbnail(path: str | Path) -> np.ndarray:
    """An 8-bit RGB image file (PNG, JPEG, WebP, ...; palette images converted) -> uint8 (H, W, 3).

    Greyscale, images with alpha, 16-bit images and unreadable files raise a one-line ValueError:
    the reference would silently drop alpha or replicate grey, which is rarely what was meant.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            problem = _mode_problem(img)
            if problem is None:
                img.load()
                rgb = np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except Image.UnidentifiedImageError:
        raise ValueError(f"{path}: not a readable image (unknown or corrupt format)") from None
    except Image.DecompressionBombError as e:
        raise ValueError(f"{path}: image too large ({first_line(e)})") from None
    except (OSError, SyntaxError, EOFError, ValueError) as e:  # truncated or damaged data
        raise ValueError(f"{path}: not a readable image ({first_line(e)})") from None
    if problem is not None:
        raise ValueError(f"{path}: {problem}; 8-bit RGB expected")
    return rgb


def _mode_problem(img: Image.Image) -> str | None:
    mode = img.mode
    if _is_high_bit_depth(img):
        return f"{mode} image with more than 8 bits per sample"
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in img.info):
        return f"image has an alpha channel (mode {mode})"
    if mode in _GREY_MODES:
        return f"greyscale image (mode {mode}; replicate a grey DEM hillshade to three channels)"
    if mode not in _RGB_CONVERTIBLE:
        return f"unsupported image mode {mode}"
    return None


def _is_high_bit_depth(img: Image.Image) -> bool:
    """Pillow reads 48-bit RGB PNGs as mode RGB; only the decoder's raw mode tells (e.g. RGB;16B)."""
    if img.mode.startswith(("I", "F")):
        return True
    for tile in img.tile if isinstance(img, ImageFile.ImageFile) else ():
        args = tile[3]  # (codec, extents, offset, args) in every Pillow version
        rawmode = args if isinstance(args, str) else next((a for a in args or () if isinstance(a, str)), "")
        if ";16" in rawmode:
            return True
    return False


def write_png(path: str | Path, image: np.ndarray, tags: Mapping[str, str] | None = None) -> None:
    """Write uint8 (H, W, 3) as an RGB PNG, atomically (temporary file in the folder, then rename).

    `tags` (provenance, as written into GeoTIFFs) become PNG text chunks; the GeoTIFF image
    description becomes the standard "Description" key."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"write_png expects uint8 (H, W, 3), got {image.dtype} {image.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = PngInfo()
    for key, value in (tags or {}).items():
        text.add_text("Description" if key == "TIFFTAG_IMAGEDESCRIPTION" else key, value)
    with atomic_write(path) as f:
        Image.fromarray(np.ascontiguousarray(image), "RGB").save(f, format="PNG", pnginfo=text)


# --- the reference CLI's input crop -----------------------------------------------------------


def center_crop(image: np.ndarray, size: int = 256) -> np.ndarray:
    """The reference CLI's input geometry for uint8 (H, W, 3) or (B, H, W, 3) -> (..., size, size, 3).

    Both sides >= size: torchvision CenterCrop(size), offsets int(round((H - size) / 2)) with
    Python's round half to even (259 -> 2, 261 -> 2, 1069 -> 406).
    Smaller side res < size: the reference's `--resolution res` path, CenterCrop(res) then
    ReflectionPad2d((size - res) // 2) (reflection without repeating the edge pixel). When
    size - res is odd the reference ends one pixel short (e.g. 255 px) and its backbone rejects
    the input; here the extra row/column is reflected too, with the image placed at the offset
    that CenterCrop(res) of the output reads back (before = round_half_even((size - res) / 2),
    after = the rest), so `center_crop(output, res)` returns the input crop exactly.
    Reflection needs res > before-padding, i.e. res >= 86 for size 256; smaller images raise.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (3, 4) or image.shape[-1] != 3:
        raise ValueError(f"center_crop expects uint8 (H, W, 3) or (B, H, W, 3), "
                         f"got {image.dtype} {image.shape}")
    h, w = image.shape[-3:-1]
    res = min(h, w, size)
    image = _crop(image, res)
    if res == size:
        return image
    before = round((size - res) / 2)
    after = size - res - before
    if max(before, after) >= res:
        raise ValueError(f"image of {w}x{h} px (width x height) is too small to reflect-pad to {size} px")
    pad = [(0, 0)] * (image.ndim - 3) + [(before, after), (before, after), (0, 0)]
    return np.pad(image, pad, mode="reflect")


def _crop(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[-3:-1]
    top, left = round((h - size) / 2), round((w - size) / 2)
    return image[..., top:top + size, left:left + size, :]


# --- Major TOM Core thumbnail recipes ---------------------------------------------------------


def s2_true_colour(b04: np.ndarray, b03: np.ndarray, b02: np.ndarray, gain: float = 1.3,
                   gamma: float = 0.6) -> np.ndarray:
    """Sentinel-2 DN (L1C or L2A, no offset correction) -> uint8 RGB: gain (DN/10000)^gamma,
    clipped to [0, 1], times 255, truncated. Negative DN (absent from Major TOM) count as 0."""
    dn = np.stack([np.asarray(b, dtype=np.float64) for b in (b04, b03, b02)], axis=-1)
    thumb = gain * (np.clip(dn, 0.0, None) / 10000.0) ** gamma
    return (np.clip(thumb, 0.0, 1.0) * 255).astype(np.uint8)


def s1_false_colour(vv_db: np.ndarray, vh_db: np.ndarray,
                    ranges: tuple[tuple[float, float], tuple[float, float]] | None = None) -> np.ndarray:
    """Sentinel-1 RTC backscatter in dB -> uint8 RGB (VV, 255 (VV+VH) / max(VV+VH), VH).

    Major TOM's dB: 10 log10 of linear gamma0 after replacing negatives by the smallest
    non-negative value of the band.

    Each band is min-max stretched to 0..255 over its finite pixels (per tile, so absolute
    levels are lost), or over the given (low, high) dB `ranges` (one stretch for a whole scene,
    so neighbouring tiles agree); non-finite pixels (nodata) become 0. A constant band maps to 0.
    Arithmetic in the input's float precision (float32 for Major TOM rasters), as Major TOM did.
    """
    vv, vh = (_stretch_db(np.asarray(b), r)
              for b, r in zip((vv_db, vh_db), ranges or (None, None), strict=True))
    both = vv + vh
    top = both.max()
    green = 255 * both / top if top > 0 else both
    return np.stack([vv, green, vh], axis=-1).astype(np.uint8)


def _stretch_db(band: np.ndarray, limits: tuple[float, float] | None = None) -> np.ndarray:
    band = band.astype(np.result_type(band.dtype, np.float32), copy=False)
    valid = np.isfinite(band)
    if not valid.any():
        raise ValueError("S1 band has no finite (valid) pixel")
    low, high = limits if limits is not None else (band[valid].min(), band[valid].max())
    band = np.clip(band, low, high)
    scaled = (band - low) / (high - low) * 255 if high > low else np.zeros_like(band)
    return np.where(valid, scaled, 0).astype(band.dtype, copy=False)


def dem_hillshade(dem_m: np.ndarray, gsd: float = 30.0, azdeg: float = 315.0,
                  altdeg: float = 45.0) -> np.ndarray:
    """Elevation (metres) -> uint8 RGB hillshade, grey replicated to three channels.

    matplotlib `LightSource(azdeg, altdeg).hillshade(dem, vert_exag=1)` followed by
    uint8(255 * hs) (truncation), re-implemented in numpy. Major TOM shaded the 30 m GLO-30 grid
    with unit pixel spacing, so the spacing here is gsd / 30: a 30 m DEM reproduces the Core
    thumbnails exactly and other resolutions keep their slopes on the same scale.
    """
    dem = np.asarray(dem_m)
    if dem.ndim != 2 or min(dem.shape) < 2:
        raise ValueError(f"dem_hillshade expects a (H, W) array with H, W >= 2, got {dem.shape}")
    if not np.isfinite(dem).all():
        raise ValueError("DEM contains NaN or infinite values; fill nodata first")
    if not np.issubdtype(dem.dtype, np.floating):
        dem = dem.astype(np.float64)
    spacing = gsd / 30.0
    e_dy, e_dx = np.gradient(dem, -spacing, spacing)  # first row is north: dy is negative
    normal = np.empty(dem.shape + (3,))
    normal[..., 0], normal[..., 1], normal[..., 2] = -e_dx, -e_dy, 1
    # the same summation order as matplotlib's _vector_magnitude, for bit-identical output
    normal /= np.sqrt(normal[..., 0:1] ** 2 + normal[..., 1:2] ** 2 + normal[..., 2:3] ** 2)
    intensity = normal.dot(_light_direction(azdeg, altdeg))
    low, high = intensity.min(), intensity.max()
    if high - low > 1e-6:  # matplotlib keeps a constant slope unscaled
        intensity = (intensity - low) / (high - low)
    grey = (255 * np.clip(intensity, 0.0, 1.0)).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def _light_direction(azdeg: float, altdeg: float) -> np.ndarray:
    az, alt = np.radians(90 - azdeg), np.radians(altdeg)
    return np.array([np.cos(az) * np.cos(alt), np.sin(az) * np.cos(alt), np.sin(alt)])
