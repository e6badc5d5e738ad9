"""Make docs/images/beta.png: COP-GEN-Beta on real Major TOM chips made into thumbnails.

    python docs/beta_figure.py

Two runs of `copgen-rt infer --model copgen-beta`-style jobs on the real chips of sub-cell
433D_629L (tests/data/majortom): S2 L1C -> the other three modalities, and S1 RTC + DEM -> both
S2 levels. The model is the tiny COP-GEN-Beta layout of tests/fixtures with fresh RANDOM weights
(`make-random-weights`): the generated panels show what the runtime writes (thumbnail recipes,
georeferenced blending), not predictions. With the released weights, pass `--weights DIR`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from copgen_rt.scenes.thumbnail_scene import THUMBNAIL_GSD, ThumbnailReader

ROOT = Path(__file__).resolve().parent.parent
CHIPS = ROOT / "tests" / "data" / "majortom"
TINY_BETA = ROOT / "tests" / "fixtures" / "copgen-beta-tiny" / "spec.json"
CELL = "433D_629L_3_1"
ROWS = [({"s2_l1c": "S2L1C"}, ["s1_rtc", "dem", "s2_l2a"]),
        ({"s1_rtc": "S1RTC", "dem": "DEM"}, ["s2_l2a", "s2_l1c"])]


def copgen_rt(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "copgen_rt", *args], check=True)


def input_thumbnail(product: str) -> np.ndarray:
    """The thumbnail the model is conditioned on: the Major TOM recipe over the whole chip."""
    reader = ThumbnailReader(CHIPS / f"{product}_{CELL}.tif", product)
    try:
        _, width, height = reader.frame.grid(THUMBNAIL_GSD)
        picture, _ = reader.read(0, 0, min(width, height))
    finally:
        reader.close()
    return picture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="COP-GEN-Beta weights (default: random tiny weights)")
    args = parser.parse_args()
    out = ROOT / "docs" / "images" / "beta.png"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = ["--model", "copgen-beta", "--weights", args.weights] if args.weights else \
            ["--spec-json", str(TINY_BETA), "--weights", f"{tmp}/weights"]
        if not args.weights:
            copgen_rt("make-random-weights", "--spec-json", str(TINY_BETA), "--out", f"{tmp}/weights")
        for i, (conditions, generated) in enumerate(ROWS):
            cond_args = [a for name, product in conditions.items()
                         for a in ("--cond", f"{name}={CHIPS / f'{product}_{CELL}.tif'}")]
            copgen_rt("infer", *model, *cond_args, "--generate", ",".join(generated),
                      "--out", f"{tmp}/run{i}", "--quicklook", "-q")
            stem = f"{next(iter(conditions.values()))}_{CELL}"
            panels = [(f"input {name} (real)", input_thumbnail(product))
                      for name, product in conditions.items()]
            panels += [(f"generated {name}",
                        np.asarray(Image.open(f"{tmp}/run{i}/{stem}_{name}.png").convert("RGB")))
                       for name in generated]
            rows.append(panels)
    size, pad, top = 224, 8, 24
    width = max(len(r) for r in rows) * (size + pad) + pad
    canvas = Image.new("RGB", (width, len(rows) * (size + top + pad) + 34), "white")
    draw = ImageDraw.Draw(canvas)
    for r, panels in enumerate(rows):
        y = r * (size + top + pad)
        for c, (label, picture) in enumerate(panels):
            x = pad + c * (size + pad)
            canvas.paste(Image.fromarray(picture).resize((size, size), Image.NEAREST), (x, y + top))
            draw.text((x, y + 6), label, fill="black")
    note = "RANDOM WEIGHTS (tiny COP-GEN-Beta layout): generated panels are synthetic, not predictions"
    draw.text((pad, canvas.height - 24), note if not args.weights else "COP-GEN-Beta, released weights",
              fill="#b00000")
    out.parent.mkdir(exist_ok=True)
    canvas.save(out)
    print(out)


if __name__ == "__main__":
    main()
