"""The modality registry: the only place that knows modality facts (order, bands, resolutions,
normalisation, latent shapes, which VAE encodes what, input products and their conventions) and
the hyper-parameters of each released model (COP-GEN, COP-GEN-Beta, the demo model).
Everything else reads them from a `ModelSpec`.
"""

from __future__ import annotations

import dataclasses

from copgen_rt.specs.kinds import RGB8, Classes, Date, LatLon, LogRange, Reflectance
from copgen_rt.specs.model import DenoiserSpec, Modality, ModelSpec, ReleaseSpec, VAESpec

S2_60M_L1C = ("B01", "B09", "B10")
S2_60M_L2A = ("B01", "B09")
S2_10M = ("B04", "B03", "B02", "B08")
S2_20M = ("B05", "B06", "B07", "B8A", "B11", "B12")

LULC_CLASSES = Classes(
    codes=(0, 1, 2, 4, 5, 7, 8, 9, 10, 11),
    names=("NoData", "Water", "Trees", "Flooded Vegetation", "Crops", "Built-up Areas",
           "Bare Ground", "Snow/Ice", "Clouds", "Rangeland"),
    colors=("#000000", "#419bdf", "#397d49", "#7a87c6", "#e49635", "#c4281b", "#a59b8f", "#a8ebff",
            "#616161", "#e3e2c3"),  # the Esri 10 m land cover palette
)
CLOUD_CLASSES = Classes(codes=(0, 1, 2, 3), names=("Clear", "Thick", "Thin", "Shadow"),
                        colors=("#2b5d2b", "#ffffff", "#b0b0b0", "#303030"))

_S1 = LogRange("db", -55.787186, 40.225800, 2.6380407689430285e-06, units="linear gamma0")
# heights on Earth: the Dead Sea shore (-430 m) to Everest (8849 m), with a margin
_DEM = LogRange("log1p", 0.000006, 9.088, 5.899129519093549e-06, units="m", plausible=(-1000.0, 10000.0))
_S2 = Reflectance()

# Input products as users hold them: band layout of the usual files, in file order.
PRODUCTS: dict[str, tuple[str, ...]] = {
    "S2L2A": ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"),
    "S2L1C": ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"),
    "S1RTC": ("VV", "VH"),
    "DEM": ("DEM",),
    "LULC": ("LULC",),
    "CLOUD": ("cloud_mask",),
}

# The S2 DN convention COP-GEN was trained on. [inferred: neither Major TOM nor COP-GEN states
# it] Major TOM Core reads the SAFE JP2s with a plain windowed read (no offset or harmonisation
# code anywhere in its repository) and its products carry baselines N0400/N0500, whose DNs are
# reflectance x 10000 + 1000 (BOA_ADD_OFFSET / RADIO_ADD_OFFSET -1000). So the model's DNs are
#     model DN = reflectance x S2_QUANTIFICATION + S2_MODEL_ADD
# and an input whose metadata says reflectance = (DN + ADD_OFFSET) / QUANTIFICATION is shifted by
# ADD_OFFSET + S2_MODEL_ADD (0 for baseline >= 04.00, +1000 for older products).
S2_QUANTIFICATION = 10000.0
S2_MODEL_ADD = 1000.0
S2_DN_CONVENTION = ("model DN = reflectance x 10000 + 1000 (Major TOM Core: SAFE DNs as stored, baselines "
                    ">= 04.00; inferred from its code and product ids, not stated by Major TOM or COP-GEN)")

# what S2 reflectance outputs are, once scaled (scale 1/S2_QUANTIFICATION, offset -S2_MODEL_ADD/...)
REFLECTANCE_OF = {"S2L2A": "surface reflectance (BOA, L2A)",
                  "S2L1C": "top-of-atmosphere reflectance (TOA, L1C)"}
# class conventions: inputs may be indices 0..n-1 (Major TOM / TerraMesh chips) or the codes;
# outputs are always the codes (Esri land cover 0,1,2,4,5,7,8,9,10,11; cloud mask 0..3)
CLASS_CONVENTION = (
    "outputs are class codes (Esri 10 m land cover: 0 NoData, 1 Water, 2 Trees, 4 Flooded "
    "Vegetation, 5 Crops, 7 Built-up Areas, 8 Bare Ground, 9 Snow/Ice, 10 Clouds, 11 Rangeland; "
    "cloud mask: 0 Clear, 1 Thick, 2 Thin, 3 Shadow); land-cover inputs may be indices 0-9 "
    "(Major TOM chips) or these codes (--lulc-values)"
)

