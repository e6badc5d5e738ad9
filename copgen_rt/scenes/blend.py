"""Blending tile outputs on a native grid with smooth weights, in bounded memory.

Tiles arrive in row-major order. A `RowBlender` keeps weighted sums only for the band of rows
that unfinished tiles can still touch and hands every finished row band to `emit`, so memory
grows with the scene width, never with its area.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Emit = Callable[[int, np.ndarray, np.ndarray], None]  # (first row, sums (C, h, W), weights (h, W))


class RowBlender:
    def __init__(self, channels: int, width: int, height: int, emit: Emit):
        self.channels, self.width, self.height, self.emit = channels, width, height, emit
        self.y0 = 0  # grid row of buffer row 0
        self.sums = np.zeros((channels, 0, width), np.float64)
        self.weights = np.zeros((0, width), np.float64)

    def add(self, col: int, row: int, values: np.ndarray, weights: np.ndarray) -> None:
        """Accumulate a (C, h, w) tile whose top-left pixel is (col, row), clipped to the grid."""
        _, h, w = values.shape
        r0, r1 = max(row, self.y0), min(row + h, self.height)
        c0, c1 = max(col, 0), min(col + w, self.width)
        if r1 <= r0 or c1 <= c0:
            return
        if max(row, 0) < self.y0:  # tiles may start above the grid (row < 0) before any row is out
            raise RuntimeError(f"tile at row {row} arrived after rows up to {self.y0} were emitted")
        self._grow(r1)
        tile = (slice(r0 - row, r1 - row), slice(c0 - col, c1 - col))
        dest = (slice(r0 - self.y0, r1 - self.y0), slice(c0, c1))
        wt = weights[tile].astype(np.float64)
        self.sums[(slice(None), *dest)] += values[(slice(None), *tile)] * wt
        self.weights[dest] += wt

    def _grow(self, upto: int) -> None:
        extra = upto - self.y0 - self.weights.shape[0]
        if extra > 0:
            self.sums = np.concatenate([self.sums, np.zeros((self.channels, extra, self.width))], axis=1)
            self.weights = np.concatenate([self.weights, np.zeros((extra, self.width))], axis=0)

    def flush(self, upto: int) -> None:
        """Emit rows [y0, upto): no later tile may touch them."""
        upto = min(upto, self.height)
        if upto <= self.y0:
            return
        self._grow(upto)
        n = upto - self.y0
        self.emit(self.y0, self.sums[:, :n], self.weights[:n])
        self.sums, self.weights = self.sums[:, n:].copy(), self.weights[n:].copy()
        self.y0 = upto

    @property
    def buffered_rows(self) -> int:
        return self.weights.shape[0]
