"""Make docs/images/demo.png: the bundled chip and what the bundled demo model generates from it.

    python docs/demo_figure.py

The demo model has RANDOM weights: the generated panels show the runtime's outputs (georeferenced,
blended, rendered with the Major TOM recipes), not predictions. With real weights, run the same
command with --weights.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from figures import panel_row
from PIL import Image

from copgen_rt import thumbnails
from copgen_rt.demo import default_scene

PANELS = [("DEM_DEM", "DEM (hillshade)"), ("S1RTC_vh_vv", "S1 RTC (false colour)"),
          ("LULC_LULC", "land cover"), ("S2L1C_cloud_mask", "cloud mask")]


def main() -> None:
    out = Path(__file__).parent / "images" / "demo.png"
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "copgen_rt", "infer", "--out", tmp, "--quicklook", "-q",
                        "--dtype", "fp32"], check=True)
        with rasterio.open(default_scene()) as src:
            b = src.read([4, 3, 2])
        tiles = [("input: S2 L2A (real chip)", thumbnails.s2_true_colour(*b))]
        stem = Path(default_scene()).stem
        for name, label in PANELS:
            tiles.append((f"generated {label}", np.asarray(Image.open(Path(tmp) / f"{stem}_{name}.png"))))
    panel_row(tiles, "copgen-rt infer on the bundled chip with the bundled demo model: RANDOM WEIGHTS, "
              "outputs are synthetic, not predictions", out)
    print(out)


if __name__ == "__main__":
    main()
