"""`open_input`: which form an input is in (a stacked raster, per-band files, a SAFE product, a
STAC Item), opened by that form's module as one `SceneInput`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from copgen_rt.errors import SceneError
from copgen_rt.scenes.inputs.per_band import open_band_folder, open_band_list
from copgen_rt.scenes.inputs.safe import looks_like_safe, open_safe
from copgen_rt.scenes.inputs.scene_input import SceneInput, known_product
from copgen_rt.scenes.inputs.stac_item import open_stac_item
from copgen_rt.scenes.inputs.stacked import open_stacked


def is_multi_file(text: str) -> bool:
    """Is `text` one of the multi-file forms (else a single stacked raster)?"""
    if "," in text:
        return True
    path = Path(text)
    return path.is_dir() or path.suffix.lower() in (".zip", ".json")


def open_input(path: str | Path, product: str | None = None, bands: tuple[str, ...] | None = None,
               s1_units: str = "auto", lulc_values: str = "auto", s2_offset: float | None = None,
               date: dt.date | None = None) -> SceneInput:
    """Open and recognise one input: a stacked raster, a SAFE folder or .zip, a folder or
    comma-separated list of per-band files, a STAC Item. Every problem is a one-line SceneError."""
    text = str(path)
    if not is_multi_file(text):
        return open_stacked(Path(path), product, bands, s1_units, lulc_values, s2_offset, date)
    if bands is not None:
        raise SceneError(f"{text}: --bands is for stacked rasters; here the bands come from the metadata")
    if product is not None:
        product = known_product(product)
    if "," in text:
        return open_band_list(text, product, s1_units, lulc_values, s2_offset, date)
    path = Path(text)
    if not path.exists():
        raise SceneError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".json":
        return open_stac_item(path, product, s1_units, lulc_values, s2_offset, date)
    if path.suffix.lower() == ".zip" or looks_like_safe(path):
        return open_safe(path, product, s1_units, lulc_values, s2_offset, date)
    return open_band_folder(path, product, s1_units, lulc_values, s2_offset, date)
