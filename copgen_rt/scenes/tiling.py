"""Tiling plan: 1.92 km footprints over the scene frame, aligned across every native grid.

Two tilings (`TILINGS`):
- "earth" (the default): tile origins lie on a lattice anchored to the CRS, at multiples of the
  stride (footprint - overlap) in CRS metres from the frame's 60 m grid phase (its left/top edge
  modulo 60 m: 0 for Sentinel-2 MGRS tiles and any grid on the 60 m lattice), as Major TOM
  anchors its cells to the Earth. Every tile that touches the frame is in the plan, so a pixel
  always gets all the tiles that cover it, and each tile is seeded from its CRS anchor
  (`Tile.anchor`): a sub-window, an overlapping scene or a chunk on the same lattice computes the
  same tiles, and so the same pixels wherever every tile covering them lies fully inside both.
- "scene": origins are multiples of the stride from the frame's own top-left corner, seeded by
  row and column (fewer tiles on small windows; outputs depend on the window).

The stride and overlap are multiples of 60 m so that a tile starts on a pixel edge of the 10, 20,
30 and 60 m grids alike. Tiles may reach past the scene on any side: that part is padding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from copgen_rt.errors import SceneError
from copgen_rt.scenes.reader import SceneFrame

FOOTPRINT_M = 1920.0
ALIGN_M = 60.0  # least common multiple of the native resolutions (10, 20, 30, 60 m)
TILINGS = ("earth", "scene")


@dataclass(frozen=True)
class Tile:
    row: int  # position in the plan (row-major order, sidecar keys)
    col: int
    x_m: float  # offset of the tile's left edge from the frame's left edge, metres (< 0: left of it)
    y_m: float  # offset of the tile's top edge from the frame's top edge, metres (< 0: above it)
    left: float = 0.0  # CRS coordinates of its top-left corner
    top: float = 0.0
    # what its noise is seeded from: the plan position ("scene"), or the CRS coordinates of its
    # top-left corner in millimetres, zigzag-encoded to non-negative integers ("earth")
    anchor: tuple[int, ...] = ()

    @property
    def key(self) -> str:
        return f"r{self.row:04d}c{self.col:04d}"

    def pixel_origin(self, gsd: float) -> tuple[int, int]:
        """(col, row) of the tile's top-left pixel on the native grid of `gsd` metres (negative:
        the tile starts before the grid)."""
        return round(self.x_m / gsd), round(self.y_m / gsd)


@dataclass(frozen=True)
class TilingPlan:
    frame: SceneFrame
    overlap_m: float
    n_rows: int
    n_cols: int
    footprint_m: float = FOOTPRINT_M
    tiling: str = "scene"
    # "earth": tile k of an axis starts at lattice + k * stride (x eastwards, -y southwards, CRS
    # metres); the plan's first column and row are the lattice's first_col and first_row
    lattice_x: float = 0.0
    lattice_y: float = 0.0
    first_col: int = 0
    first_row: int = 0

    @property
    def y0_m(self) -> float:
        """Offset of the first tile row from the frame's top edge (<= 0)."""
        if self.tiling == "scene":
            return 0.0
        return self.frame.top + self.lattice_y + self.first_row * self.stride_m

    @property
    def stride_m(self) -> float:
        return self.footprint_m - self.overlap_m

    @property
    def tiles(self) -> list[Tile]:
        """Row-major order: the blender relies on it to finalise rows early."""
        s, f = self.stride_m, self.frame
        tiles = []
        for r in range(self.n_rows):
            for c in range(self.n_cols):
                if self.tiling == "earth":  # CRS corners from the lattice alone: the same in every window
                    left = self.lattice_x + (self.first_col + c) * s
                    top = -(self.lattice_y + (self.first_row + r) * s)
                    anchor = (_zigzag(left), _zigzag(top))
                    tiles.append(Tile(r, c, left - f.left, f.top - top, left, top, anchor))
                else:
                    x_m, y_m = c * s, r * s
                    tiles.append(Tile(r, c, x_m, y_m, f.left + x_m, f.top - y_m, (r, c)))
        return tiles

    def __len__(self) -> int:
        return self.n_rows * self.n_cols

    def final_rows(self, last_done: Tile, gsd: float, height: int) -> int:
        """Grid rows (at `gsd`) that no tile after `last_done` touches, tiles in row-major order."""
        done_row = last_done.row if last_done.col == self.n_cols - 1 else last_done.row - 1
        if done_row >= self.n_rows - 1:
            return height
        return max(0, math.floor((self.y0_m + (done_row + 1) * self.stride_m) / gsd + 1e-6))

    def describe(self) -> str:
        f = self.frame
        return (f"{self.n_rows} x {self.n_cols} = {len(self)} tiles of {self.footprint_m / 1000:g} km, "
                f"overlap {self.overlap_m:g} m (stride {self.stride_m:g} m, anchored to the "
                f"{'CRS' if self.tiling == 'earth' else 'scene corner'}) over "
                f"{f.width_m / 1000:.2f} x {f.height_m / 1000:.2f} km")


