"""Tiling plan: 1.92 km footprints over the scene frame, aligned across every native grid.

Tile origins are multiples of the stride (footprint - overlap) from the frame origin; the stride
and overlap are multiples of 60 m so that a tile starts on a pixel edge of the 10, 20, 30 and
60 m grids alike. The last row/column of tiles may reach past the scene: that part is padding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from copgen_rt.errors import SceneError
from copgen_rt.scenes.reader import SceneFrame

FOOTPRINT_M = 1920.0
ALIGN_M = 60.0  # least common multiple of the native resolutions (10, 20, 30, 60 m)


@dataclass(frozen=True)
class Tile:
    row: int
    col: int
    x_m: float  # offset of the tile's left edge from the frame's left edge, metres
    y_m: float  # offset of the tile's top edge from the frame's top edge, metres

    @property
    def key(self) -> str:
        return f"r{self.row:04d}c{self.col:04d}"

    def pixel_origin(self, gsd: float) -> tuple[int, int]:
        """(col, row) of the tile's top-left pixel on the native grid of `gsd` metres."""
        return round(self.x_m / gsd), round(self.y_m / gsd)


@dataclass(frozen=True)
class TilingPlan:
    frame: SceneFrame
    overlap_m: float
    n_rows: int
    n_cols: int
    footprint_m: float = FOOTPRINT_M

    @property
    def stride_m(self) -> float:
        return self.footprint_m - self.overlap_m

    @property
    def tiles(self) -> list[Tile]:
        """Row-major order: the blender relies on it to finalise rows early."""
        s = self.stride_m
        return [Tile(r, c, c * s, r * s) for r in range(self.n_rows) for c in range(self.n_cols)]

    def __len__(self) -> int:
        return self.n_rows * self.n_cols

    def final_rows(self, last_done: Tile, gsd: float, height: int) -> int:
        """Grid rows (at `gsd`) that no tile after `last_done` touches, tiles in row-major order."""
        done_row = last_done.row if last_done.col == self.n_cols - 1 else last_done.row - 1
        if done_row >= self.n_rows - 1:
            return height
        return max(0, math.floor((done_row + 1) * self.stride_m / gsd + 1e-6))

    def describe(self) -> str:
        f = self.frame
        return (f"{self.n_rows} x {self.n_cols} = {len(self)} tiles of {self.footprint_m / 1000:g} km, "
                f"overlap {self.overlap_m:g} m (stride {self.stride_m:g} m) over "
                f"{f.width_m / 1000:.2f} x {f.height_m / 1000:.2f} km")


def plan_tiles(frame: SceneFrame, overlap_m: float = 360.0, footprint_m: float = FOOTPRINT_M,
               align_m: float = ALIGN_M) -> TilingPlan:
    """Tiles of `footprint_m` (1.92 km for COP-GEN, 2.56 km of 10 m thumbnail pixels for
    COP-GEN-Beta) overlapping by `overlap_m`, a multiple of `align_m` so every grid stays aligned."""
    if overlap_m < 0 or overlap_m > footprint_m / 2:
        raise SceneError(f"overlap must be between 0 and {footprint_m / 2:g} m, got {overlap_m:g}")
    if abs(overlap_m / align_m - round(overlap_m / align_m)) > 1e-9:
        raise SceneError(f"overlap must be a multiple of {align_m:g} m (to align the native "
                         f"grids), got {overlap_m:g}")
    stride = footprint_m - overlap_m

    def count(extent: float) -> int:
        return 1 if extent <= footprint_m else math.ceil((extent - footprint_m) / stride - 1e-9) + 1

    return TilingPlan(frame, overlap_m, count(frame.height_m), count(frame.width_m), footprint_m)


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
