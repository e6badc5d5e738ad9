"""COP-GEN-Beta jobs: thumbnails in, thumbnails out.

Conditions are either 8-bit RGB images (PNG/JPEG/WebP, any size, centre-cropped to the model's
256 px as the reference CLI does) -> PNGs out (one per generated modality, or one per sample plus
a per-pixel standard-deviation image with `samples > 1`); or georeferenced rasters of any size,
turned into thumbnails with the Major TOM recipes (S2 true colour, S1 false colour from dB, DEM
hillshade) on 256 px footprints at 10 m (the thumbnails' pixel size), generated tile by tile,
blended and written as RGB COGs on the raster's own grid (alpha where no input had data).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from copgen_rt import thumbnails
from copgen_rt.pipeline import Pipeline
from copgen_rt.scenes.job import cond_pair
from copgen_rt.scenes.state import refuse_existing
from copgen_rt.scenes.thumbnail_scene import run_thumbnail_scene, thumbnail_tags
from copgen_rt.solvers import resolve_preset
from copgen_rt.specs import RGB8, ModelSpec

RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".jp2"}


def takes_thumbnails(spec: ModelSpec) -> bool:
    """Every modality of `spec` is an 8-bit picture (COP-GEN-Beta)."""
    return all(isinstance(m.processing, RGB8) for m in spec.modalities)


def thumbnail_conditions(spec: ModelSpec, conds: Sequence[str]) -> dict[str, Path]:
    """--cond MODALITY=FILE (image or raster) as `run_thumbnails` takes them."""
    conditions = {}
    for item in conds:
        name, path = cond_pair(item, "MODALITY=FILE, e.g. s1_rtc=s1.png")
        spec.modality(name)
        conditions[name] = Path(path)
    return conditions


def run_thumbnails(pipeline: Pipeline, conditions: Mapping[str, Path], out_dir: Path,
                   generate: Sequence[str] | None = None, samples: int = 1, seed: int = 0,
                   preset: str | None = None, solver: str | None = None, steps: int | None = None,
                   others: str = "reference", overwrite: bool = False) -> list[Path]:
    spec = pipeline.spec
    rasters = [Path(p).suffix.lower() in RASTER_SUFFIXES for p in conditions.values()]
    if rasters and all(rasters):
        return run_thumbnail_scene(pipeline, conditions, out_dir, generate, samples, seed, preset,
                                   solver, steps, others, overwrite)
    if any(rasters):
        raise ValueError("give either image thumbnails or georeferenced rasters as conditions, not both")
    images = {name: thumbnails.read_thumbnail(Path(path)) for name, path in conditions.items()}
    for name, image in images.items():
        try:
            thumbnails.center_crop(image, spec.pixel_shape(name)[-1])
        except ValueError as e:  # say which file
            raise ValueError(f"{conditions[name]}: {e}") from None
    for name in images:
        spec.modality(name)
    wanted = spec.canonical(generate or [n for n in spec.names if n not in conditions])
    if not wanted:
        raise ValueError("nothing to generate: every modality is given")
    refuse_existing(_output_paths(wanted, out_dir, samples), overwrite)
    result = pipeline.generate(wanted, {n: torch.from_numpy(u)[None] for n, u in images.items()},
                               n_samples=samples, seed=seed, preset=preset, solver=solver, steps=steps,
                               others=others)
    out_dir.mkdir(parents=True, exist_ok=True)
    tags = thumbnail_tags(pipeline, conditions, seed, samples, resolve_preset(preset, solver, steps), others)
    written = []
    for name in wanted:
        pictures = result[name].numpy()  # (samples, 256, 256, 3) uint8
        if samples == 1:
            written.append(_write_png(out_dir / f"{name}.png", pictures[0], tags))
        else:
            written += [_write_png(out_dir / f"{name}_{i:03d}.png", p, tags) for i, p in enumerate(pictures)]
            std = pictures.astype(np.float64).std(axis=0, ddof=1).mean(axis=-1)
            std_rgb = np.repeat(np.clip(std, 0, 255).astype(np.uint8)[..., None], 3, -1)
            written.append(_write_png(out_dir / f"{name}_std.png", std_rgb, tags))
    return written


def _output_paths(names: Sequence[str], out_dir: Path, samples: int) -> list[Path]:
    paths = []
    for name in names:
        paths += [out_dir / f"{name}.png"] if samples == 1 else \
            [out_dir / f"{name}_{i:03d}.png" for i in range(samples)] + [out_dir / f"{name}_std.png"]
    return paths


def _write_png(path: Path, picture: np.ndarray, tags: Mapping[str, str]) -> Path:
    thumbnails.write_png(path, picture, tags)
    return path