# Sentinel-2 band ids of the SAFE metadata (band_id="0".."12") and STAC common names
S2_BAND_IDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
COMMON_NAMES = {
    "coastal": "B01",
    "blue": "B02",
    "green": "B03",
    "red": "B04",
    "rededge1": "B05",
    "rededge2": "B06",
    "rededge3": "B07",
    "nir": "B08",
    "nir08": "B8A",
    "nir09": "B09",
    "cirrus": "B10",
    "swir16": "B11",
    "swir22": "B12",
    "vv": "VV",
    "vh": "VH",
    "elevation": "DEM",
    "dem": "DEM",
    "lulc": "LULC",
    "landcover": "LULC",
    "cloud_mask": "cloud_mask",
}

# (name, processing, latent shape, bands, gsd, VAE scale factor, released VAE folder, description)
_COPGEN_TABLE = (
    ("3d_cartesian_lat_lon", LatLon(), (1, 1, 3), (), None, None, None, "location"),
    ("DEM_DEM", _DEM, (8, 8, 8), ("DEM",), 30.0, 0.404247, "DEM_64x64_DEM_latent_8", "Copernicus DEM GLO-30"),
    (
        "LULC_LULC",
        LULC_CLASSES,
        (8, 24, 24),
        (),
        10.0,
        0.464794,
        "LULC_192x192_LULC_latent_8",
        "Esri/IO land cover",
    ),
    (
        "S1RTC_vh_vv",
        _S1,
        (8, 24, 24),
        ("VV", "VH"),
        10.0,
        0.633804,
        "S1RTC_192x192_VV_VH_latent_8",
        "Sentinel-1 RTC",
    ),
    (
        "S2L1C_B01_B09_B10",
        _S2,
        (8, 4, 4),
        S2_60M_L1C,
        60.0,
        0.565812,
        "S2L1C_32x32_B1_9_10_latent_8",
        "Sentinel-2 L1C 60 m",
    ),
    (
        "S2L1C_B02_B03_B04_B08",
        _S2,
        (8, 24, 24),
        S2_10M,
        10.0,
        0.772514,
        "S2L1C_192x192_B4_3_2_8_latent_8",
        "Sentinel-2 L1C 10 m",
    ),
    (
        "S2L1C_B05_B06_B07_B11_B12_B8A",
        _S2,
        (8, 12, 12),
        S2_20M,
        20.0,
        0.765817,
        "S2L1C_96x96_B5_6_7_8A_11_12_latent_8",
        "Sentinel-2 L1C 20 m",
    ),
    (
        "S2L1C_cloud_mask",
        CLOUD_CLASSES,
        (8, 24, 24),
        (),
        10.0,
        0.557045,
        "S2L1C_192x192_cloud_mask_latent_8",
        "Sentinel-2 L1C cloud mask",
    ),
    (
        "S2L2A_B01_B09",
        _S2,
        (8, 4, 4),
        S2_60M_L2A,
        60.0,
        0.571367,
        "S2L2A_32x32_B1_9_latent_8",
        "Sentinel-2 L2A 60 m",
    ),
    (
        "S2L2A_B02_B03_B04_B08",
        _S2,
        (8, 24, 24),
        S2_10M,
        10.0,
        0.853416,
        "S2L2A_192x192_B4_3_2_8_latent_8",
        "Sentinel-2 L2A 10 m",
    ),
    (
        "S2L2A_B05_B06_B07_B11_B12_B8A",
        _S2,
        (8, 12, 12),
        S2_20M,
        20.0,
        0.567267,
        "S2L2A_96x96_B5_6_7_8A_11_12_latent_8",
        "Sentinel-2 L2A 20 m",
    ),
    ("mean_timestamps", Date(), (1, 1, 3), (), None, None, None, "date"),
)


