"""Helpers for scene tests: synthetic rasters and a pipeline stand-in that echoes its inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import torch
from affine import Affine

from copgen_rt import processing, specs
from copgen_rt.pipeline import Provenance

CHIPS = Path(__file__).parent / "data" / "majortom"


def write_raster(path: Path, data: np.ndarray, crs="EPSG:32633", transform=None, nodata=None,
                 descriptions=None, tags=None) -> Path:
    count, height, width = data.shape
    transform = transform or Affine(10, 0, 500000, 0, -10, 5200000)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count,
                       dtype=data.dtype, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(data)
        if descriptions:
            for i, d in enumerate(descriptions, 1):
                dst.set_band_description(i, d)
        if tags:
            dst.update_tags(**tags)
    return path


def smooth_s2(height: int, width: int, seed: int = 0) -> np.ndarray:
    """12-band int16 DNs varying smoothly in space (so any seam would show)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    rng = np.random.default_rng(seed)
    bands = []
    for b in range(12):
        fx, fy, phase = rng.uniform(0.002, 0.01), rng.uniform(0.002, 0.01), rng.uniform(0, 6)
        bands.append(1500 + 800 * np.sin(fx * x + phase) * np.cos(fy * y) + 30 * b)
    return np.stack(bands).astype(np.int16)


class EchoPipeline:
    """Stands in for a Pipeline: S2L1C outputs echo the S2L2A input with the same bands (so a
    perfect tiler/blender reproduces the input exactly); other outputs are a per-tile constant
    (so seams between disagreeing tiles can be measured)."""

    def __init__(self):
        self.spec = specs.get("copgen-demo")
        self.provenance = Provenance(self.spec.name, {}, random=True)
        self.is_random = True
        self.calls = 0

    def generate(self, generate, conditions, n_samples=1, seed=None, batch_size=None, **_):
        out = {}
        for name in generate:
            m = self.spec.modality(name)
            source = name.replace("S2L1C", "S2L2A")
            if m.is_image and source in conditions and source != name:
                x = processing.preprocess(self.spec.modality(source), conditions[source])
            else:
                shape = self.spec.pixel_shape(name) if m.is_image else m.latent_shape
                level = torch.tensor([float(s % 1000) / 1000.0 for s in seed])
                x = level.view(-1, 1, 1, 1) * torch.ones(len(seed), *shape)
            out[name] = x.repeat_interleave(n_samples, dim=0)
        self.calls += 1
        return out

    def decode(self, latents, physical_units=True):
        return dict(latents)
