"""Gap filling of whole scenes: what is filled (the plan side) and the compositing of the blended
generated rows with the input (the output side).

The modalities read from SCENE are the targets. A pixel of a target is a gap where the mask
says so (a mask raster, the SCL classes of an L2A product, or nothing more with `--nodata`) and
wherever the scene has no data. Tiles without a gap pixel are copied; the others are generated
with the valid pixels known (RePaint replacement in the sampler), and from the other conditions
alone where nothing is valid. The generated values are blended across tiles as in `infer`, then
composited row band by row band: valid input pixels bit for bit, generated ones in the gap, a
seam `feather` pixels wide (`composite.composite`). A row's seam depends on the rows within
`feather` of it, so the compositor runs `feather` rows behind the blender.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from copgen_rt.errors import SceneError
from copgen_rt.scenes.composite import composite
from copgen_rt.scenes.encoding import GENERATED, KEPT, S2_NODATA, StoredType, encoding, to_file_units
from copgen_rt.scenes.inputs.raster_checks import reading
from copgen_rt.scenes.inputs.scene_input import SceneInput
from copgen_rt.scenes.masks import DEFAULT_SCL_GAP_CLASSES, Grid, mask_from_raster, mask_from_scl
from copgen_rt.scenes.reader import ModalityReader, SceneFrame
from copgen_rt.specs import Classes, LogRange, Modality, Reflectance


@dataclass(frozen=True)
class FillOptions:
    """What `copgen-rt fill` fills: `mask` (non-zero = gap) or `scl` (with `scl_classes` as gaps),
    or neither: the scene's own nodata only (always a gap, whatever the mask says)."""

    mask: Path | None = None
    scl: Path | None = None
    scl_classes: tuple[int, ...] = DEFAULT_SCL_GAP_CLASSES
    feather: int = 2  # seam width, in pixels of each output's own grid
    jumps: int = 0  # RePaint resampling (docs/gapfill.md); only with the singlestep solvers
    jump_length: int = 1

    def __post_init__(self) -> None:
        if self.mask is not None and self.scl is not None:
            raise SceneError("give a mask raster or an SCL band, not both")
        if self.feather < 0 or self.jumps < 0 or self.jump_length < 1:
            raise SceneError("feather and jumps must be >= 0, jump length >= 1")

    def describe(self) -> str:
        if self.mask is not None:
            source = f"mask {self.mask.name} (non-zero or its nodata = gap)"
        elif self.scl is not None:
            source = f"SCL {self.scl.name} (classes {','.join(map(str, self.scl_classes))} = gap)"
        else:
            source = "the scene's nodata"
        jumps = f", RePaint jumps {self.jumps} x {self.jump_length} steps" if self.jumps else ""
        return f"{source}, plus the scene's nodata; seam {self.feather} px{jumps}"


def gap_masks(options: FillOptions, frame: SceneFrame,
              targets: list[Modality]) -> dict[str, np.ndarray | None]:
    """Each target's mask on its native grid, whole (1 byte per pixel: 120 MB for a 10980^2 10 m
    grid), or None where only the scene's nodata is filled."""
    masks: dict[str, np.ndarray | None] = {}
    for m in targets:
        grid = Grid(frame.crs, *frame.grid(m.image_gsd))
        if options.mask is not None:
            masks[m.name] = mask_from_raster(options.mask, grid)
        elif options.scl is not None:
            masks[m.name] = mask_from_scl(options.scl, grid, options.scl_classes)
        else:
            masks[m.name] = None
    return masks


def stored_type(scene: SceneInput, m: Modality, frame: SceneFrame) -> StoredType | None:
    """The integer type the filled `m` keeps from `scene`, or None (float32, as `infer` writes).
    Kept where the input values fit it: every band of `m` stored in one integer type, on `m`'s
    native grid (resampled values are not the input's), in the units the output holds, with a
    no-data code (declared by the files, else 0 for S2, ESA's no-data value)."""
    p = m.processing
    if isinstance(p, Classes) or (isinstance(p, LogRange) and p.log == "db" and scene.units != "db"):
        return None  # class codes are uint8 already; linear backscatter is written in dB
    grid = frame.grid(m.image_gsd)[0]
    dtypes, nodatas = set(), set()
    for href in {scene.band_source(band)[0] for band in m.bands or scene.bands[:1]}:
        with reading(Path(href)), rasterio.open(href) as src:
            if src.crs != frame.crs or not _same_pixels(src.transform, grid):
                return None
            dtypes.update(src.dtypes)
            nodatas.add(src.nodata if src.nodata is not None else scene.nodata)
    if len(dtypes) != 1 or len(nodatas) != 1 or not np.issubdtype(np.dtype(next(iter(dtypes))), np.integer):
        return None
    dtype, nodata = dtypes.pop(), nodatas.pop()
    if nodata is None and isinstance(p, Reflectance):
        nodata = S2_NODATA
    info = np.iinfo(dtype)
    if nodata is None or nodata != int(nodata) or not info.min <= nodata <= info.max:
        return None
    return StoredType(dtype, int(nodata), scene.dn_offset if isinstance(p, Reflectance) else 0.0)


