"""Make docs/images/fill.png: `copgen-rt fill` on the bundled chip under a synthetic cloud.

    python docs/fill_figure.py

The demo model has RANDOM weights: the filled pixels show what the runtime does (valid pixels
kept bit for bit, the gap generated, a feathered seam, the `generated` raster), not a
prediction of what lies under the cloud. With real weights, run the same command with --weights.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from figures import panel_row

from copgen_rt import thumbnails
from copgen_rt.demo import default_scene

S1 = Path(__file__).parents[1] / "tests" / "data" / "majortom" / "S1RTC_433D_629L_3_1.tif"


def main() -> None:
    out = Path(__file__).parent / "images" / "fill.png"
    chip = default_scene()
    with rasterio.open(chip) as src:
        y, x = np.mgrid[0:src.height, 0:src.width]
        cloud = (y - 95) ** 2 / 55**2 + (x - 115) ** 2 / 75**2 < 1
        cloud |= (y - 170) ** 2 + (x - 50) ** 2 < 25**2
        profile = dict(driver="GTiff", width=src.width, height=src.height, count=1, dtype="uint8",
                       crs=src.crs, transform=src.transform)
        rgb = src.read([4, 3, 2])
    with tempfile.TemporaryDirectory() as tmp:
        mask = Path(tmp) / "clouds.tif"
        with rasterio.open(mask, "w", **profile) as dst:
            dst.write(cloud.astype(np.uint8)[None])
        subprocess.run([sys.executable, "-m", "copgen_rt", "fill", chip, "--mask", str(mask),
                        "--cond", f"S1RTC={S1}", "--out", tmp, "-q", "--dtype", "fp32"], check=True)
        stem = f"{Path(chip).stem}_filled_S2L2A_B04_B03_B02_B08"
        with rasterio.open(Path(tmp) / f"{stem}.tif") as src:  # bands B04 B03 B02 B08
            filled = src.read([1, 2, 3])
        with rasterio.open(Path(tmp) / f"{stem}_generated.tif") as src:
            generated = src.read(1) == 1
    cloudy = thumbnails.s2_true_colour(*rgb).copy()
    cloudy[cloud] = 255
    tiles = [("input: S2 L2A (real chip)", thumbnails.s2_true_colour(*rgb)),
             ("input under a synthetic cloud", cloudy),
             ("filled (S1 + the valid pixels)", thumbnails.s2_true_colour(*filled)),
             ("generated pixels (white)", np.repeat(generated.astype(np.uint8)[..., None] * 255, 3, axis=2))]
    panel_row(tiles, "copgen-rt fill on the bundled chip with the bundled demo model: RANDOM WEIGHTS, "
              "the filled pixels are synthetic, not predictions", out)
    print(out)


if __name__ == "__main__":
    main()
