"""The scene input, whatever file form it came in: `SceneInput` (which product, its bands in file
order, its units, its grid), the input errors and warnings, band naming and the S2 DN offsets.

Knows no file format: the forms (`stacked`, `per_band`, `safe`, `stac_item`) build a SceneInput
from their files.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from affine import Affine
from rasterio.crs import CRS

from copgen_rt.errors import SceneError
from copgen_rt.specs import COMMON_NAMES, PRODUCTS, S2_DN_CONVENTION, S2_MODEL_ADD, S2_QUANTIFICATION

S1_UNITS = ("auto", "db", "linear")
LULC_VALUES = ("auto", "index", "code")




class ImplausibleDNWarning(UserWarning):
    """S2 values that do not look like digital numbers (8-bit pictures, reflectances in 0-1)."""


@dataclass(frozen=True)
class SceneInput:
    path: Path
    product: str
    bands: tuple[str, ...]  # band name of each file band, file order
    crs: CRS
    transform: Affine
    width: int
    height: int
    nodata: float | None
    units: str  # S1: "db" | "linear"; LULC/CLOUD: "index" | "code"; others: ""
    date: dt.date | None
    dn_offset: float = 0.0  # added to S2 DNs before use
    boa_offset: float | None = None  # BOA_ADD_OFFSET found in the metadata, if any
    # several files (SAFE, per-band files, STAC): (band, file, band index in that file) per band,
    # each read on its own grid; empty: every band is in `path`, in file order
    sources: tuple[tuple[str, str, int], ...] = ()
    baseline: str | None = None  # S2 processing baseline from the metadata, e.g. "04.00"
    dn_convention: str = ""  # how the DNs were brought to the model's convention (provenance)
    form: str = "stacked GeoTIFF"  # SAFE, SAFE zip, per-band files, STAC Item, stacked GeoTIFF

    def band_source(self, band: str) -> tuple[str, int]:
        """(file, 1-based band index in it) of one band."""
        for name, href, index in self.sources:
            if name == band:
                return href, index
        return str(self.path), self.bands.index(band) + 1

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top), whichever way the rows and columns run."""
        t = self.transform
        xs, ys = (t.c, t.c + self.width * t.a), (t.f, t.f + self.height * t.e)
        return min(xs), min(ys), max(xs), max(ys)

    def describe(self) -> str:
        res = f"{abs(self.transform.a):g} m" if self.crs.is_projected else f"{abs(self.transform.a):g} deg"
        extra = f", units {self.units}" if self.units else ""
        when = f", date {self.date}" if self.date else ""
        if self.product.startswith("S2"):
            extra += f", DN offset {self.dn_offset:+g}" + (
                f" (metadata BOA_ADD_OFFSET {self.boa_offset:g})" if self.boa_offset is not None else "")
        form = "" if not self.sources else f" [{self.form}, {len({h for _, h, _ in self.sources})} files]"
        return (f"{self.path.name}{form}: {self.product} ({len(self.bands)} bands: {' '.join(self.bands)}), "
                f"{self.width}x{self.height} px at {res}, {self.crs.to_string()}{extra}{when}")


# --- band and product naming ---------------------------------------------------------------------


_BAND_RE = re.compile(r"^B0?(\d{1,2}A?)$", re.IGNORECASE)
_TOKEN = re.compile(r"[_\-. ]+")
_RESOLUTION = re.compile(r"^\d+m$", re.IGNORECASE)


def canonical_band(name: str) -> str | None:
    """The band a name stands for (B2, b02 -> B02; vv -> VV), if it is one."""
    text = (name or "").strip()
    m = _BAND_RE.match(text)
    if m:
        num = m.group(1).upper()
        return "B8A" if num == "8A" else f"B{int(num):02d}"
    upper = text.upper()
    return upper if upper in {"VV", "VH", "DEM", "LULC"} else None


def band_of_name(stem: str) -> tuple[str | None, str]:
    """(band named in a file name, the rest of the name: which product it is of)."""
    tokens = [t for t in _TOKEN.split(stem) if t]
    for i, token in enumerate(tokens):
        band = canonical_band(token) or COMMON_NAMES.get(token.lower())
        if band:
            rest = [t for t in tokens[:i] + tokens[i + 1 :] if not _RESOLUTION.match(t)]
            return band, "_".join(rest)
    return None, stem


def resolution_of_name(name: str) -> int:
    """The resolution in metres a file name states (..._B05_20m.jp2 -> 20), else 0."""
    return next((int(t[:-1]) for t in _TOKEN.split(name) if _RESOLUTION.match(t)), 0)


def known_product(name: str) -> str:
    """`name` as a product of `specs.PRODUCTS` (any case), else a SceneError."""
    product = name.upper()
    if product not in PRODUCTS:
        raise SceneError(f"unknown product {product!r}; choose {', '.join(PRODUCTS)}")
    return product


def product_of_bands(names: list[str]) -> str | None:
    """The product whose bands these are, if one is."""
    known = set(names)
    for product in ("S2L1C" if "B10" in known else "S2L2A", "S1RTC", "DEM", "LULC", "CLOUD"):
        if known <= set(PRODUCTS[product]):
            return product
    return None


def date_from_tags(tags: dict[str, str]) -> dt.date | None:
    """The acquisition date of the first metadata item that holds one."""
    for key in ("datetime", "DATETIME", "TIFFTAG_DATETIME", "ACQUISITION_DATE", "DATE_ACQUIRED",
                "SENSING_TIME", "PRODUCT_START_TIME", "date"):
        value = tags.get(key)
        if value:
            match = re.match(r"(\d{4})[-:](\d{2})[-:](\d{2})", value)
            if match:
                try:
                    return dt.date(*map(int, match.groups()))
                except ValueError:
                    continue
    return None


# --- S2 DN offsets -------------------------------------------------------------------------------


@dataclass
class DNOffsets:
    """What a product's metadata says about its S2 DNs: reflectance = (DN + add) / quantification."""

    add: float | None = None
    quantification: float | None = None
    baseline: str | None = None
    where: str = ""  # which metadata said so


def add_offset_in_tags(tags: dict[str, str]) -> float | None:
    """The value of the first *ADD_OFFSET* metadata item (BOA_ADD_OFFSET, ...), if it is a number."""
    for key, value in tags.items():
        if "ADD_OFFSET" in key.upper():
            try:
                return float(value)
            except ValueError:
                return None
    return None


def model_dn_offset(product: str, offsets: DNOffsets, override: float | None) -> tuple[float, str]:
    """The shift that brings an input's S2 DNs to the model's (`specs.S2_DN_CONVENTION`), and why."""
    if not product.startswith("S2"):
        return 0.0, ""
    if override is not None:
        return float(override), f"--s2-offset {override:+g} as given; {S2_DN_CONVENTION}"
    if offsets.add is None:
        return 0.0, f"no offset in the metadata: DNs used as distributed; {S2_DN_CONVENTION}"
    if offsets.quantification not in (None, S2_QUANTIFICATION):
        raise SceneError(f"quantification value {offsets.quantification:g} ({offsets.where}): only "
                         f"{S2_QUANTIFICATION:g} is supported")
    shift = offsets.add + S2_MODEL_ADD
    return shift, (f"{offsets.where}: reflectance = (DN {offsets.add:+g}) / {S2_QUANTIFICATION:g}"
                   + (f", baseline {offsets.baseline}" if offsets.baseline else "")
                   + f"; DNs shifted by {shift:+g} to the model's: {S2_DN_CONVENTION}")
