"""A row of labelled 224 px panels with a caption: the pictures of docs/cli.md (`demo_figure.py`,
`fill_figure.py`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def panel_row(panels: list[tuple[str, np.ndarray]], caption: str, out: Path) -> Path:
    size, pad, top = 224, 8, 36
    canvas = Image.new("RGB", (len(panels) * (size + pad) + pad, size + top + 30), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (label, picture) in enumerate(panels):
        x = pad + i * (size + pad)
        canvas.paste(Image.fromarray(picture).resize((size, size), Image.NEAREST), (x, top))
        draw.text((x, 12), label, fill="black")
    draw.text((pad, size + top + 8), caption, fill="#b00000")
    out.parent.mkdir(exist_ok=True)
    canvas.save(out)
    return out
