"""COP-GEN-Beta jobs: thumbnails in, thumbnails out.

Conditions are either 8-bit RGB images (PNG/JPEG/WebP, any size, centre-cropped to the model's
256 px as the reference CLI does) -> PNGs out (one per generated modality, or one per sample plus
a per-pixel standard-deviation image with `samples > 1`); or georeferenced rasters of any size,
turned into thumbnails with the Major TOM recipes (S2 true colour, S1 false colour from dB, DEM
hillshade) on 256 px footprints at 10 m (the thumbnails' pixel size), generated tile by tile,
blended and written as RGB COGs on the raster's own grid (alpha where no input had data).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import rasterio
import torch

from copgen_rt import thumbnails
from copgen_rt.files import Staging
from copgen_rt.pipeline import Pipeline
from copgen_rt.solvers import resolve_preset
from copgen_rt.scenes.reader import GridReader, SceneFrame, open_input

RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".jp2"}
THUMBNAIL_GSD = 10.0  # Major TOM thumbnails: 1068 px over a 10.68 km cell


class ThumbnailReader:
    """Major TOM thumbnails of any window of a raster, on the 10 m grid of a scene frame."""

    def __init__(self, path: Path, product: str, frame: SceneFrame | None = None):
        scene = open_input(path, product=product)
        self.frame = frame or SceneFrame.of(scene)
        self.product = scene.product
        self.scene = scene
        bands = {"S2L2A": ("B04", "B03", "B02"), "S2L1C": ("B04", "B03", "B02"), "S1RTC": ("VV", "VH"),
                 "DEM": ("DEM",)}.get(scene.product)
        if bands is None or any(b not in scene.bands for b in bands):
            raise ValueError(f"{Path(path).name}: no thumbnail recipe for {scene.product} bands "
                             f"{' '.join(scene.bands)}")
        self.reader = GridReader(scene, self.frame, THUMBNAIL_GSD, [scene.bands.index(b) + 1 for b in bands],
                                 rasterio.enums.Resampling.average)
        # One S1 stretch for the whole raster (Major TOM stretched per 10.68 km cell), so that
        # neighbouring tiles see the same colours for the same backscatter.
        self.s1_ranges = self._db_ranges(path) if scene.product == "S1RTC" else None

    def _db_ranges(self, path: Path) -> tuple[tuple[float, float], tuple[float, float]]:
        with rasterio.open(path) as src:
            factor = max(1, max(src.width, src.height) // 1024)
            shape = (src.count, max(1, src.height // factor), max(1, src.width // factor))
            data = src.read(out_shape=shape, masked=True).astype(np.float64).filled(np.nan)
        db = data if self.scene.units == "db" else 10.0 * np.log10(np.where(data > 0, data, np.nan))
        idx = [self.scene.bands.index(b) for b in ("VV", "VH")]
        return tuple((float(np.nanmin(db[i])), float(np.nanmax(db[i]))) for i in idx)

    def read(self, col: int, row: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (size, size, 3) thumbnail and its validity mask."""
        data, valid = self.reader.read(col, row, size)
        if not valid.any():
            return np.zeros((size, size, 3), np.uint8), valid
        if self.product.startswith("S2"):
            return thumbnails.s2_true_colour(*(data + self.scene.dn_offset)), valid
        if self.product == "S1RTC":
            db = data if self.scene.units == "db" else 10.0 * np.log10(np.maximum(data, 1e-12))
            db = np.where(valid, db, np.nan)
            return thumbnails.s1_false_colour(db[0], db[1], self.s1_ranges), valid
        dem = np.where(valid, data[0], data[0][valid].mean())
        return thumbnails.dem_hillshade(dem, THUMBNAIL_GSD), valid

    def close(self) -> None:
        self.reader.close()


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
    plan = _output_paths(wanted, out_dir, samples)
    if not overwrite:
        for path in plan:
            if path.exists():
                from copgen_rt.scenes.run import OutputExistsError

                raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
    result = pipeline.generate(wanted, {n: torch.from_numpy(u)[None] for n, u in images.items()},
                               n_samples=samples, seed=seed, preset=preset, solver=solver, steps=steps,
                               others=others)
    out_dir.mkdir(parents=True, exist_ok=True)
    tags = _provenance_tags(pipeline, conditions, seed, samples, resolve_preset(preset, solver, steps), others)
    written = []
    for name in wanted:
        pictures = result[name].numpy()  # (samples, 256, 256, 3) uint8
        if samples == 1:
            written.append(_write_png(out_dir / f"{name}.png", pictures[0], tags))
        else:
            written += [_write_png(out_dir / f"{name}_{i:03d}.png", p, tags) for i, p in enumerate(pictures)]
            std = pictures.astype(np.float64).std(axis=0, ddof=1).mean(axis=-1)
            written.append(_write_png(out_dir / f"{name}_std.png",
                                      np.repeat(np.clip(std, 0, 255).astype(np.uint8)[..., None], 3, -1), tags))
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


def _provenance_tags(pipeline: Pipeline, conditions: Mapping[str, Path], seed: int, samples: int,
                     sampler: tuple[str, int], others: str) -> dict[str, str]:
    return pipeline.provenance.tags() | {
        "COPGEN_SEED": str(seed), "COPGEN_SOLVER": sampler[0], "COPGEN_STEPS": str(sampler[1]),
        "COPGEN_SAMPLES": str(samples), "COPGEN_OTHERS": others,
        "COPGEN_CONDITIONS": "; ".join(f"{n}<-{Path(p).name}" for n, p in conditions.items())}


