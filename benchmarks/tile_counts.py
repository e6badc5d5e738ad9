"""Tiles per window: the Earth-anchored tiling (the default) against the scene-anchored one.

The scene-anchored count depends only on the window's size; the Earth-anchored one also on where
the window lies on the CRS lattice, so it is given over every placement of the window's corner
within one stride (every 60 m in x, every 240 m in y: min, mean, max), and at an MGRS tile corner
(lattice phase 0).
Writes benchmarks/results/tile-counts.{json,md} (pure arithmetic: no CPU dependence).

    python benchmarks/tile_counts.py
"""

from __future__ import annotations

import json
from pathlib import Path

from rasterio.crs import CRS

from copgen_rt.scenes.reader import SceneFrame
from copgen_rt.scenes.tiling import plan_tiles

WINDOWS = {"chip (224 px)": 224, "scene (1000 px)": 1000, "S2 tile (10980 px)": 10980}
GSD = 10.0
MGRS_CORNER = (600000.0, 5000040.0)  # upper-left corner of an MGRS tile (UTM metres)


def counts(size_px: int, overlap_m: float = 360.0) -> dict[str, float]:
    side = size_px * GSD
    frame = lambda left, top: SceneFrame(CRS.from_epsg(32633), left, top, side, side)  # noqa: E731
    scene = len(plan_tiles(frame(*MGRS_CORNER), overlap_m, tiling="scene"))
    stride = plan_tiles(frame(*MGRS_CORNER), overlap_m).stride_m
    shifts = [k * 60.0 for k in range(int(stride // 60))]  # the lattice phase is kept: 60 m steps
    earth = [len(plan_tiles(frame(MGRS_CORNER[0] + dx, MGRS_CORNER[1] - dy), overlap_m))
             for dx in shifts for dy in shifts[:: max(1, len(shifts) // 6)]]
    corner = len(plan_tiles(frame(*MGRS_CORNER), overlap_m))
    return {"scene": scene, "earth_at_mgrs_corner": corner, "earth_min": min(earth),
            "earth_mean": sum(earth) / len(earth), "earth_max": max(earth),
            "ratio_mean": sum(earth) / len(earth) / scene}


def main() -> None:
    results = {name: counts(px) for name, px in WINDOWS.items()}
    out = Path(__file__).parent / "results"
    (out / "tile-counts.json").write_text(json.dumps(
        {"overlap_m": 360.0, "footprint_m": 1920.0, "windows": results}, indent=1) + "\n")
    lines = ["# Tiles per window: Earth-anchored (default) vs scene-anchored tiling",
             "", "1.92 km tiles, 360 m overlap (stride 1560 m); Earth-anchored counts over the window's "
             "placements on the lattice.", "",
             "| window | scene-anchored | earth, at an MGRS corner | earth min | earth mean | earth max "
             "| mean ratio |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['scene']} | {r['earth_at_mgrs_corner']} | {r['earth_min']} | "
                     f"{r['earth_mean']:.1f} | {r['earth_max']} | {r['ratio_mean']:.2f} |")
    (out / "tile-counts.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
