"""Pixel-space compositing of a gap-filled tile: valid input pixels kept, generated ones in the gap.

`tile_action` says what a tile needs: nothing masked -> "copy" the input; nothing valid ->
"generate" from the other conditions alone; otherwise "fill" (generate with the valid pixels
known). `composite` joins input and generated values: outside the gap the input is returned
bit for bit; inside it the generated values, with a feathered seam of `feather` pixels just
inside the gap that removes the step between them (see `seam_offset`).

Arrays are (C, H, W) values with an (H, W) bool gap mask (True = to be generated). The seam of a
pixel depends only on the mask and values within `feather` pixels of it, so a tile composited on
a window padded by `feather` pixels (then cropped) agrees with its neighbours at their borders.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

TileAction = Literal["copy", "fill", "generate"]


def tile_action(gap: np.ndarray) -> TileAction:
    """"copy" when no pixel is masked, "generate" when none is valid, else "fill"."""
    if not gap.any():
        return "copy"
    return "generate" if gap.all() else "fill"


def _spread(values: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One step of growth: unknown pixels next to known ones (8-neighbourhood) take the mean of
    those neighbours. values (C, H, W), known (H, W) -> new values, new known."""
    c, h, w = values.shape
    padded = np.zeros((c, h + 2, w + 2), np.float64)
    weight = np.zeros((h + 2, w + 2), np.float64)
    padded[:, 1:-1, 1:-1] = np.where(known, values, 0.0)
    weight[1:-1, 1:-1] = known
    sums = np.zeros((c, h, w), np.float64)
    counts = np.zeros((h, w), np.float64)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            sums += padded[:, dy:dy + h, dx:dx + w]
            counts += weight[dy:dy + h, dx:dx + w]
    grow = ~known & (counts > 0)
    out = np.where(grow, sums / np.maximum(counts, 1.0), values)
    return out, known | grow


def seam_offset(original: np.ndarray, generated: np.ndarray, gap: np.ndarray, feather: int) -> np.ndarray:
    """(C, H, W) correction added to the generated values inside the gap.

    The step at the gap's edge is d = original - generated on the valid pixels. It is carried
    into the gap one pixel ring at a time (each ring takes the mean of its already-reached
    neighbours), for `feather` rings, and faded linearly: ring k (k = 1 at the edge) gets
    d * (1 - k / (feather + 1)). Deeper pixels, valid pixels and gap pixels with no valid pixel
    within `feather` pixels get 0: there the generated value stands alone. A valid pixel without
    a generated value (NaN: a scene's copied tile) gives no step.
    """
    step = original.astype(np.float64) - generated.astype(np.float64)
    known = ~gap & np.isfinite(step).all(axis=0)
    offset = np.zeros_like(step)
    for ring in range(1, feather + 1):
        step, reached = _spread(step, known)
        new = reached & ~known
        offset[:, new] = step[:, new] * (1.0 - ring / (feather + 1))
        known = reached
    return offset


def composite(original: np.ndarray, generated: np.ndarray, gap: np.ndarray, feather: int = 0) -> np.ndarray:
    """(C, H, W): `original` where the gap mask is False (bit for bit: the same values, in the
    common dtype of both inputs, e.g. uint16 DNs in float32 are exact below 2^24), the generated
    values in the gap, feathered over `feather` pixels just inside it.

    Class rasters (integer generated values) take feather=0: blending class codes is meaningless.
    """
    if original.shape != generated.shape or original.ndim != 3 or gap.shape != original.shape[1:]:
        raise ValueError(f"composite: original {original.shape}, generated {generated.shape} and gap "
                         f"{gap.shape} must be (C, H, W), (C, H, W) and (H, W)")
    if isinstance(feather, bool) or not isinstance(feather, (int, np.integer)) or feather < 0:
        raise ValueError(f"feather must be a whole number of pixels >= 0, got {feather!r}")
    if feather and not np.issubdtype(generated.dtype, np.floating):
        raise ValueError("feather must be 0 for class rasters (integer generated values)")
    dtype = np.result_type(original.dtype, generated.dtype)
    filled = generated.astype(dtype)
    if feather:
        filled = (generated + seam_offset(original, generated, gap, feather)).astype(dtype)
    return np.where(gap, filled, original.astype(dtype))
