"""The output stage: decoded tiles -> blended rows -> COGs in the staging folder -> published
files, with the sidecar (tile records and the run record) written last."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from copgen_rt import processing
from copgen_rt.files import Staging, write_text
from copgen_rt.phases import step
from copgen_rt.pipeline import Pipeline
from copgen_rt.scenes.blend import RowBlender
from copgen_rt.scenes.encoding import (
    GENERATED,
    NodataCodeWarning,
    blend_channels,
    class_tags,
    colormap,
    encoding,
    to_file_units,
)
from copgen_rt.scenes.fill import RowCompositor, StripSource
from copgen_rt.scenes.job import BASE_GSD, OutputSpec, SceneJob, scalar_names
from copgen_rt.scenes.reader import ModalityReader
from copgen_rt.scenes.stac import scene_item, write_item
from copgen_rt.scenes.state import RECORD_FIELD, RUN_KEY_TAG, checksum, read_record
from copgen_rt.scenes.tile_inputs import TileInputs, not_finite
from copgen_rt.scenes.tiling import Tile, blend_weights
from copgen_rt.scenes.writer import CogWriter
from copgen_rt.specs import Classes


def provenance_tags(job: SceneJob, pipeline: Pipeline, run_key: str) -> dict[str, str]:
    o = job.options
    return pipeline.provenance.tags() | {
        "COPGEN_SEED": str(o.seed),
        "COPGEN_STEPS": str(o.sampler[1]),
        "COPGEN_SOLVER": o.sampler[0],
        "COPGEN_PRESET": o.preset or ("exact" if o.solver is None and o.steps is None else "custom"),
        "COPGEN_OTHERS": o.others,
        "COPGEN_SAMPLES": str(o.samples),
        "COPGEN_OVERLAP_M": f"{o.overlap_m:g}",
        "COPGEN_TILING": o.tiling,
        "COPGEN_CONDITIONS": "; ".join(f"{n}<-{s.path.name}" for n, s in job.conditions.items())
        + "".join(f"; {n}" for n in job.scalar_conditions),
        "COPGEN_DATE": str(job.date) if job.date else "unknown (generated)",
        "COPGEN_S2_DN_OFFSET": ", ".join(
            f"{s.path.name}:{s.dn_offset:+g}" for s in job.inputs if s.product.startswith("S2")
        )
        or "n/a",
        "COPGEN_S2_DN_CONVENTION": " | ".join(
            f"{s.path.name} ({s.form}): {s.dn_convention}" for s in job.inputs if s.product.startswith("S2")
        )
        or "n/a",
        RUN_KEY_TAG: run_key,
    } | ({"COPGEN_FILL": f"{', '.join(job.filled)} from {o.fill.describe()}"} if o.fill else {})


class _Output:
    """One output file: its blender (values + validity channel) and its writer."""

    def __init__(self, job: SceneJob, out: OutputSpec, tags: dict[str, str], staging: Staging,
                 strips: StripSource | None = None):
        m = out.modality
        self.spec, self.modality = out, m
        enc = encoding(m, out.kind, job.options.samples, out.stored)
        transform, width, height = job.frame.grid(m.image_gsd)
        # --grid 10: every output on the scene's 10 m grid, each native pixel repeated (nearest)
        self.repeat = round(m.image_gsd / job.options.grid) if job.options.grid else 1
        file_grid = job.frame.grid(job.options.grid) if job.options.grid else (transform, width, height)
        self.file_height = file_grid[2]
        self.nodata = enc.nodata
        self.moved_off_nodata = 0  # filled pixels stored one step from the no-data code
        file_tags = tags | {
            "COPGEN_STATISTIC": enc.statistic,
            "COPGEN_GRID": f"{m.gsd:g} m (native)"
            if self.repeat == 1
            else f"{job.options.grid:g} m (native {m.gsd:g} m pixels repeated)",
        }
        if strips is not None and out.kind == "mean":
            which = f"{job.stem}_{m.file_label}_generated.tif"
            file_tags["COPGEN_STATISTIC"] = (f"gap filled: input pixels kept where valid, a {enc.statistic} "
                                             f"in the gap ({which} says which)")
            if out.stored is not None:
                file_tags["COPGEN_STATISTIC"] += f", rounded to the input's {out.stored.dtype}"
        self.writer = CogWriter(
            staging,
            out.path,
            job.frame.crs,
            *file_grid,
            len(enc.names),
            enc.dtype,
            enc.nodata,
            enc.names,
            enc.units,
            file_tags,
            categorical=enc.categorical,
            scales=enc.scales,
            offsets=enc.offsets,
            colormap=colormap(enc.classes) if enc.classes else None,
            band_tags=class_tags(enc.classes) if enc.classes else None,
        )
        self.blender = RowBlender(blend_channels(m, out.kind), width, height, self._emit)
        self.compositor = None if strips is None else RowCompositor(
            out.kind, m, strips, job.options.fill.feather if job.options.fill else 0, height, self._write)

    def _emit(self, row: int, sums: np.ndarray, weights: np.ndarray) -> None:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = sums / weights
        valid = (weights > 0) & (mean[-1] > 1e-6)  # any part of the pixel had input data
        values = mean[:-1]
        p = self.modality.processing
        if isinstance(p, Classes) and self.spec.kind == "mean":
            codes = np.asarray(p.codes, np.uint8)[np.nan_to_num(values, nan=-1).argmax(axis=0)]
            out = np.where(valid, codes, self.nodata)[None]
        else:
            out = np.where(valid[None], values, np.nan)
        if self.compositor is not None:
            self.compositor.push(row, out)
        else:
            self._write(row, out)

    def _write(self, row: int, out: np.ndarray) -> None:
        if self.spec.stored is not None:
            out, moved = self.spec.stored.store(out)
            self.moved_off_nodata += moved
        if self.repeat > 1:
            r = self.repeat
            out = out.repeat(r, axis=1).repeat(r, axis=2)[
                :, : self.file_height - row * r, : self.writer.width
            ]
            row *= r
            if not out.shape[1]:  # native rows past the scene's last 10 m row
                return
        self.writer.write_rows(row, out)


class SceneOutputs:
    """Every output file of a scene, built in `staging` and published together by `publish`."""

    def __init__(self, job: SceneJob, tags: dict[str, str], staging: Staging):
        self.job, self.tags, self.staging = job, tags, staging
        self.strips = {name: StripSource(ModalityReader(job.inputs[0], job.spec.modality(name), job.frame),
                                         job.gaps[name]) for name in job.filled}
        self.files = [_Output(job, o, tags, staging, self.strips.get(o.modality.name)) for o in job.outputs]
        self.tiles: dict[str, dict] = {}  # the sidecar's per-tile records
        self._weights: dict[float, np.ndarray] = {}
        self.peak_rows = 0

    def add(
        self, present: list[TileInputs], latents: dict[str, torch.Tensor], decoded: dict[str, torch.Tensor]
    ) -> None:
        """Blend a batch of decoded tiles. Where inputs had data a non-finite output is an
        error, never a product."""
        for spec in self.job.outputs:
            rows = decoded[spec.modality.name].reshape(len(present), -1)  # a tile's samples are adjacent
            finite = torch.isfinite(rows).all(dim=1)
            if not bool(finite.all()):
                raise not_finite(self.job, present[int((~finite).nonzero()[0])], spec.modality.name)
        for out in self.files:
            self._accumulate(out, present, decoded[out.modality.name])
        self._record_tiles(present, latents)

    def flush(self, last: Tile) -> None:
        """Write the rows no tile after `last` can touch."""
        for out in self.files:
            self.peak_rows = max(self.peak_rows, out.blender.buffered_rows)
            out.blender.flush(self.job.plan.final_rows(last, out.modality.image_gsd, out.blender.height))

    def abort(self) -> None:
        for out in self.files:
            out.writer.abort()
        self._close_strips()

    def _close_strips(self) -> None:
        for strips in self.strips.values():
            strips.close()
        self.strips = {}

    @property
    def generated_pixels(self) -> dict[str, int]:
        """Gap filling: pixels generated per filled modality (0 everywhere: the outputs are the input)."""
        return {out.modality.name: out.compositor.generated_pixels for out in self.files
                if out.compositor is not None and out.spec.kind == "generated"}

    def add_copied(self, copied: list[TileInputs]) -> None:
        """Gap filling: tiles without a gap pixel are the input, written by the compositors."""
        for t in copied:
            self.tiles[t.tile.key] = _tile_entry(t) | {"fill": "copied"}

    def publish(self) -> list[Path]:
        """Finish the COGs, then rename them into place, quicklooks next, the sidecar (the run
        record with every output's checksum) last: a run cut short in between leaves no record,
        and its rerun finishes the set."""
        job = self.job
        self._close_strips()
        staged = []
        for out in self.files:  # each finishes its COG (overviews, compression): seconds for a scene
            staged.append(out.writer.close())
            stored = out.spec.stored
            if stored is not None and out.moved_off_nodata:
                warnings.warn(f"{out.spec.path.name}: {out.moved_off_nodata} filled pixels held "
                              f"{stored.nodata}, the no-data code of the input's {stored.dtype}; stored "
                              "one step from it",
                              NodataCodeWarning, stacklevel=2)
            step("writing outputs", len(staged), len(self.files))
        record = {o.path.name: checksum(s) for o, s in zip(job.outputs, staged, strict=True)}
        pictures = []
        if job.options.quicklook:
            from copgen_rt.scenes.quicklook import write_quicklooks

            pictures = write_quicklooks(
                [
                    (o.modality, s, o.path.with_suffix(".png"))
                    for o, s in zip(job.outputs, staged, strict=True)
                    if o.kind == "mean"
                ]
            )
            record |= {p.name: checksum(p) for p in pictures}
        dates = [d for entry in self.tiles.values() for d in entry.get("generated_date", [])]
        item = scene_item(job, self.tags, staged, record, dates)
        paths = [self.staging.publish(s.name, o.path) for o, s in zip(job.outputs, staged, strict=True)]
        write_item(job.stac_item, item)
        record[job.stac_item.name] = checksum(job.stac_item)
        sidecar = {"tiles": self.tiles, "plan": job.plan.describe(), **self.tags, RECORD_FIELD: record}
        write_text(job.sidecar, json.dumps(sidecar, indent=1) + "\n")
        return paths + pictures + [job.sidecar, job.stac_item]  # written item first, listed after

    def _accumulate(self, out: _Output, present: list[TileInputs], x: torch.Tensor) -> None:
        job, m = self.job, out.modality
        n = job.options.samples
        x = x.reshape(len(present), n, *x.shape[1:])
        if out.spec.kind == "generated":  # which pixels: the compositor knows, from the gap
            values = np.full((len(present), 1, *x.shape[-2:]), GENERATED, np.float32)
        elif isinstance(m.processing, Classes):
            scores = ((x + 1.0) / 2.0).mean(dim=1).numpy()
            if out.spec.kind == "confidence":
                clipped = np.clip(scores, 0, None)
                values = (clipped.max(axis=1) / np.maximum(clipped.sum(axis=1), 1e-6))[:, None]
            else:
                values = scores
        else:
            physical = processing.postprocess(m, x.reshape(-1, *x.shape[2:]))
            phys = to_file_units(m, physical.numpy()).reshape(len(present), n, *x.shape[2:])
            values = phys.mean(axis=1) if out.spec.kind == "mean" else phys.std(axis=1, ddof=1)
        size = values.shape[-1]
        gsd = m.image_gsd
        if gsd not in self._weights:
            self._weights[gsd] = blend_weights(size, round(job.options.overlap_m / gsd))
        w = self._weights[gsd]
        factor = round(gsd / BASE_GSD)
        for t, v in zip(present, values, strict=True):
            valid = t.valid.reshape(size, factor, size, factor).mean(axis=(1, 3))
            col, row = t.tile.pixel_origin(gsd)
            out.blender.add(col, row, np.concatenate([v, valid[None]], axis=0), w)

    def _record_tiles(self, present: list[TileInputs], latents: dict[str, torch.Tensor]) -> None:
        job = self.job
        loc_name, date_name = scalar_names(job.spec)
        n = job.options.samples
        for i, t in enumerate(present):
            entry = _tile_entry(t)
            missing = [name for name in job.conditions if name not in t.conditions]
            if missing:
                entry["conditions_without_data"] = missing
            if job.filled:
                entry["fill"] = "filled" if t.known else "generated"  # no valid pixel: other conditions alone
            rows = slice(i * n, (i + 1) * n)
            if loc_name in job.generate:
                entry["generated_lat_lon"] = processing.vector_to_latlon(latents[loc_name][rows]).tolist()
            if date_name in job.generate:
                days = processing.vector_to_date(latents[date_name][rows]).tolist()
                entry["generated_date"] = [f"{y:04d}-{m:02d}-{d:02d}" for d, m, y in days]
            self.tiles[t.tile.key] = entry


def _tile_entry(t: TileInputs) -> dict[str, object]:
    return {"centre_lat_lon": [round(t.location[0], 6), round(t.location[1], 6)]}


def add_quicklooks(job: SceneJob, pictures: list[Path]) -> list[Path]:
    """Quicklooks asked for over a complete run: drawn from its outputs, added to its record."""
    if not pictures:
        return []
    from copgen_rt.scenes.quicklook import write_quicklooks

    written = write_quicklooks(
        [
            (o.modality, o.path, o.path.with_suffix(".png"))
            for o in job.outputs
            if o.path.with_suffix(".png") in pictures
        ]
    )
    record = read_record(job.sidecar) or {}
    record[RECORD_FIELD] = record.get(RECORD_FIELD, {}) | {p.name: checksum(p) for p in written}
    write_text(job.sidecar, json.dumps(record, indent=1) + "\n")
    return written
