"""A tile's inputs: every condition read on its native grid with gaps filled, where any input
has data (on the 10 m grid), and the tile's centre location; for gap filling, the targets'
values and where they are known."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from rasterio.warp import transform as warp_transform

from copgen_rt.errors import SceneError
from copgen_rt.scenes.composite import tile_action
from copgen_rt.scenes.job import BASE_GSD, SceneJob
from copgen_rt.scenes.reader import ModalityReader, coverage_reader
from copgen_rt.scenes.tiling import Tile
from copgen_rt.specs import Classes, Modality, Reflectance


@dataclass
class TileInputs:
    tile: Tile
    conditions: dict[str, np.ndarray]  # physical values per image modality with data here (C, h, w)
    valid: np.ndarray  # (192, 192) bool on the 10 m grid: any input had data
    location: tuple[float, float]  # tile centre (lat, lon)
    # gap filling: {target: (physical values, valid and not masked)} where any pixel is known
    known: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    copy: bool = False  # gap filling: no target pixel of the tile is a gap (nothing to generate)


class TileReader:
    def __init__(self, job: SceneJob):
        self.job = job
        self.readers = {name: ModalityReader(scene, job.spec.modality(name), job.frame)
                        for name, scene in job.conditions.items()}
        self.targets = {name: ModalityReader(job.inputs[0], job.spec.modality(name), job.frame)
                        for name in job.filled}
        sources = {id(s): s for s in [*job.conditions.values(), *job.inputs[:1]]}.values()
        self.coverage = [coverage_reader(s, job.frame, BASE_GSD) for s in sources]
        self.base_px = round(job.plan.footprint_m / BASE_GSD)

    def close(self) -> None:
        for r in [*self.readers.values(), *self.targets.values(), *self.coverage]:
            r.close()

    def read(self, tile: Tile) -> TileInputs | None:
        """Conditions of one tile with gaps filled, or None if no input has data there. A modality
        without a valid pixel in the tile is left out: it is then neither given nor generated
        there (the `others` policy), never fed as zeros. Gap filling: a tile without a gap pixel
        is a copy, and nothing else of it is read."""
        known, copy = self._targets(tile)
        if copy:
            everywhere = np.ones((self.base_px, self.base_px), bool)
            return TileInputs(tile, {}, everywhere, self._centre_latlon(tile), known, copy=True)
        valid = np.zeros((self.base_px, self.base_px), bool)
        conditions = {}
        for name, reader in self.readers.items():
            m = reader.modality
            size = round(self.job.plan.footprint_m / m.image_gsd)
            col, row = tile.pixel_origin(m.image_gsd)
            data, ok = reader.read(col, row, size)
            if ok.any():
                _check_plausible(reader, data, ok, tile)
                conditions[name] = _fill_gaps(data, ok, m)
        col, row = tile.pixel_origin(BASE_GSD)
        for cover in self.coverage:
            valid |= cover.read(col, row, self.base_px)[1]
        if (self.readers or self.targets) and not valid.any():
            return None
        if not self.readers and not self.targets:
            valid[:] = True
        return TileInputs(tile, conditions, valid, self._centre_latlon(tile), known)

    def _targets(self, tile: Tile) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], bool]:
        """Gap filling: each target's values where any is known, and whether the whole tile is a
        copy (there are targets, and no target pixel inside the scene is a gap; the padding past
        its edge is not one)."""
        known, actions = {}, []
        for name, reader in self.targets.items():
            size = round(self.job.plan.footprint_m / reader.modality.image_gsd)
            col, row = tile.pixel_origin(reader.modality.image_gsd)
            data, ok = reader.read(col, row, size)
            r0, c0 = max(0, -row), max(0, -col)  # the part of the tile inside the scene
            r1, c1 = min(size, reader.height - row), min(size, reader.width - col)
            gap = ~ok
            mask = self.job.gaps[name]
            if mask is not None:
                gap[r0:r1, c0:c1] |= mask[row + r0:row + r1, col + c0:col + c1]
            actions.append(tile_action(gap[r0:r1, c0:c1]))
            if actions[-1] != "generate":
                _check_plausible(reader, data, ~gap, tile)
                known[name] = (data, ~gap)
        return known, bool(actions) and all(a == "copy" for a in actions)

    def _centre_latlon(self, tile: Tile) -> tuple[float, float]:
        half = self.job.plan.footprint_m / 2
        x, y = tile.left + half, tile.top - half
        lon, lat = warp_transform(self.job.frame.crs, "EPSG:4326", [x], [y])
        return float(lat[0]), float(lon[0])


def _check_plausible(reader: ModalityReader, data: np.ndarray, valid: np.ndarray, tile: Tile) -> None:
    """Values no product holds (S2 DNs of 1e30 or after a wild --s2-offset, a DEM of 1e30 m or
    -1e6 m) are an error: fed to the model they give garbage, finite or not."""
    p = reader.modality.processing
    bounds = getattr(p, "plausible", None)
    values = data[:, valid]
    if bounds is None or not values.size:
        return
    low, high = float(values.min()), float(values.max())
    if low < bounds[0] or high > bounds[1]:
        scene = reader.scene
        if isinstance(p, Reflectance):
            raise SceneError(
                f"{scene.path.name}: {reader.modality.name} values {low:.4g} to {high:.4g} in tile "
                f"{tile.key} (DN offset {scene.dn_offset:+g} included) are no Sentinel-2 DNs "
                f"({bounds[0]:g} to {bounds[1]:g}); check the file's scaling and --s2-offset"
            )
        raise SceneError(
            f"{scene.path.name}: {reader.modality.name} values {low:.4g} to {high:.4g} {p.units} in tile "
            f"{tile.key} are not plausible ({bounds[0]:g} to {bounds[1]:g} {p.units}); check the file's "
            "units and scaling"
        )


def _fill_gaps(data: np.ndarray, valid: np.ndarray, m: Modality) -> np.ndarray:
    """Give nodata pixels a neutral value (per-band mean, or the most common class) so the model
    sees plausible input; their outputs are masked as nodata afterwards."""
    if valid.all():
        return data
    out = data.copy()
    for c in range(out.shape[0]):
        band = out[c]
        if isinstance(m.processing, Classes):
            values, counts = np.unique(band[valid], return_counts=True)
            band[~valid] = values[counts.argmax()]
        else:
            band[~valid] = band[valid].mean()
    return out


def not_finite(job: SceneJob, tile: TileInputs, name: str) -> SceneError:
    ranges = "; ".join(
        f"{m} from {job.conditions[m].path.name}: {v.min():.4g} to {v.max():.4g}"
        for m, v in tile.conditions.items()
    )
    return SceneError(
        f"tile {tile.tile.key}: the generated {name} is not finite (NaN or infinite) where the "
        f"inputs have data ({ranges or 'no image input'}); inputs far outside their units "
        "(S2 DNs beyond 0-65535, a wrong --s2-offset or --s1-units) make the model diverge"
    )
