"""Model specs: the modality registry and the hyper-parameters of each released model.

Modality facts (order, bands, resolutions, normalisation, latent shapes, which VAE encodes what)
live in one place, `registry`; everything else reads them from a `ModelSpec`. Specs are
immutable; custom specs are made with `dataclasses.replace` (see `from_json`). One layer,
imported only downward:

- `kinds`: the processing kinds (Reflectance, LogRange, Classes, LatLon, Date, RGB8);
- `model`: Modality, VAESpec, DenoiserSpec, ScheduleSpec, ReleaseSpec, ModelSpec;
- `registry`: the facts of COP-GEN, COP-GEN-Beta and the demo model, `names` and `get`;
- `json_io`: `from_json` (golden fixtures), `to_dict` and `from_dict` (export manifests).
"""

from __future__ import annotations

from copgen_rt.errors import UnknownModalityError
from copgen_rt.specs.json_io import from_dict, from_json, to_dict
from copgen_rt.specs.kinds import DATE_SPAN, RGB8, Classes, Date, LatLon, LogRange, Processing, Reflectance
from copgen_rt.specs.model import DenoiserSpec, Modality, ModelSpec, ReleaseSpec, ScheduleSpec, VAESpec
from copgen_rt.specs.registry import (
    CLASS_CONVENTION,
    CLOUD_CLASSES,
    COMMON_NAMES,
    LULC_CLASSES,
    PRODUCTS,
    REFLECTANCE_OF,
    S2_10M,
    S2_20M,
    S2_60M_L1C,
    S2_60M_L2A,
    S2_BAND_IDS,
    S2_DN_CONVENTION,
    S2_MODEL_ADD,
    S2_QUANTIFICATION,
    get,
    names,
)

__all__ = [
    "CLASS_CONVENTION", "CLOUD_CLASSES", "COMMON_NAMES", "DATE_SPAN", "LULC_CLASSES", "PRODUCTS",
    "REFLECTANCE_OF", "RGB8", "S2_10M", "S2_20M", "S2_60M_L1C", "S2_60M_L2A", "S2_BAND_IDS",
    "S2_DN_CONVENTION", "S2_MODEL_ADD", "S2_QUANTIFICATION", "Classes", "Date", "DenoiserSpec", "LatLon",
    "LogRange", "Modality", "ModelSpec", "Processing", "Reflectance", "ReleaseSpec", "ScheduleSpec",
    "UnknownModalityError", "VAESpec", "from_dict", "from_json", "get", "names", "to_dict",
]
