"""Sentinel-2 L1C/L2A SAFE products, as a folder or a .zip, as a SceneInput: the bands (finest
resolution of each), the processing baseline, the add offsets, the quantification value, nodata
and the date come from the MTD XML."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

from copgen_rt.errors import SceneError
from copgen_rt.scenes.inputs.multi_file import multi_file_scene
from copgen_rt.scenes.inputs.scene_input import (
    DNOffsets,
    SceneInput,
    band_of_name,
    date_from_tags,
    resolution_of_name,
)
from copgen_rt.specs import PRODUCTS

MTD_NAMES = ("MTD_MSIL2A.xml", "MTD_MSIL1C.xml")


def looks_like_safe(path: Path) -> bool:
    """Is the folder `path` a SAFE product (by its name, its GRANULE folder or its MTD XML)?"""
    return (
        path.suffix.upper() == ".SAFE"
        or (path / "GRANULE").is_dir()
        or any((path / n).exists() for n in MTD_NAMES)
    )


def open_safe(path: Path, product: str | None, s1_units: str, lulc_values: str, s2_offset: float | None,
              date: dt.date | None) -> SceneInput:
    """A SAFE folder or zip; `product` and `date` override what its MTD XML says."""
    sources, offsets, found_product, when, nodata = _safe(path)
    form = "SAFE zip" if path.suffix.lower() == ".zip" else "SAFE"
    return multi_file_scene(path, form, sources, offsets, product or found_product, s1_units, lulc_values,
                            s2_offset, date or when, nodata)


def _local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _safe(path: Path) -> tuple[list[tuple[str, str, int]], DNOffsets, str, dt.date | None, float | None]:
    """Bands (finest resolution of each), offsets, product and date of a SAFE folder or zip."""
    if path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as z:
                members = z.namelist()
                mtd = next((m for m in members if Path(m).name in MTD_NAMES and m.count("/") <= 1), None)
                xml = z.read(mtd) if mtd else None
        except (zipfile.BadZipFile, OSError) as e:
            raise SceneError(f"{path}: not a readable zip ({e})") from None
        root = f"/vsizip/{path.resolve()}/{Path(mtd).parent.as_posix()}" if mtd else ""
        root = root.rstrip("/.")
    else:
        mtd = next((n for n in MTD_NAMES if (path / n).is_file()), None)
        xml = (path / mtd).read_bytes() if mtd else None
        root = str(path.resolve())
    if xml is None:
        raise SceneError(
            f"{path}: a SAFE product without its MTD_MSIL1C.xml / MTD_MSIL2A.xml: the bands, "
            "baseline and offsets cannot be known"
        )
    try:
        tree = ET.fromstring(xml)
    except ET.ParseError as e:
        raise SceneError(f"{path}: {mtd} is not valid XML ({e})") from None
    product = "S2L2A" if Path(str(mtd)).name == "MTD_MSIL2A.xml" else "S2L1C"
    found: dict[str, tuple[int, str]] = {}  # band -> (resolution m, href)
    offsets_by_id: dict[str, float] = {}
    text = {}
    special, nodata = "", None
    for el in tree.iter():
        name = _local_name(el.tag)
        value = (el.text or "").strip()
        if name == "IMAGE_FILE":
            band, rest = band_of_name(Path(value).name)
            res = resolution_of_name(Path(value).name)
            if band is None or band not in PRODUCTS[product]:
                continue  # TCI, AOT, WVP, SCL: not inputs of the model
            href = f"{root}/{value}.jp2"
            if band not in found or res < found[band][0]:
                found[band] = (res, href)
        elif name in ("BOA_ADD_OFFSET", "RADIO_ADD_OFFSET"):
            offsets_by_id[el.get("band_id", "")] = float(value)
        elif name in (
            "PROCESSING_BASELINE",
            "BOA_QUANTIFICATION_VALUE",
            "QUANTIFICATION_VALUE",
            "PRODUCT_START_TIME",
        ):
            text[name] = value
        elif name == "SPECIAL_VALUE_TEXT":
            special = value
        elif name == "SPECIAL_VALUE_INDEX" and special == "NODATA":
            nodata = float(value)
    missing = [b for b in PRODUCTS[product] if b not in found]
    if missing:
        raise SceneError(f"{path}: {mtd} lists no image file for band(s) {' '.join(missing)}")
    for _, href in found.values():
        if not href.startswith("/vsizip/") and not Path(href).is_file():
            raise SceneError(f"{path}: {mtd} names {Path(href).name}, which is missing")
    distinct = set(offsets_by_id.values())
    if len(distinct) > 1:
        raise SceneError(f"{path}: different add offsets per band ({sorted(distinct)}): not supported")
    quant = text.get("BOA_QUANTIFICATION_VALUE") or text.get("QUANTIFICATION_VALUE")
    offsets = DNOffsets(
        add=distinct.pop() if distinct else 0.0,  # no offset list: baseline < 04.00
        quantification=float(quant) if quant else None,
        baseline=text.get("PROCESSING_BASELINE"),
        where=str(mtd),
    )
    when = date_from_tags({"date": text.get("PRODUCT_START_TIME", "")})
    sources = [(b, found[b][1], 1) for b in PRODUCTS[product]]
    return sources, offsets, product, when, nodata