def _same_pixels(transform: Affine, grid: Affine) -> bool:
    """Are a file's pixels those of `grid` (same size, north-up, whole pixels apart)?"""
    def whole(x: float) -> bool:
        return abs(x - round(x)) < 1e-6

    t = transform
    same_size = math.isclose(t.a, grid.a, rel_tol=1e-9) and math.isclose(t.e, grid.e, rel_tol=1e-9)
    return (t.b == t.d == 0 and same_size and whole((t.c - grid.c) / grid.a)
            and whole((t.f - grid.f) / grid.e))


class StripSource:
    """A target's input rows in file units and its gap, full width; the last strip is kept, since
    every output of one modality asks for the same rows in turn."""

    def __init__(self, reader: ModalityReader, mask: np.ndarray | None):
        self.reader, self.mask = reader, mask
        self._last: tuple[tuple[int, int], tuple[np.ndarray, np.ndarray]] | None = None

    def read(self, r0: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
        """(C, h, W) input values as the outputs store them, (h, W) gap."""
        if self._last is None or self._last[0] != (r0, r1):
            data, valid = self.reader.read(0, r0, self.reader.width, r1 - r0)
            gap = ~valid if self.mask is None else ~valid | self.mask[r0:r1]
            self._last = (r0, r1), (to_file_units(self.reader.modality, data), gap)
        return self._last[1]

    def close(self) -> None:
        self.reader.close()


def combine(kind: str, original: np.ndarray, generated: np.ndarray, gap: np.ndarray, feather: int,
            modality: Modality) -> np.ndarray:
    """One output's rows: `generated` is the blended rows as `infer` would write them (NaN, or
    the nodata code, where nothing was generated)."""
    if kind == "mean":
        classes = isinstance(modality.processing, Classes)
        return composite(original, generated, gap, 0 if classes else feather)
    if kind == "generated":
        nodata = encoding(modality, kind).nodata
        return np.where(gap, np.where(np.isfinite(generated[:1]), GENERATED, nodata), KEPT).astype(np.uint8)
    return np.where(gap[None], generated, np.nan)  # std, confidence: the input is not uncertain


class RowCompositor:
    """Composites an output's rows as the blender emits them, `feather` rows behind it."""

    def __init__(self, kind: str, modality: Modality, strips: StripSource, feather: int, height: int,
                 write: Callable[[int, np.ndarray], None]):
        self.kind, self.modality, self.strips, self.write = kind, modality, strips, write
        self.feather, self.height = feather, height
        self.done = 0  # rows written
        self.start = 0  # grid row of buffer row 0
        self.buffer: np.ndarray | None = None
        self.generated_pixels = 0

    def push(self, row: int, generated: np.ndarray) -> None:
        """Rows [row, row + h) of blended values (C, h, W), in order."""
        if row != self.start + (0 if self.buffer is None else self.buffer.shape[1]):
            raise RuntimeError(f"rows arrived out of order at row {row}")
        self.buffer = generated if self.buffer is None else np.concatenate([self.buffer, generated], axis=1)
        end = row + generated.shape[1]
        self._composite_upto(end if end >= self.height else end - self.feather)

    def _composite_upto(self, upto: int) -> None:
        if upto <= self.done or self.buffer is None:
            return
        lo = max(self.done - self.feather, self.start)
        hi = min(upto + self.feather, self.start + self.buffer.shape[1])
        original, gap = self.strips.read(lo, hi)
        generated = self.buffer[:, lo - self.start:hi - self.start]
        rows = combine(self.kind, original, generated, gap, self.feather, self.modality)
        if self.kind == "generated":
            self.generated_pixels += int((rows[0, self.done - lo:upto - lo] == GENERATED).sum())
        self.write(self.done, rows[:, self.done - lo:upto - lo])
        keep = max(upto - self.feather, self.start)
        self.buffer, self.start = self.buffer[:, keep - self.start:], keep
        self.done = upto