def run_thumbnail_scene(pipeline: Pipeline, conditions: Mapping[str, Path], out_dir: Path,
                        generate: Sequence[str] | None = None, samples: int = 1, seed: int = 0,
                        preset: str | None = None, solver: str | None = None, steps: int | None = None,
                        others: str = "reference", overwrite: bool = False, overlap_px: int = 32,
                        batch_size: int = 4) -> list[Path]:
    """Georeferenced rasters of any size: 256 px thumbnail footprints at 10 m over the first
    raster's frame, generated per tile, blended with raised-cosine weights, written as RGB COGs
    (with an alpha band where no input had data) plus a PNG quicklook per modality."""
    from copgen_rt.scenes.blend import RowBlender
    from copgen_rt.scenes.run import OutputExistsError
    from copgen_rt.scenes.tiling import blend_weights, plan_tiles
    from copgen_rt.scenes.writer import CogWriter

    spec = pipeline.spec
    names = list(conditions)
    first = ThumbnailReader(Path(conditions[names[0]]), spec.modality(names[0]).product)
    readers = {names[0]: first}
    readers.update({n: ThumbnailReader(Path(conditions[n]), spec.modality(n).product, first.frame)
                    for n in names[1:]})
    wanted = spec.canonical(generate or [n for n in spec.names if n not in conditions])
    size = spec.pixel_shape(wanted[0])[-1]
    plan = plan_tiles(first.frame, overlap_px * THUMBNAIL_GSD, footprint_m=size * THUMBNAIL_GSD,
                      align_m=THUMBNAIL_GSD)
    stem = Path(conditions[names[0]]).stem
    kinds = ["mean"] + (["std"] if samples > 1 else [])
    files = {(n, k): out_dir / f"{stem}_{n}{'' if k == 'mean' else '_std'}.tif" for n in wanted for k in kinds}
    if not overwrite:
        for path in [*files.values(), *(p.with_suffix(".png") for p in files.values())]:
            if path.exists():
                raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)
    transform, width, height = first.frame.grid(THUMBNAIL_GSD)
    tags = _provenance_tags(pipeline, conditions, seed, samples, resolve_preset(preset, solver, steps), others)
    with Staging(out_dir) as staging:
        writers, blenders = {}, {}
        for key, path in files.items():
            writers[key] = CogWriter(staging, path, first.frame.crs, transform, width, height, 4, "uint8", None,
                                     ["red", "green", "blue", "alpha"], ["", "", "", ""], tags, alpha=True)
            blenders[key] = RowBlender(4, width, height, _rgba_emitter(writers[key]))
        weights = blend_weights(size, overlap_px)
        try:
            tiles = plan.tiles
            for i in range(0, len(tiles), batch_size):
                batch = tiles[i:i + batch_size]
                reads = [{n: r.read(*t.pixel_origin(THUMBNAIL_GSD), size) for n, r in readers.items()}
                         for t in batch]
                present = [(t, r) for t, r in zip(batch, reads) if any(v.any() for _, v in r.values())]
                if present:
                    _blend_batch(pipeline, wanted, names, present, samples, seed, preset, solver, steps, others,
                                 kinds, blenders, weights)
                last = batch[-1]
                for blender in blenders.values():
                    blender.flush(plan.final_rows(last, THUMBNAIL_GSD, height))
            staged = {key: writer.close() for key, writer in writers.items()}
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise
        finally:
            for reader in readers.values():
                reader.close()
        pictures = []
        for key, path in staged.items():
            with rasterio.open(path) as src:
                factor = max(1, max(src.width, src.height) // 1024)
                rgb = src.read([1, 2, 3], out_shape=(3, max(1, src.height // factor),
                                                     max(1, src.width // factor)))
            pictures.append(_write_png(files[key].with_suffix(".png"), np.moveaxis(rgb, 0, -1), tags))
        written = [staging.publish(path.name, files[key]) for key, path in staged.items()]
    return written + pictures


def _blend_batch(pipeline: Pipeline, wanted: Sequence[str], names: Sequence[str], present: list, samples: int,
                 seed: int, preset: str | None, solver: str | None, steps: int | None, others: str,
                 kinds: list[str], blenders: dict, weights: np.ndarray) -> None:
    from copgen_rt.scenes.run import tile_seed

    conds = {n: torch.from_numpy(np.stack([r[n][0] for _, r in present])) for n in names}
    latents = pipeline.generate(wanted, conds, n_samples=samples, preset=preset, solver=solver,
                                steps=steps, others=others, decode=False,
                                seed=[tile_seed(seed, t) for t, _ in present])
    decoded = pipeline.decode(latents, physical_units=False)  # blend before rounding
    for name in wanted:
        rgb = ((decoded[name] + 1.0) * 0.5).clamp(0, 1).mul(255.0).numpy()
        rgb = rgb.reshape(len(present), samples, *rgb.shape[1:])
        for j, (tile, r) in enumerate(present):
            valid = np.any([v for _, v in r.values()], axis=0)[None].astype(np.float64)
            col, row = tile.pixel_origin(THUMBNAIL_GSD)
            for kind in kinds:
                values = rgb[j].mean(0) if kind == "mean" else \
                    rgb[j].std(0, ddof=1).mean(0, keepdims=True).repeat(3, 0)
                blenders[(name, kind)].add(col, row, np.concatenate([values, valid]), weights)


def _rgba_emitter(writer):
    def emit(row: int, sums: np.ndarray, weights: np.ndarray) -> None:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = sums / weights
        valid = (weights > 0) & (mean[-1] > 1e-6)
        rgb = np.where(valid[None], np.clip(np.rint(mean[:3]), 0, 255), 0)
        writer.write_rows(row, np.concatenate([rgb, valid[None] * 255.0]))
    return emit