def plan_tiles(frame: SceneFrame, overlap_m: float = 360.0, footprint_m: float = FOOTPRINT_M,
               align_m: float = ALIGN_M, tiling: str = "earth") -> TilingPlan:
    """Tiles of `footprint_m` (1.92 km for COP-GEN, 2.56 km of 10 m thumbnail pixels for
    COP-GEN-Beta) overlapping by `overlap_m`, a multiple of `align_m` so every grid stays aligned,
    anchored as `tiling` says (module docstring)."""
    if tiling not in TILINGS:
        raise SceneError(f"tiling must be one of {', '.join(TILINGS)}, got {tiling!r}")
    if overlap_m < 0 or overlap_m > footprint_m / 2:
        raise SceneError(f"overlap must be between 0 and {footprint_m / 2:g} m, got {overlap_m:g}")
    if abs(overlap_m / align_m - round(overlap_m / align_m)) > 1e-9:
        raise SceneError(f"overlap must be a multiple of {align_m:g} m (to align the native "
                         f"grids), got {overlap_m:g}")
    stride = footprint_m - overlap_m

    if tiling == "scene":
        def count(extent: float) -> int:
            return 1 if extent <= footprint_m else math.ceil((extent - footprint_m) / stride - 1e-9) + 1

        return TilingPlan(frame, overlap_m, count(frame.height_m), count(frame.width_m), footprint_m)

    def span(start: float, extent: float) -> tuple[float, int, int]:
        """The lattice along an axis whose coordinate grows with the offset (x from the left, -y
        from the top): its phase, and the first and number of its tiles touching [start, start + extent)."""
        # the frame's grid phase (to the millimetre, so that windows of one grid agree exactly):
        # the lattice keeps every native grid of the frame aligned
        phase = round(start % align_m, 3) % align_m
        first = math.floor((start - footprint_m - phase) / stride + 1e-9) + 1
        last = math.ceil((start + extent - phase) / stride - 1e-9) - 1
        return phase, first, last - first + 1

    lattice_x, first_col, n_cols = span(frame.left, frame.width_m)
    lattice_y, first_row, n_rows = span(-frame.top, frame.height_m)
    return TilingPlan(frame, overlap_m, n_rows, n_cols, footprint_m, tiling, lattice_x, lattice_y,
                      first_col, first_row)


def _zigzag(metres: float) -> int:
    """A CRS coordinate as a non-negative integer (millimetres, zigzag), for seeding."""
    mm = round(metres * 1000)
    return 2 * mm if mm >= 0 else -2 * mm - 1


def blend_ramp(size: int, overlap_px: int, floor: float = 1e-3) -> np.ndarray:
    """1-D weights: raised-cosine rise over `overlap_px` at both ends, 1 in the middle.

    The floor keeps weights positive where a single tile covers a pixel (scene edges), so
    normalising by the summed weights returns that tile's value exactly.
    """
    w = np.ones(size, np.float64)
    if overlap_px > 0:
        x = (np.arange(overlap_px) + 0.5) / overlap_px
        ramp = 0.5 - 0.5 * np.cos(np.pi * x)
        w[:overlap_px] = ramp
        w[size - overlap_px:] = np.minimum(w[size - overlap_px:], ramp[::-1])
    return np.maximum(w, floor).astype(np.float32)


def blend_weights(size: int, overlap_px: int) -> np.ndarray:
    ramp = blend_ramp(size, overlap_px)
    return np.outer(ramp, ramp)
