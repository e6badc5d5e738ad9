"""Sentinel products as people hold them, cut from the bundled real chips (Major TOM sub-cells):
a minimal SAFE tree (MTD XML + one JP2 per band at its native 10/20/60 m, baseline >= 04.00 with
BOA_ADD_OFFSET or an older one without), a folder of per-band COGs, STAC Items pointing at them.

The chips hold every band on the 10 m grid as nearest-neighbour copies aligned at the top-left,
so a band's native grid is its top-left pixel of each block: the products below carry the very
DNs of the stacked chip (minus the 1000 offset for pre-04.00 baselines)."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine

from copgen_rt import specs
from copgen_rt.demo import chip_path

CHIPS = Path(__file__).parent / "data" / "majortom"
SIDE = 192  # one model footprint at 10 m: one tile, fast runs
DATE = "2021-06-15"


def stacked_chip(tmp: Path, product: str = "S2L2A", side: int = SIDE) -> Path:
    """The chip's top-left `side` px as a stacked GeoTIFF (today's input form). DNs under 1001
    (negative surface reflectance, a few dark SWIR pixels) are raised to 1001: a pre-04.00
    product stores DN - 1000 and could not hold them, nor a 0, which is nodata in SAFE products."""
    src_path = chip_path() if product == "S2L2A" else CHIPS / "S2L1C_433D_629L_3_1.tif"
    out = tmp / f"{product}_stacked.tif"
    with rasterio.open(src_path) as src:
        data = np.maximum(src.read(window=((0, side), (0, side))), 1001)
        profile = dict(driver="GTiff", width=side, height=side, count=src.count, dtype=src.dtypes[0],
                       crs=src.crs, transform=src.transform)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    return out


def native_bands(stacked: Path, product: str) -> tuple[dict[str, np.ndarray], dict[str, Affine], object]:
    """Each band of a stacked chip on its native grid (values, transform), and the CRS."""
    gsd = {b: m.gsd for m in specs.get("copgen-base").modalities if m.product == product for b in m.bands}
    with rasterio.open(stacked) as src:
        data, t, crs = src.read(), src.transform, src.crs
    bands, transforms = {}, {}
    for i, band in enumerate(specs.PRODUCTS[product]):
        f = round(gsd[band] / 10)
        bands[band] = data[i, ::f, ::f]
        transforms[band] = t @ Affine.scale(f)
    return bands, transforms, crs


def _write(path: Path, values: np.ndarray, transform: Affine, crs, driver: str, dtype: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    mem = dict(driver="MEM", width=values.shape[1], height=values.shape[0], count=1, dtype=dtype, crs=crs,
               transform=transform)
    with rasterio.MemoryFile() as mf, mf.open(**mem) as tmp:
        tmp.write(values.astype(dtype), 1)
        options = (
            dict(REVERSIBLE="YES", QUALITY="100") if driver == "JP2OpenJPEG" else dict(COMPRESS="DEFLATE")
        )
        rasterio.shutil.copy(tmp, path, driver=driver, **options)
    return path


def make_safe(
    tmp: Path,
    stacked: Path,
    product: str = "S2L2A",
    baseline: str = "05.09",
    as_zip: bool = False,
    with_mtd: bool = True,
) -> Path:
    """A minimal SAFE product: MTD XML and one lossless JP2 per band at its native resolution.
    Baselines >= 04.00 keep the chip's DNs and say BOA_ADD_OFFSET/RADIO_ADD_OFFSET -1000; older
    ones store DN - 1000 and have no offset list, as ESA's products do."""
    level = "2A" if product == "S2L2A" else "1C"
    new = float(baseline) >= 4.0
    name = f"S2A_MSIL{level}_20210615T150000_N{baseline.replace('.', '')}_R125_T18HXX_20210615T170000.SAFE"
    root = tmp / f"safe-{baseline}-{product}{'-zip' if as_zip else ''}" / name
    bands, transforms, crs = native_bands(stacked, product)
    files = []
    for band, values in bands.items():
        res = round(transforms[band].a)
        if level == "2A":
            granule = "GRANULE/L2A_T18HXX_A000001_20210615T150000"
            rel = f"{granule}/IMG_DATA/R{res}m/T18HXX_20210615T150000_{band}_{res}m"
        else:
            rel = f"GRANULE/L1C_T18HXX_A000001_20210615T150000/IMG_DATA/T18HXX_20210615T150000_{band}"
        _write(
            root / f"{rel}.jp2",
            values.astype(np.int32) - (0 if new else 1000),
            transforms[band],
            crs,
            "JP2OpenJPEG",
            "uint16",
        )
        files.append(rel)
    if level == "2A":  # L2A lists the other resolutions and non-band layers too: must be skipped
        files += [
            "GRANULE/L2A_T18HXX_A000001_20210615T150000/IMG_DATA/R20m/T18HXX_20210615T150000_B02_20m",
            "GRANULE/L2A_T18HXX_A000001_20210615T150000/IMG_DATA/R20m/T18HXX_20210615T150000_SCL_20m",
        ]
    if with_mtd:
        (root / f"MTD_MSIL{level}.xml").write_text(_mtd(level, baseline, files, new))
    if not as_zip:
        return root
    archive = shutil.make_archive(str(root.parent / name.replace(".SAFE", "")), "zip", root.parent, name)
    shutil.rmtree(root)
    return Path(archive)