def _copgen(
    name: str, denoiser: DenoiserSpec, denoiser_files: tuple[str, ...], hub_id: str | None
) -> ModelSpec:
    modalities, vaes, vae_files = [], {}, {}
    for key, proc, latent, bands, gsd, scale, folder, desc in _COPGEN_TABLE:
        is_image = scale is not None
        product = {"S2L1C_cloud_mask": "CLOUD"}.get(key, key.split("_")[0]) if is_image else ""
        modalities.append(
            Modality(
                key,
                proc,
                latent,
                patch_size=2 if is_image else 1,
                bands=bands,
                gsd=gsd,
                vae=key if is_image else None,
                description=desc,
                product=product,
            )
        )
        if scale is not None:
            channels = len(proc.codes) if isinstance(proc, Classes) else len(bands)
            vaes[key] = VAESpec(in_channels=channels, scale_factor=scale)
            vae_files[key] = (
                f"models/vae/{folder}/model-50-ema.pth",
                f"{folder}/model-50-ema.pth",
                f"models/vae/{folder}/model-50.pt",
                f"{folder}/model-50.pt",
            )
    release = ReleaseSpec(
        denoiser_hub_id=hub_id,
        vae_hub_id="mespinosami/copgen-vaes",
        denoiser_files=denoiser_files,
        vae_files=vae_files,
    )
    return ModelSpec(
        name=name,
        family="copgen",
        modalities=tuple(modalities),
        denoiser=denoiser,
        vaes=vaes,
        release=release,
    )


_BETA_MODALITIES = (
    ("dem", "DEM hillshade thumbnail"),
    ("s1_rtc", "Sentinel-1 RTC false colour"),
    ("s2_l1c", "Sentinel-2 L1C true colour"),
    ("s2_l2a", "Sentinel-2 L2A true colour"),
)


def _copgen_beta() -> ModelSpec:
    modalities = tuple(
        Modality(
            n,
            RGB8(),
            (4, 32, 32),
            patch_size=2,
            bands=("R", "G", "B"),
            vae="sd-kl-f8",
            description=d,
            product=p,
        )
        for (n, d), p in zip(_BETA_MODALITIES, ("DEM", "S1RTC", "S2L1C", "S2L2A"), strict=True)
    )
    vae = VAESpec(in_channels=3, scale_factor=0.18215, z_channels=4)
    release = ReleaseSpec(
        denoiser_hub_id="mespinosami/COP-GEN-Beta",
        vae_hub_id=None,
        denoiser_files=("nnet_ema_114000.pth", "nnet_ema.pth"),
        vae_files={"sd-kl-f8": ("autoencoder_kl_ema.pth", "assets/stable-diffusion/autoencoder_kl_ema.pth")},
    )
    return ModelSpec(
        name="copgen-beta",
        family="copgen-beta",
        modalities=modalities,
        denoiser=DenoiserSpec(1024, 20, 16),
        vaes={"sd-kl-f8": vae},
        release=release,
        posterior_per_copy=True,
    )


def _demo() -> ModelSpec:
    """The built-in default: COP-GEN layout, tiny widths, random weights shipped in the package."""
    base = _copgen("copgen-demo", DenoiserSpec(64, 4, 4), ("denoiser.safetensors",), None)
    tiny = {
        k: dataclasses.replace(v, ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1) for k, v in base.vaes.items()
    }
    return base.replace(vaes=tiny, release=ReleaseSpec())


_REGISTRY: dict[str, ModelSpec] = {
    "copgen-base": _copgen(
        "copgen-base",
        DenoiserSpec(1024, 20, 16),
        ("500000_nnet_ema.pth", "nnet_ema.pth"),
        "mespinosami/copgen-base",
    ),
    "copgen-large": _copgen("copgen-large", DenoiserSpec(1152, 28, 16), ("nnet_ema.pth",), None),
    "copgen-huge": _copgen(
        "copgen-huge", DenoiserSpec(1536, 30, 24), ("273000_nnet_ema.pth", "nnet_ema.pth"), None
    ),
    "copgen-beta": _copgen_beta(),
    "copgen-demo": _demo(),
}


def names() -> list[str]:
    return list(_REGISTRY)


def get(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model spec {name!r}; known: {', '.join(_REGISTRY)}") from None

