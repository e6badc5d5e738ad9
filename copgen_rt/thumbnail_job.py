"""COP-GEN-Beta jobs: thumbnails in, thumbnails out.

Conditions are 8-bit RGB images (PNG/JPEG/WebP, any size, centre-cropped to the model's 256 px
as the reference CLI does) or georeferenced rasters, which are first turned into the thumbnail
the model expects with the Major TOM recipes (S2 true colour, S1 false colour from dB, DEM
hillshade) over the raster's central 256 x 256 px footprint at 10 m. Outputs are PNGs (one per
generated modality, or one per sample plus a per-pixel standard-deviation image with
`samples > 1`) and, when a condition was georeferenced, GeoTIFFs (RGB, with that footprint's
CRS and transform and a mask where the input had no data).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import rasterio
import torch
from affine import Affine

from copgen_rt import thumbnails
from copgen_rt.pipeline import Pipeline
from copgen_rt.scenes.reader import GridReader, SceneFrame, open_input

RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".jp2"}
THUMBNAIL_GSD = 10.0  # Major TOM thumbnails: 1068 px over a 10.68 km cell


@dataclass(frozen=True)
class Footprint:
    crs: object
    transform: Affine
    valid: np.ndarray  # (256, 256) bool


def geotiff_thumbnail(path: Path, product: str, size: int = 256) -> tuple[np.ndarray, Footprint]:
    """The Major TOM thumbnail of a raster's central footprint, and where it lies."""
    scene = open_input(path, product=product)
    frame = SceneFrame.of(scene)
    _, width, height = frame.grid(THUMBNAIL_GSD)
    col, row = (width - size) // 2, (height - size) // 2
    bands = {"S2L2A": ("B04", "B03", "B02"), "S2L1C": ("B04", "B03", "B02"), "S1RTC": ("VV", "VH"),
             "DEM": ("DEM",)}[scene.product]
    missing = [b for b in bands if b not in scene.bands]
    if missing:
        raise ValueError(f"{path.name}: bands {' '.join(missing)} are needed for the {scene.product} thumbnail")
    reader = GridReader(scene, frame, THUMBNAIL_GSD, [scene.bands.index(b) + 1 for b in bands],
                        rasterio.enums.Resampling.average)
    try:
        data, valid = reader.read(col, row, size)
    finally:
        reader.close()
    if not valid.any():
        raise ValueError(f"{path.name}: no valid pixel in the central {size} px footprint")
    if scene.product.startswith("S2"):
        picture = thumbnails.s2_true_colour(*(data + scene.dn_offset))
    elif scene.product == "S1RTC":
        db = data if scene.units == "db" else 10.0 * np.log10(np.maximum(data, 1e-12))
        db = np.where(valid, db, np.nan)
        picture = thumbnails.s1_false_colour(db[0], db[1])
    else:
        picture = thumbnails.dem_hillshade(data[0], THUMBNAIL_GSD)
    t = frame.grid(THUMBNAIL_GSD)[0]
    transform = t @ Affine.translation(col, row)
    return picture, Footprint(frame.crs, transform, valid)


def run_thumbnails(pipeline: Pipeline, conditions: Mapping[str, Path], out_dir: Path,
                   generate: Sequence[str] | None = None, samples: int = 1, seed: int = 0,
                   preset: str | None = None, solver: str | None = None, steps: int | None = None,
                   others: str = "reference", overwrite: bool = False) -> list[Path]:
    spec = pipeline.spec
    images: dict[str, np.ndarray] = {}
    footprint: Footprint | None = None
    for name, path in conditions.items():
        m = spec.modality(name)
        path = Path(path)
        if path.suffix.lower() in RASTER_SUFFIXES:
            images[name], where = geotiff_thumbnail(path, m.product)
            footprint = footprint or where
        else:
            images[name] = thumbnails.read_thumbnail(path)
    wanted = spec.canonical(generate or [n for n in spec.names if n not in conditions])
    if not wanted:
        raise ValueError("nothing to generate: every modality is given")
    plan = _output_paths(wanted, out_dir, samples, footprint is not None)
    if not overwrite:
        for path in plan:
            if path.exists():
                from copgen_rt.scenes.run import OutputExistsError

                raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
    result = pipeline.generate(wanted, {n: torch.from_numpy(u)[None] for n, u in images.items()},
                               n_samples=samples, seed=seed, preset=preset, solver=solver, steps=steps,
                               others=others)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in wanted:
        pictures = result[name].numpy()  # (samples, 256, 256, 3) uint8
        if samples == 1:
            written.append(_write_png(out_dir / f"{name}.png", pictures[0]))
        else:
            written += [_write_png(out_dir / f"{name}_{i:03d}.png", p) for i, p in enumerate(pictures)]
            std = pictures.astype(np.float64).std(axis=0, ddof=1).mean(axis=-1)
            written.append(_write_png(out_dir / f"{name}_std.png",
                                      np.repeat(np.clip(std, 0, 255).astype(np.uint8)[..., None], 3, -1)))
        if footprint is not None:
            written.append(_write_geotiff(out_dir / f"{name}.tif", pictures[0], footprint, pipeline))
    return written


def _output_paths(names: Sequence[str], out_dir: Path, samples: int, georeferenced: bool) -> list[Path]:
    paths = []
    for name in names:
        paths += [out_dir / f"{name}.png"] if samples == 1 else \
            [out_dir / f"{name}_{i:03d}.png" for i in range(samples)] + [out_dir / f"{name}_std.png"]
        if georeferenced:
            paths.append(out_dir / f"{name}.tif")
    return paths


def _write_png(path: Path, picture: np.ndarray) -> Path:
    thumbnails.write_png(path, picture)
    return path


def _write_geotiff(path: Path, picture: np.ndarray, where: Footprint, pipeline: Pipeline) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    profile = dict(driver="GTiff", width=picture.shape[1], height=picture.shape[0], count=3, dtype="uint8",
                   crs=where.crs, transform=where.transform, tiled=True, blockxsize=256, blockysize=256,
                   compress="deflate", photometric="RGB")
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(np.moveaxis(picture, -1, 0))
        dst.write_mask((where.valid * 255).astype(np.uint8))
        for i, band in enumerate(("red", "green", "blue"), 1):
            dst.set_band_description(i, band)
        dst.update_tags(COPGEN_MODEL=pipeline.spec.name, COPGEN_RANDOM_WEIGHTS=str(pipeline.is_random).lower())
    os.replace(tmp, path)
    return path
