"""Inputs made of several files, each band read from its own file on its native grid:

- Sentinel-2 L1C/L2A SAFE products, as a folder or a .zip: the bands, the processing baseline,
  the add offsets, the quantification value, nodata and the date come from the MTD XML;
- per-band files (B02.tif, T33UUP_..._B05_20m.jp2, ...), as a folder or a comma-separated list:
  each band from its description, its tags or its file name, never from the file order;
- STAC Items (a JSON file): bands from `eo:bands` / `bands` (name, common name), else the asset
  key; offsets from `raster:bands` / `raster:offset`; local paths, file:// and http(s) hrefs.

Every form becomes one `SceneInput` (with `sources`), so the rest of the runtime sees one kind
of input. S2 DNs are brought to the model's convention (`specs.S2_DN_CONVENTION`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import rasterio

from copgen_rt.scenes.reader import (
    DNOffsets,
    SceneError,
    SceneInput,
    _boa_offset,
    _canonical_band,
    _class_values,
    _date_from_tags,
    _reading,
    _s1_units,
    _warn_if_not_dns,
    check_raster,
    model_dn_offset,
    product_of_bands,
)
from copgen_rt.specs import COMMON_NAMES, PRODUCTS

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt")
MTD_NAMES = ("MTD_MSIL2A.xml", "MTD_MSIL1C.xml")
SINGLE_BAND = ("DEM", "LULC", "CLOUD")
HTTP_OPTIONS = {
    "GDAL_HTTP_TIMEOUT": "15",
    "GDAL_HTTP_MAX_RETRY": "0",
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
}


def is_product(text: str) -> bool:
    """Is `text` one of the multi-file forms (else a single stacked raster)?"""
    if "," in text:
        return True
    path = Path(text)
    return path.is_dir() or path.suffix.lower() in (".zip", ".json")


def open_product(
    text: str,
    product: str | None,
    bands: tuple[str, ...] | None,
    s1_units: str,
    lulc_values: str,
    s2_offset: float | None,
    date: dt.date | None,
) -> SceneInput:
    if bands is not None:
        raise SceneError(f"{text}: --bands is for stacked rasters; here the bands come from the metadata")
    if product is not None:
        product = product.upper()
        if product not in PRODUCTS:
            raise SceneError(f"unknown product {product!r}; choose {', '.join(PRODUCTS)}")
    if "," in text:
        files = [Path(p.strip()) for p in text.split(",") if p.strip()]
        missing = [p for p in files if not p.is_file()]
        if missing:
            raise SceneError(f"{missing[0]}: no such file")
        folder = Path(os.path.commonpath([f.resolve() for f in files]))  # names the outputs
        return _scene(folder, "per-band files", _per_band(files, text), DNOffsets(), product, s1_units,
                      lulc_values, s2_offset, date)
    path = Path(text)
    if not path.exists():
        raise SceneError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".json":
        sources, offsets, found_product, when = _stac_item(path, product)
        form, nodata = "STAC Item", None
    elif path.suffix.lower() == ".zip" or _looks_like_safe(path):
        sources, offsets, found_product, when, nodata = _safe(path)
        form = "SAFE zip" if path.suffix.lower() == ".zip" else "SAFE"
    else:
        return _folder_scene(path, product, s1_units, lulc_values, s2_offset, date)
    return _scene(path, form, sources, offsets, product or found_product, s1_units, lulc_values, s2_offset,
                  date or when, nodata)


def _folder_scene(path: Path, product: str | None, s1_units: str, lulc_values: str, s2_offset: float | None,
                  date: dt.date | None) -> SceneInput:
    """A folder of per-band files."""
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES and p.is_file())
    if not files:
        raise SceneError(f"{path}: a folder without raster files ({', '.join(RASTER_SUFFIXES)})")
    return _scene(path, "per-band files", _per_band(files, str(path)), DNOffsets(), product, s1_units,
                  lulc_values, s2_offset, date)


# --- per-band files ------------------------------------------------------------------------------


_TOKEN = re.compile(r"[_\-. ]+")
_RESOLUTION = re.compile(r"^\d+m$", re.IGNORECASE)


def band_of_name(stem: str) -> tuple[str | None, str]:
    """(band named in a file name, the rest of the name: which product it is of)."""
    tokens = [t for t in _TOKEN.split(stem) if t]
    for i, token in enumerate(tokens):
        band = _canonical_band(token) or COMMON_NAMES.get(token.lower())
        if band:
            rest = [t for t in tokens[:i] + tokens[i + 1 :] if not _RESOLUTION.match(t)]
            return band, "_".join(rest)
    return None, stem


def _per_band(files: list[Path], what: str) -> list[tuple[str, str, int]]:
    """(band, file, index) of every band of a set of files; one product only."""
    sources: list[tuple[str, str, int]] = []
    products: dict[str, list[str]] = {}
    for f in files:
        with rasterio.open(f) as src:
            names = [_canonical_band(d) for d in src.descriptions]
            tagged = _canonical_band(src.tags().get("BAND_NAME", "") or src.tags().get("band", ""))
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


# --- SAFE ----------------------------------------------------------------------------------------


def _looks_like_safe(path: Path) -> bool:
    return (
        path.suffix.upper() == ".SAFE"
        or (path / "GRANULE").is_dir()
        or any((path / n).exists() for n in MTD_NAMES)
    )


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
            res = next((int(t[:-1]) for t in _TOKEN.split(Path(value).name) if _RESOLUTION.match(t)), 0)
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
    when = _date_from_tags({"date": text.get("PRODUCT_START_TIME", "")})
    sources = [(b, found[b][1], 1) for b in PRODUCTS[product]]
    return sources, offsets, product, when, nodata


# --- STAC ----------------------------------------------------------------------------------------


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


def _stac_item(
    path: Path, product: str | None
) -> tuple[list[tuple[str, str, int]], DNOffsets, str | None, dt.date | None]:
    import pystac

    try:
        item = pystac.Item.from_dict(json.loads(path.read_text()), href=str(path.resolve()))
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
                _canonical_band(b.get("name", ""))
                or COMMON_NAMES.get(
                    str(b.get("eo:common_name") or b.get("common_name") or b.get("name", "")).lower()
                )
            )
        if not bands or not all(names):
            names = [_canonical_band(key) or COMMON_NAMES.get(key.lower())]
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


# --- one SceneInput --------------------------------------------------------------------------------


def _scene(
    path: Path,
    form: str,
    sources: list[tuple[str, str, int]],
    offsets: DNOffsets,
    product: str | None,
    s1_units: str,
    lulc_values: str,
    s2_offset: float | None,
    date: dt.date | None,
    metadata_nodata: float | None = None,
) -> SceneInput:
    """One SceneInput over `sources`; `metadata_nodata` serves files that declare none (SAFE JP2s)."""
    names = [b for b, _, _ in sources]
    if product is None:
        product = product_of_bands(names)
        if product is None:
            raise SceneError(f"{path}: bands {' '.join(names)} are of no one product; pass --modality")
    order = [b for b in PRODUCTS[product] if b in names] + [b for b in names if b not in PRODUCTS[product]]
    sources = sorted(sources, key=lambda s: order.index(s[0]))
    stray = [b for b in names if b not in PRODUCTS[product]]
    if stray:
        raise SceneError(f"{path}: band(s) {' '.join(stray)} are not bands of {product}")
    finest = None
    units_seen = set()
    tags: dict[str, str] = {}
    checked = set()
    http = any(h.startswith("/vsicurl/") for _, h, _ in sources)
    with rasterio.Env(**HTTP_OPTIONS) if http else rasterio.Env():
        for _band, href, _ in sources:
            if href in checked:
                continue
            checked.add(href)
            with _reading(Path(href)), rasterio.open(href) as src:
                check_raster(href, src)
                if finest is None or abs(src.transform.a) < abs(finest[1].a):
                    finest = (src.crs, src.transform, src.width, src.height, src.nodata)
                if product == "S1RTC":
                    units_seen.add(_s1_units(src, s1_units))
                elif product in ("LULC", "CLOUD"):
                    units_seen.add(_class_values(src, product, lulc_values))
                elif len(checked) == 1:
                    _warn_if_not_dns(src)
                tags = tags or src.tags()
    if len(units_seen) > 1:
        raise SceneError(
            f"{path}: its files disagree on units ({' / '.join(sorted(units_seen))}); pass "
            "--s1-units or --lulc-values"
        )
    if finest is None:
        raise SceneError(f"{path}: no band file found")
    crs, transform, width, height, nodata = finest
    if offsets.add is None:
        found = _boa_offset(tags)
        if found is not None:
            offsets.add, offsets.where = found, "file tags"
    dn_offset, convention = model_dn_offset(product, offsets, s2_offset)
    return SceneInput(
        path=path,
        product=product,
        bands=tuple(b for b, _, _ in sources),
        crs=crs,
        transform=transform,
        width=width,
        height=height,
        nodata=nodata if nodata is not None else metadata_nodata,
        units=units_seen.pop() if units_seen else "",
        date=date or _date_from_tags(tags),
        dn_offset=dn_offset,
        boa_offset=offsets.add,
        sources=tuple(sources),
        baseline=offsets.baseline,
        dn_convention=convention,
        form=form,
    )
