"""One SceneInput over bands that come from several files (per-band files, SAFE, STAC Item), each
band read from its own file on its native grid: every file checked, the finest grid the scene's,
the units agreed, S2 DNs brought to the model's convention (`specs.S2_DN_CONVENTION`)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import rasterio

from copgen_rt.errors import SceneError
from copgen_rt.reading import check_raster_file
from copgen_rt.scenes.inputs import raster_checks as checks
from copgen_rt.scenes.inputs.scene_input import (
    DNOffsets,
    SceneInput,
    add_offset_in_tags,
    date_from_tags,
    model_dn_offset,
    product_of_bands,
)
from copgen_rt.specs import PRODUCTS

HTTP_OPTIONS = {
    "GDAL_HTTP_TIMEOUT": "15",
    "GDAL_HTTP_MAX_RETRY": "0",
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
}


def multi_file_scene(
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
            check_raster_file(href, SceneError)
            with checks.reading(Path(href)), rasterio.open(href) as src:
                checks.check_raster(href, src)
                if finest is None or abs(src.transform.a) < abs(finest[1].a):
                    finest = (src.crs, src.transform, src.width, src.height, src.nodata)
                if product == "S1RTC":
                    units_seen.add(checks.s1_units_of(src, s1_units))
                elif product in ("LULC", "CLOUD"):
                    units_seen.add(checks.class_values_of(src, product, lulc_values))
                elif product.startswith("S2") and len(checked) == 1:
                    checks.warn_if_not_dns(src, stacklevel=3)  # blames the form's call of this function
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
        found = add_offset_in_tags(tags)
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
        date=date or date_from_tags(tags),
        dn_offset=dn_offset,
        boa_offset=offsets.add,
        sources=tuple(sources),
        baseline=offsets.baseline,
        dn_convention=convention,
        form=form,
    )
