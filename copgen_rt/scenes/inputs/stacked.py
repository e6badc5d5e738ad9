"""A stacked raster (one GeoTIFF, VRT, ... holding every band of one product) as a SceneInput:
the product and the bands from the band descriptions, else from the band count and data type,
or as the user says (--modality, --bands)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import rasterio

from copgen_rt.errors import SceneError
from copgen_rt.reading import check_raster_file
from copgen_rt.scenes.inputs.raster_checks import (
    check_raster,
    class_values_of,
    reading,
    s1_units_of,
    warn_if_not_dns,
)
from copgen_rt.scenes.inputs.scene_input import (
    DNOffsets,
    SceneInput,
    add_offset_in_tags,
    canonical_band,
    date_from_tags,
    known_product,
    model_dn_offset,
    product_of_bands,
)
from copgen_rt.specs import PRODUCTS


def _guess_product(src, names: list[str | None]) -> tuple[str, tuple[str, ...]]:
    named = [n for n in names if n]
    if len(named) == len(names):  # every band is named: trust the names
        product = product_of_bands(named)
        if product is not None and product != "CLOUD":
            return product, tuple(named)
    by_count = {12: "S2L2A", 13: "S2L1C", 2: "S1RTC"}
    if src.count in by_count:
        product = by_count[src.count]
        return product, PRODUCTS[product]
    if src.count == 1:
        product = "LULC" if src.dtypes[0] == "uint8" else "DEM"
        return product, PRODUCTS[product]
    raise SceneError(f"{src.name}: {src.count} bands: cannot tell which product this is; "
                     "pass --modality and --bands")


def open_stacked(path: Path, product: str | None, bands: tuple[str, ...] | None, s1_units: str,
                 lulc_values: str, s2_offset: float | None, date: dt.date | None) -> SceneInput:
    """Open and recognise one stacked raster; every problem is a one-line SceneError."""
    check_raster_file(path, SceneError)  # a FIFO (or a VRT of one) would block forever, a device never end
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as e:
        raise SceneError(f"{path}: not a readable raster ({str(e).splitlines()[0][:120]})") from None
    with src, reading(path):
        check_raster(path, src)
        names = [canonical_band(d) for d in src.descriptions]
        if product is None:
            product, file_bands = _guess_product(src, names)
        else:
            product = known_product(product)
            named = [n for n in names if n]
            file_bands = tuple(named) if len(named) == len(names) else PRODUCTS[product]
        if bands is not None:
            file_bands = tuple(canonical_band(b) or b for b in bands)
            if len(file_bands) != src.count:
                raise SceneError(f"{path}: --bands names {len(file_bands)} band(s) ({' '.join(file_bands)}) "
                                 f"but the file has {src.count}")
        if len(file_bands) != src.count:
            raise SceneError(f"{path}: {src.count} bands, but {product} expects {len(file_bands)} "
                             f"({' '.join(file_bands)}); pass --bands to say which is which")
        units = ""
        if product == "S1RTC":
            units = s1_units_of(src, s1_units)
        elif product in ("LULC", "CLOUD"):
            units = class_values_of(src, product, lulc_values)
        elif product.startswith("S2"):
            warn_if_not_dns(src, stacklevel=4)  # blames the caller of `open_input`
        # without offset metadata S2 DNs are used as distributed (as the model's, see specs)
        boa = add_offset_in_tags(src.tags())
        offset, convention = model_dn_offset(product, DNOffsets(add=boa, where="file tags"), s2_offset)
        return SceneInput(path=path, product=product, bands=tuple(file_bands), crs=src.crs,
                          transform=src.transform, width=src.width, height=src.height,
                          nodata=src.nodata, units=units, date=date or date_from_tags(src.tags()),
                          dn_offset=offset, boa_offset=boa, dn_convention=convention)
