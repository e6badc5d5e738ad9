"""Per-band files (B02.tif, T33UUP_..._B05_20m.jp2, ...), as a folder or a comma-separated list,
as a SceneInput: each band from its description, its tags or its file name, never from the file
order; the files of one product only."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import rasterio

from copgen_rt.errors import SceneError
from copgen_rt.reading import check_raster_file
from copgen_rt.scenes.inputs.multi_file import multi_file_scene
from copgen_rt.scenes.inputs.scene_input import DNOffsets, SceneInput, band_of_name, canonical_band

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt")


def open_band_list(text: str, product: str | None, s1_units: str, lulc_values: str, s2_offset: float | None,
                   date: dt.date | None) -> SceneInput:
    """A comma-separated list of per-band files; the outputs are named after their common folder."""
    files = [Path(p.strip()) for p in text.split(",") if p.strip()]
    missing = [p for p in files if not p.is_file()]
    if missing:
        raise SceneError(f"{missing[0]}: no such file")
    folder = Path(os.path.commonpath([f.resolve() for f in files]))  # names the outputs
    return multi_file_scene(folder, "per-band files", _per_band(files, text), DNOffsets(), product, s1_units,
                            lulc_values, s2_offset, date)


def open_band_folder(path: Path, product: str | None, s1_units: str, lulc_values: str,
                     s2_offset: float | None, date: dt.date | None) -> SceneInput:
    """A folder of per-band files."""
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES and p.is_file())
    if not files:
        raise SceneError(f"{path}: a folder without raster files ({', '.join(RASTER_SUFFIXES)})")
    return multi_file_scene(path, "per-band files", _per_band(files, str(path)), DNOffsets(), product,
                            s1_units, lulc_values, s2_offset, date)


def _per_band(files: list[Path], what: str) -> list[tuple[str, str, int]]:
    """(band, file, index) of every band of a set of files; one product only."""
    sources: list[tuple[str, str, int]] = []
    products: dict[str, list[str]] = {}
    for f in files:
        check_raster_file(f, SceneError)
        with rasterio.open(f) as src:
            names = [canonical_band(d) for d in src.descriptions]
            tagged = canonical_band(src.tags().get("BAND_NAME", "") or src.tags().get("band", ""))
        from_name, rest = band_of_name(f.stem)
        if src.count > 1:
            if not all(names):
                raise SceneError(
                    f"{f}: {src.count} unnamed bands in a set of per-band files: name them "
                    "(band descriptions) or give the file on its own"
                )
            bands = [n for n in names if n]
        else:
            band = names[0] or tagged or from_name
            if band is None:
                raise SceneError(
                    f"{f}: cannot tell which band this file holds (no band description, no "
                    "BAND_NAME tag, no band such as B02 or VV in its name)"
                )
            bands = [band]
        products.setdefault(rest, []).extend(bands)
        for i, band in enumerate(bands, start=1):
            if any(band == b for b, _, _ in sources):
                raise SceneError(
                    f"{what}: band {band} is given twice ({Path(_href_of(sources, band)).name} and "
                    f"{f.name}): bands of two products?"
                )
            sources.append((band, str(f), i))
    if len(products) > 1:
        parts = "; ".join(f"{name or '(unnamed)'}: {' '.join(b)}" for name, b in products.items())
        raise SceneError(
            f"{what}: bands of {len(products)} different products in one set ({parts}); give "
            "one product per input"
        )
    return sources


def _href_of(sources: list[tuple[str, str, int]], band: str) -> str:
    return next(h for b, h, _ in sources if b == band)
