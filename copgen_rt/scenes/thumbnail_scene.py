"""COP-GEN-Beta on georeferenced rasters of any size: the Major TOM thumbnail recipes (S2 true
colour, S1 false colour from dB, DEM hillshade) on 256 px footprints at 10 m (the thumbnails'
pixel size), generated tile by tile, blended and written as RGB COGs on the first raster's grid
(alpha where no input had data), plus a PNG quicklook per output.

It uses the scene machinery's tiling plan (`plan_tiles`), blender (`RowBlender`), writer
(`CogWriter`), per-tile seeds and staging folder, but keeps its own short loop instead of a
`SceneJob`: a Beta modality is an 8-bit picture, not bands in physical units, so none of the
job's per-modality reading (native grids, units, gap filling), encoding (bands, units, classes)
or run record applies; what the two share is exactly the pieces imported here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import rasterio
import torch

from copgen_rt import thumbnails
from copgen_rt.files import Staging
from copgen_rt.pipeline import Pipeline
from copgen_rt.scenes.blend import RowBlender
from copgen_rt.scenes.inputs.open import open_input
from copgen_rt.scenes.reader import GridReader, SceneFrame
from copgen_rt.scenes.sampling import tile_seed
from copgen_rt.scenes.state import refuse_existing
from copgen_rt.scenes.tiling import blend_weights, plan_tiles
from copgen_rt.scenes.writer import CogWriter
from copgen_rt.solvers import resolve_preset

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
        self.reader = GridReader(scene, self.frame, THUMBNAIL_GSD, list(bands),
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
        vv, vh = (db[self.scene.bands.index(b)] for b in ("VV", "VH"))
        return (float(np.nanmin(vv)), float(np.nanmax(vv))), (float(np.nanmin(vh)), float(np.nanmax(vh)))

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


def run_thumbnail_scene(pipeline: Pipeline, conditions: Mapping[str, Path], out_dir: Path,
                        generate: Sequence[str] | None = None, samples: int = 1, seed: int = 0,
                        preset: str | None = None, solver: str | None = None, steps: int | None = None,
                        others: str = "reference", overwrite: bool = False, overlap_px: int = 32,
                        batch_size: int = 4) -> list[Path]:
    """Georeferenced rasters of any size: 256 px thumbnail footprints at 10 m over the first
    raster's frame, generated per tile, blended with raised-cosine weights, written as RGB COGs
    (with an alpha band where no input had data) plus a PNG quicklook per modality."""
    spec = pipeline.spec
    names = list(conditions)
    first = ThumbnailReader(Path(conditions[names[0]]), spec.modality(names[0]).product)
    readers = {names[0]: first}
    readers.update({n: ThumbnailReader(Path(conditions[n]), spec.modality(n).product, first.frame)
                    for n in names[1:]})
    wanted = spec.canonical(generate or [n for n in spec.names if n not in conditions])
    size = spec.pixel_shape(wanted[0])[-1]
    plan = plan_tiles(first.frame, overlap_px * THUMBNAIL_GSD, footprint_m=size * THUMBNAIL_GSD,
                      align_m=THUMBNAIL_GSD, tiling="scene")
    stem = Path(conditions[names[0]]).stem
    kinds = ["mean"] + (["std"] if samples > 1 else [])
    files = {(n, k): out_dir / f"{stem}_{n}{'' if k == 'mean' else '_std'}.tif"
             for n in wanted for k in kinds}
    refuse_existing([*files.values(), *(p.with_suffix(".png") for p in files.values())], overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    transform, width, height = first.frame.grid(THUMBNAIL_GSD)
    tags = thumbnail_tags(pipeline, conditions, seed, samples, resolve_preset(preset, solver, steps), others)
    with Staging(out_dir) as staging:
        writers, blenders = {}, {}
        for key, path in files.items():
            writers[key] = CogWriter(staging, path, first.frame.crs, transform, width, height, 4, "uint8",
                                     None, ["red", "green", "blue", "alpha"], ["", "", "", ""], tags,
                                     alpha=True)
            blenders[key] = RowBlender(4, width, height, _rgba_emitter(writers[key]))
        weights = blend_weights(size, overlap_px)
        try:
            tiles = plan.tiles
            for i in range(0, len(tiles), batch_size):
                batch = tiles[i:i + batch_size]
                reads = [{n: r.read(*t.pixel_origin(THUMBNAIL_GSD), size) for n, r in readers.items()}
                         for t in batch]
                present = [(t, r) for t, r in zip(batch, reads, strict=True)
                           if any(v.any() for _, v in r.values())]
                if present:
                    _blend_batch(pipeline, wanted, names, present, samples, seed, preset, solver, steps,
                                 others, kinds, blenders, weights)
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
            thumbnails.write_png(files[key].with_suffix(".png"), np.moveaxis(rgb, 0, -1), tags)
            pictures.append(files[key].with_suffix(".png"))
        written = [staging.publish(path.name, files[key]) for key, path in staged.items()]
    return written + pictures


def _blend_batch(pipeline: Pipeline, wanted: Sequence[str], names: Sequence[str], present: list, samples: int,
                 seed: int, preset: str | None, solver: str | None, steps: int | None, others: str,
                 kinds: list[str], blenders: dict, weights: np.ndarray) -> None:
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


def thumbnail_tags(pipeline: Pipeline, conditions: Mapping[str, Path], seed: int, samples: int,
                     sampler: tuple[str, int], others: str) -> dict[str, str]:
    return pipeline.provenance.tags() | {
        "COPGEN_SEED": str(seed), "COPGEN_SOLVER": sampler[0], "COPGEN_STEPS": str(sampler[1]),
        "COPGEN_SAMPLES": str(samples), "COPGEN_OTHERS": others,
        "COPGEN_CONDITIONS": "; ".join(f"{n}<-{Path(p).name}" for n, p in conditions.items())}
