"""What ships in the package to try copgen-rt without downloads: a small demo model with RANDOM
weights (`Pipeline.demo()`) and one real Sentinel-2 L2A chip (Major TOM sub-cell 433D_629L,
224 x 224 px at 10 m), readable as `generate` conditions."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import torch
from rasterio.warp import transform as warp_transform
from torch import Tensor

from copgen_rt import specs
from copgen_rt.scenes.inputs.open import open_input
from copgen_rt.scenes.reader import ModalityReader, SceneFrame
from copgen_rt.scenes.tiling import FOOTPRINT_M
from copgen_rt.specs import ModelSpec

DEMO_MODEL = "copgen-demo"


def weights_path() -> Path:
    """The demo model's weights directory (random weights, marked as such)."""
    return Path(str(files("copgen_rt") / "assets" / "demo"))


def chip_path() -> Path:
    """The bundled real Sentinel-2 L2A chip (a 12-band GeoTIFF of DNs)."""
    return Path(str(files("copgen_rt") / "assets" / "chips" / "S2L2A_433D_629L_3_1.tif"))


def default_scene() -> str:
    """The chip as `infer` takes it without SCENE."""
    return str(chip_path())


def write_tile(path: Path) -> Path:
    """The chip's top-left 1.92 km footprint (192 px) as a one-tile scene GeoTIFF at `path`
    (tests and benchmarks of one-tile requests)."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(chip_path()) as src:
        size = int(FOOTPRINT_M // 10)  # px at 10 m
        window = Window(0, 0, size, size)
        profile = src.profile | {"width": window.width, "height": window.height,
                                 "transform": src.window_transform(window)}
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(src.read(window=window))
    return path


def demo_weights() -> str:
    """The demo weights directory as the commands take it without --weights."""
    return str(weights_path())


def read_chip(modality: str = "S2L2A_B02_B03_B04_B08", spec: ModelSpec | str = DEMO_MODEL) -> Tensor:
    """One S2 L2A modality of the chip's top-left 1.92 km footprint as a `generate` condition:
    (1, C, H, W) float32 DNs on the modality's native grid (10, 20 or 60 m, GDAL average), in the
    spec's band order, e.g. (1, 4, 192, 192) for S2L2A_B02_B03_B04_B08 (B04, B03, B02, B08)."""
    spec = specs.get(spec) if isinstance(spec, str) else spec
    m = spec.modality(modality)
    if not m.name.startswith("S2L2A"):
        raise ValueError(f"{modality}: the bundled chip is Sentinel-2 L2A; choose an S2L2A modality")
    scene = open_input(chip_path())
    reader = ModalityReader(scene, m, SceneFrame.of(scene))
    try:
        values, _ = reader.read(0, 0, spec.pixel_shape(m.name)[-1])  # the chip has no nodata
    finally:
        reader.close()
    return torch.from_numpy(values).unsqueeze(0)


def chip_location() -> Tensor:
    """(1, 2) [lat, lon] in degrees of the centre of the footprint `read_chip` reads."""
    scene = open_input(chip_path())
    frame = SceneFrame.of(scene)
    lon, lat = warp_transform(frame.crs, "EPSG:4326", [frame.left + FOOTPRINT_M / 2],
                              [frame.top - FOOTPRINT_M / 2])
    return torch.tensor([[lat[0], lon[0]]], dtype=torch.float64)