def _mtd(level: str, baseline: str, files: list[str], with_offset: bool) -> str:
    images = "".join(f"<IMAGE_FILE>{f}</IMAGE_FILE>" for f in files)
    tag = "BOA_ADD_OFFSET" if level == "2A" else "RADIO_ADD_OFFSET"
    quant = "BOA_QUANTIFICATION_VALUE" if level == "2A" else "QUANTIFICATION_VALUE"
    offsets = ""
    if with_offset:
        lst = "BOA_ADD_OFFSET_VALUES_LIST" if level == "2A" else "Radiometric_Offset_List"
        offsets = f"<{lst}>" + "".join(f'<{tag} band_id="{i}">-1000</{tag}>' for i in range(13)) + f"</{lst}>"
    ns = f"https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-{level}.xsd"
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<n1:Level-{level}_User_Product xmlns:n1="{ns}">'
        f"<n1:General_Info><Product_Info><PRODUCT_START_TIME>{DATE}T15:00:00.024Z</PRODUCT_START_TIME>"
        f"<PROCESSING_LEVEL>Level-{level}</PROCESSING_LEVEL><PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>"
        f'<Product_Organisation><Granule_List><Granule granuleIdentifier="x">{images}</Granule>'
        "</Granule_List></Product_Organisation></Product_Info>"
        "<Product_Image_Characteristics><Special_Values><SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT>"
        "<SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX></Special_Values>"
        f'<QUANTIFICATION_VALUES_LIST><{quant} unit="none">10000</{quant}></QUANTIFICATION_VALUES_LIST>'
        f"{offsets}</Product_Image_Characteristics></n1:General_Info></n1:Level-{level}_User_Product>\n"
    )


def make_band_folder(tmp: Path, stacked: Path, product: str = "S2L2A", prefix: str = "") -> Path:
    """One COG per band at its native resolution, named like Major TOM's (B02.tif ...)."""
    folder = tmp / f"bands-{product}"
    bands, transforms, crs = native_bands(stacked, product)
    for band, values in bands.items():
        _write(folder / f"{prefix}{band}.tif", values, transforms[band], crs, "COG", "uint16")
    return folder


def make_stac_item(
    tmp: Path,
    band_folder: Path,
    product: str = "S2L2A",
    file_urls: bool = False,
    drop: str | None = None,
    href_of: dict[str, str] | None = None,
) -> Path:
    """An earth-search-like Item: assets keyed by common name, eo:bands, raster:bands with the
    scale and offset of baseline >= 04.00 DNs (reflectance = DN x 0.0001 - 0.1)."""
    import pystac

    collection = {"S2L2A": "sentinel-2-l2a", "S2L1C": "sentinel-2-l1c"}[product]
    item = pystac.Item(
        id=f"{product}-chip",
        geometry=None,
        bbox=None,
        collection=None,
        datetime=dt.datetime.fromisoformat(f"{DATE}T15:00:00+00:00"),
        properties={"s2:processing_baseline": "05.09"},
    )
    item.collection_id = collection
    common = {v: k for k, v in specs.COMMON_NAMES.items()}
    for band in specs.PRODUCTS[product]:
        if band == drop:
            continue
        path = (band_folder / f"{band}.tif").resolve()
        href = (href_of or {}).get(band) or (
            path.as_uri() if file_urls else f"../{band_folder.name}/{band}.tif"
        )
        item.add_asset(
            common[band],
            pystac.Asset(
                href,
                media_type=pystac.MediaType.COG,
                roles=["data"],
                extra_fields={
                    "eo:bands": [{"name": band, "common_name": common[band]}],
                    "raster:bands": [{"nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": -0.1}],
                },
            ),
        )
    item.add_asset("thumbnail", pystac.Asset("thumb.png", roles=["thumbnail"]))
    folder = tmp / "stac"
    folder.mkdir(exist_ok=True)
    out = folder / f"{product}{'-file' if file_urls else ''}{'-no-' + drop if drop else ''}.json"
    out.write_text(__import__("json").dumps(item.to_dict(include_self_link=False)))
    return out


def make_condition_items(tmp: Path) -> dict[str, tuple[Path, Path]]:
    """S1 RTC (VV and VH as two assets, by key) and DEM (one "data" asset) STAC Items over the
    real chips of the bundled scene's cell: {product: (stacked chip, item)}."""
    import json

    import pystac

    folder = tmp / "conditions"
    folder.mkdir(exist_ok=True)
    s1, dem = CHIPS / "S1RTC_433D_629L_3_1.tif", CHIPS / "DEM_433D_629L_3_1.tif"
    with rasterio.open(s1) as src:
        vv, vh, t, crs, dtype = src.read(1), src.read(2), src.transform, src.crs, src.dtypes[0]
    assets = {
        "vv": _write(folder / "s1_vv.tif", vv, t, crs, "COG", dtype),
        "vh": _write(folder / "s1_vh.tif", vh, t, crs, "COG", dtype),
    }
    items = {}
    for product, collection, files in (
        ("S1RTC", "sentinel-1-rtc", assets),
        ("DEM", "cop-dem-glo-30", {"data": dem}),
    ):
        item = pystac.Item(
            id=product, geometry=None, bbox=None, datetime=dt.datetime(2021, 6, 15), properties={}
        )
        item.collection_id = collection
        for key, path in files.items():
            item.add_asset(key, pystac.Asset(str(path), roles=["data"]))
        out = folder / f"{product}.json"
        out.write_text(json.dumps(item.to_dict(include_self_link=False)))
        items[product] = ({"S1RTC": s1, "DEM": dem}[product], out)
    return items
