"""STAC Items (a JSON file) as a SceneInput: bands from `eo:bands` / `bands` (name, common name),
else the asset key; offsets from `raster:bands` / `raster:offset`, else the processing baseline;
local paths, file:// and http(s) hrefs."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import rasterio

from copgen_rt.errors import SceneError
from copgen_rt.reading import read_json
from copgen_rt.scenes.inputs.multi_file import HTTP_OPTIONS, multi_file_scene
from copgen_rt.scenes.inputs.scene_input import DNOffsets, SceneInput, canonical_band, product_of_bands
from copgen_rt.specs import COMMON_NAMES, PRODUCTS

SINGLE_BAND = ("DEM", "LULC", "CLOUD")
_COLLECTIONS = (
    ("l2a", "S2L2A"),
    ("l1c", "S2L1C"),
    ("sentinel-1", "S1RTC"),
    ("rtc", "S1RTC"),
    ("dem", "DEM"),
    ("lulc", "LULC"),
    ("land-cover", "LULC"),
    ("landcover", "LULC"),
)


def open_stac_item(path: Path, product: str | None, s1_units: str, lulc_values: str, s2_offset: float | None,
                   date: dt.date | None) -> SceneInput:
    """A STAC Item; `product` and `date` override what the Item says."""
    sources, offsets, found_product, when = _stac_item(path, product)
    return multi_file_scene(path, "STAC Item", sources, offsets, product or found_product, s1_units,
                            lulc_values, s2_offset, date or when, None)


def _stac_item(
    path: Path, product: str | None
) -> tuple[list[tuple[str, str, int]], DNOffsets, str | None, dt.date | None]:
    import pystac

    try:
        item = pystac.Item.from_dict(read_json(path, error=SceneError), href=str(path.resolve()))
    except (ValueError, KeyError, TypeError, pystac.STACError) as e:
        raise SceneError(
            f"{path}: not a STAC Item ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})"
        ) from None
    collection = (item.collection_id or "").lower()
    product = product or next((p for key, p in _COLLECTIONS if key in collection), None)
    sources: list[tuple[str, str, int]] = []
    adds: set[float] = set()
    quants: set[float] = set()
    for key, asset in item.assets.items():
        fields = asset.extra_fields
        bands = fields.get("bands") or fields.get("eo:bands") or []
        names: list[str | None] = []
        for b in bands:
            names.append(
                canonical_band(b.get("name", ""))
                or COMMON_NAMES.get(
                    str(b.get("eo:common_name") or b.get("common_name") or b.get("name", "")).lower()
                )
            )
        if not bands or not all(names):
            names = [canonical_band(key) or COMMON_NAMES.get(key.lower())]
        if not all(names) or (asset.roles and "data" not in asset.roles):
            continue  # thumbnails, metadata, visual composites
        if any(b in {s[0] for s in sources} for b in names):
            continue  # the same band again (another format of it): the first asset wins
        href = _asset_href(path, asset.href)
        for i, band in enumerate(names, start=1):
            sources.append((str(band), href, i))
        for rb in fields.get("raster:bands") or bands:
            scale, offset = rb.get("scale", rb.get("raster:scale")), rb.get("offset", rb.get("raster:offset"))
            if scale:
                quants.add(round(1.0 / float(scale), 6))
                adds.add(round(float(offset or 0.0) / float(scale), 6))
    if not sources and product in SINGLE_BAND:  # DEM and land-cover items: one "data" asset
        data_key = next(
            (k for k, a in item.assets.items() if "data" in (a.roles or []) or k in ("data", "map")), None
        )
        if data_key is not None:
            sources = [(PRODUCTS[product][0], _asset_href(path, item.assets[data_key].href), 1)]
    if not sources:
        raise SceneError(
            f"{path}: no asset of this STAC Item is a band (by eo:bands / bands, common names or asset keys)"
        )
    if product is None:
        product = product_of_bands([b for b, _, _ in sources])
    if product in PRODUCTS:
        missing = [b for b in PRODUCTS[product] if b not in {s[0] for s in sources}]
        if missing and product.startswith("S2"):
            raise SceneError(
                f"{path}: no asset for band(s) {' '.join(missing)} of {product} "
                f"(assets: {', '.join(item.assets)})"
            )
    baseline = item.properties.get("s2:processing_baseline")
    if len(adds) > 1:
        raise SceneError(f"{path}: different raster offsets per band ({sorted(adds)}): not supported")
    offsets = DNOffsets(
        add=adds.pop() if adds else None,
        quantification=quants.pop() if len(quants) == 1 else None,
        baseline=str(baseline) if baseline else None,
        where="raster:bands",
    )
    if offsets.add is None and baseline:
        offsets.add, offsets.where = (
            (-1000.0 if _baseline_number(str(baseline)) >= 4 else 0.0),
            "s2:processing_baseline",
        )
    when = item.datetime.date() if item.datetime else None
    return sources, offsets, product, when


def _asset_href(item_path: Path, href: str) -> str:
    """A local path for local and file:// hrefs; GDAL's /vsicurl/ for http(s) (opened, so that an
    unreachable one fails now, in one line)."""
    parsed = urlparse(href)
    if parsed.scheme in ("http", "https"):
        vsi = f"/vsicurl/{href}"
        try:
            with rasterio.Env(**HTTP_OPTIONS), rasterio.open(vsi):
                return vsi
        except rasterio.errors.RasterioIOError as e:
            detail = (str(e).splitlines() or ["unreachable"])[0][:120]
            raise SceneError(f"{item_path}: asset {href} cannot be read ({detail})") from None
    if parsed.scheme == "file":
        href = unquote(parsed.path)
    elif parsed.scheme and len(parsed.scheme) > 1:
        raise SceneError(
            f"{item_path}: asset {href}: {parsed.scheme}:// hrefs are not supported (local paths, "
            "file:// or http(s))"
        )
    local = Path(href) if os.path.isabs(href) else item_path.parent / href
    if not local.is_file():
        raise SceneError(f"{item_path}: asset {href} is missing ({local})")
    return str(local)


def _baseline_number(text: str) -> float:
    match = re.search(r"(\d+)\.?(\d*)", text)
    return float(f"{match.group(1)}.{match.group(2) or 0}") if match else 0.0
