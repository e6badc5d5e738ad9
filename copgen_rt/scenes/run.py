"""Whole scenes: inputs -> tiles -> batches -> pipeline -> blend -> COG writers.

`SceneJob` plans everything up front (what is read, what is generated, which files are written)
so that `copgen-rt info scene.tif` and `copgen-rt infer` share one description, and `run` then
streams tiles through the pipeline in row-major order with bounded memory.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import rasterio
import torch
from rasterio.warp import transform as warp_transform

from copgen_rt import processing
from copgen_rt.device import available_host_memory
from copgen_rt.files import (Staging, atomic_write, check_writable, exclusive, file_sha256,
                             is_regular_file, own_folder, write_error, write_text)
from copgen_rt.pipeline import Pipeline
from copgen_rt.scenes.blend import RowBlender
from copgen_rt.scenes.reader import (COARSE_FACTOR, CoarseInputWarning, ModalityReader, SceneError,
                                     SceneFrame, SceneInput, coverage_reader)
from copgen_rt.scenes.tiling import Tile, TilingPlan, blend_weights, plan_tiles
from copgen_rt.scenes.writer import CogWriter
from copgen_rt.solvers import resolve_preset
from copgen_rt.specs import Classes, Date, LatLon, LogRange, ModelSpec, Modality, Reflectance

BASE_GSD = 10.0  # validity masks are kept on the finest grid
LOCATION, DATE = "location", "date"
MEMORY_FRACTION = 0.5  # of the available memory, for the blenders (weights, GDAL and tiles need the rest)


class OutputExistsError(Exception):
    pass


class DamagedFileWarning(UserWarning):
    """An output or a cached latent of ours no longer matches its record: it is made again."""


@dataclass(frozen=True)
class SceneOptions:
    generate: tuple[str, ...] | None = None  # spec modality names; None = everything not given
    steps: int | None = None  # None: from the preset
    solver: str | None = None
    preset: str | None = None  # exact (default), fast, draft
    others: str = "reference"
    seed: int = 0
    overlap_m: float = 360.0
    batch_size: int = 4
    samples: int = 1
    date: dt.date | None = None
    overwrite: bool = False
    quicklook: bool = False  # also write PNG pictures of the outputs

    @property
    def sampler(self) -> tuple[str, int]:
        """(solver, steps) after applying the preset."""
        return resolve_preset(self.preset, self.solver, self.steps)


@dataclass(frozen=True)
class OutputSpec:
    modality: Modality
    kind: str  # "mean" (values), "std" or "confidence"
    path: Path


def _scalar_names(spec: ModelSpec) -> tuple[str | None, str | None]:
    loc = next((m.name for m in spec.modalities if isinstance(m.processing, LatLon)), None)
    date = next((m.name for m in spec.modalities if isinstance(m.processing, Date)), None)
    return loc, date


def tile_seed(seed: int, tile: Tile) -> int:
    """A tile's seed depends only on the run seed and its position: batch and order do not matter."""
    state = np.random.SeedSequence([seed % 2**63, tile.row, tile.col]).generate_state(2, np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


@dataclass
class SceneJob:
    spec: ModelSpec
    inputs: list[SceneInput]
    out_dir: Path
    options: SceneOptions
    frame: SceneFrame = field(init=False)
    plan: TilingPlan = field(init=False)
    conditions: dict[str, SceneInput] = field(init=False)  # image modality -> the input it comes from
    scalar_conditions: list[str] = field(init=False)
    generate: list[str] = field(init=False)
    outputs: list[OutputSpec] = field(init=False)

    def __post_init__(self) -> None:
        if not self.inputs:
            raise SceneError("no input scene")
        self.frame = SceneFrame.of(self.inputs[0])
        if min(self.frame.width_m, self.frame.height_m) < BASE_GSD:
            raise SceneError(f"{self.inputs[0].path.name}: covers only {self.frame.width_m:.3g} x "
                             f"{self.frame.height_m:.3g} m, less than one {BASE_GSD:g} m output pixel; "
                             "check its pixel size (georeferencing)")
        self.plan = plan_tiles(self.frame, self.options.overlap_m)
        self.conditions = {}
        first = self.inputs[0]
        for scene in self.inputs:
            if scene is not first and not self.frame.overlaps(scene):
                raise SceneError(f"{scene.path.name}: does not overlap {first.path.name} (the scene); give "
                                 "conditions that cover part of it")
            matched = [m for m in self.spec.modalities if m.is_image and m.product == scene.product
                       and all(b in scene.bands for b in (m.bands or scene.bands[:1]))]
            if not matched:
                raise SceneError(f"{scene.path.name}: no modality of {self.spec.name} can be read from "
                                 f"{scene.product} bands {' '.join(scene.bands)}")
            _warn_if_coarse(scene, self.frame.pixel_size(scene), matched)
            for m in matched:
                if m.name in self.conditions:
                    raise SceneError(f"{m.name} is given twice ({self.conditions[m.name].path.name} and "
                                     f"{scene.path.name})")
                self.conditions[m.name] = scene
        loc, date_name = _scalar_names(self.spec)
        wanted = set(self.options.generate or ())
        for name in wanted:
            self.spec.modality(name)
            if name in self.conditions:
                raise SceneError(f"{name} is both given (from {self.conditions[name].path.name}) and "
                                 "asked for")
        self.scalar_conditions = []
        if loc and loc not in wanted:
            self.scalar_conditions.append(loc)
        if date_name and self.date is not None and date_name not in wanted:
            self.scalar_conditions.append(date_name)
        if self.options.generate:
            self.generate = self.spec.canonical(wanted)
        else:
            given = set(self.conditions) | set(self.scalar_conditions)
            self.generate = [n for n in self.spec.names if n not in given]
        if not self.generate:
            raise SceneError("nothing to generate: every modality is given")
        stem = self.inputs[0].path.stem
        self.outputs = []
        for name in self.generate:
            m = self.spec.modality(name)
            if not m.is_image:
                continue
            self.outputs.append(OutputSpec(m, "mean", self.out_dir / f"{stem}_{name}.tif"))
            if self.options.samples > 1:
                kind = "confidence" if isinstance(m.processing, Classes) else "std"
                self.outputs.append(OutputSpec(m, kind, self.out_dir / f"{stem}_{name}_{kind}.tif"))

    @property
    def date(self) -> dt.date | None:
        return self.options.date or next((s.date for s in self.inputs if s.date), None)

    @property
    def sidecar(self) -> Path:
        return self.out_dir / f"{self.inputs[0].path.stem}_tiles.json"

    @property
    def work_dir(self) -> Path:
        return self.out_dir / f".copgen-work-{self.inputs[0].path.stem}"

    @property
    def lock_path(self) -> Path:
        """Held by the run writing this scene's outputs (`scene_lock`)."""
        return self.out_dir / f".copgen-lock-{self.inputs[0].path.stem}"

    @property
    def blend_bytes(self) -> int:
        """Peak memory of the output blenders: float64 sums and weights (`RowBlender`) over the rows
        one batch of tiles can span, for every output at once, plus one output's transient copy."""
        plan = self.plan
        span_m = plan.footprint_m + math.ceil(self.options.batch_size / plan.n_cols) * plan.stride_m
        sizes = []
        for out in self.outputs:
            _, width, height = self.frame.grid(out.modality.gsd)
            rows = min(height, math.ceil(span_m / out.modality.gsd))
            sizes.append((_blend_channels(out) + 1) * rows * width * 8)
        return sum(sizes) + max(sizes, default=0)

    def check_memory(self) -> None:
        """Refuse a scene too wide for this machine's memory before running anything."""
        need, limit = self.blend_bytes, memory_limit()
        if limit is None or need <= limit:
            return
        first = self.inputs[0]
        strip = max(1, int(first.width * limit / need))
        raise SceneError(f"{first.path.name}: blending {len(self.outputs)} outputs over {first.width} px of "
                         f"width needs about {_gib(need)} of memory, more than the {_gib(limit)} allowed "
                         f"({MEMORY_FRACTION:g} of what is available); split the scene into strips at most "
                         f"{strip} px wide (gdal_translate -srcwin XOFF 0 {strip} {first.height} "
                         f"{first.path.name} part.tif) or generate fewer modalities (--generate)")

    def describe(self) -> str:
        lines = ["inputs:"] + [f"  {s.describe()}" for s in self.inputs]
        lines.append("conditions: " + ", ".join(list(self.conditions) + self.scalar_conditions))
        if self.date is None:
            lines.append("date: unknown (pass --date to condition on it); generated per tile")
        lines.append("generate: " + ", ".join(self.generate))
        lines.append("tiling: " + self.plan.describe())
        o = self.options
        solver, steps = o.sampler
        lines.append(f"work: {len(self.plan)} tiles x {o.samples} sample(s) x {steps} steps ({solver}) = "
                     f"{len(self.plan) * o.samples * steps} denoiser evaluations, batch {o.batch_size}")
        lines.append("outputs: " + ", ".join(p.path.name for p in self.outputs) + f", {self.sidecar.name}")
        limit = memory_limit()
        lines.append(f"memory: about {_gib(self.blend_bytes)} of blending buffers" + (
            f" (allowed: {_gib(limit)}, {MEMORY_FRACTION:g} of the available memory)" if limit else ""))
        return "\n".join(lines)


def _warn_if_coarse(scene: SceneInput, pixel_m: float, modalities: list[Modality]) -> None:
    coarse = [m for m in modalities if pixel_m > COARSE_FACTOR * m.gsd]
    if coarse:
        native = "/".join(f"{g:g}" for g in sorted({m.gsd for m in coarse}))
        warnings.warn(f"{scene.path.name}: its {pixel_m:.4g} m pixels are more than {COARSE_FACTOR:g}x "
                      f"coarser than the native {native} m of "
                      f"{', '.join(m.name for m in coarse)}: upsampled, the model sees no real detail",
                      CoarseInputWarning, stacklevel=4)


def memory_limit() -> int | None:
    """Bytes the blenders may use: a fraction of the available memory, None where unknown."""
    available = available_host_memory()
    return int(available * MEMORY_FRACTION) if available is not None else None


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


# --- reading tiles ------------------------------------------------------------------------------


@dataclass
class TileInputs:
    tile: Tile
    conditions: dict[str, np.ndarray]  # physical values per image modality with data here (C, h, w)
    valid: np.ndarray  # (192, 192) bool on the 10 m grid: any input had data
    location: tuple[float, float]  # tile centre (lat, lon)


class TileReader:
    def __init__(self, job: SceneJob):
        self.job = job
        self.readers = {name: ModalityReader(scene, job.spec.modality(name), job.frame)
                        for name, scene in job.conditions.items()}
        sources = {id(s): s for s in job.conditions.values()}.values()
        self.coverage = [coverage_reader(s, job.frame, BASE_GSD) for s in sources]
        self.base_px = round(job.plan.footprint_m / BASE_GSD)

    def close(self) -> None:
        for r in [*self.readers.values(), *self.coverage]:
            r.close()

    def read(self, tile: Tile) -> TileInputs | None:
        """Conditions of one tile with gaps filled, or None if no input has data there. A modality
        without a valid pixel in the tile is left out: it is then neither given nor generated
        there (the `others` policy), never fed as zeros."""
        valid = np.zeros((self.base_px, self.base_px), bool)
        conditions = {}
        for name, reader in self.readers.items():
            m = reader.modality
            size = round(self.job.plan.footprint_m / m.gsd)
            col, row = tile.pixel_origin(m.gsd)
            data, ok = reader.read(col, row, size)
            if ok.any():
                conditions[name] = _fill_gaps(data, ok, m)
        col, row = tile.pixel_origin(BASE_GSD)
        for reader in self.coverage:
            valid |= reader.read(col, row, self.base_px)[1]
        if self.readers and not valid.any():
            return None
        if not self.readers:
            valid[:] = True
        return TileInputs(tile, conditions, valid, self._centre_latlon(tile))

    def _centre_latlon(self, tile: Tile) -> tuple[float, float]:
        f, half = self.job.frame, self.job.plan.footprint_m / 2
        x, y = f.left + tile.x_m + half, f.top - tile.y_m - half
        lon, lat = warp_transform(f.crs, "EPSG:4326", [x], [y])
        return float(lat[0]), float(lon[0])


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


# --- output encoding ----------------------------------------------------------------------------


def _encoding(m: Modality, kind: str) -> dict:
    """dtype, nodata, band names and units of one output file."""
    p = m.processing
    if isinstance(p, Classes):
        if kind == "confidence":
            return dict(dtype="float32", nodata=float("nan"), names=["confidence"], units=["1"])
        return dict(dtype="uint8", nodata=255, names=[m.name], units=["class code"], categorical=True)
    suffix = "" if kind == "mean" else f" {kind}"
    if isinstance(p, LogRange) and p.log == "db":
        units = ["dB"] * len(m.bands)
    elif isinstance(p, Reflectance):
        units = ["DN"] * len(m.bands)
    else:
        units = [p.units] * len(m.bands)
    return dict(dtype="float32", nodata=float("nan"), names=[b + suffix for b in m.bands], units=units,
                scales=[1.0 / p.scale] * len(m.bands) if isinstance(p, Reflectance) and kind == "mean" else None)


def _to_file_units(m: Modality, values: np.ndarray) -> np.ndarray:
    p = m.processing
    if isinstance(p, LogRange) and p.log == "db":  # backscatter is written in dB
        return 10.0 * np.log10(np.maximum(values, 1e-12))
    return values


def _blend_channels(out: OutputSpec) -> int:
    """Channels one output blends: class scores or bands, plus the validity channel."""
    m = out.modality
    if isinstance(m.processing, Classes) and out.kind == "mean":
        return len(m.processing.codes) + 1
    return len(_encoding(m, out.kind)["names"]) + 1


class _Output:
    """One output file: its blender (values + validity channel) and its writer."""

    def __init__(self, job: SceneJob, out: OutputSpec, tags: dict[str, str], staging: Staging):
        m = out.modality
        self.spec, self.modality = out, m
        enc = _encoding(m, out.kind)
        transform, width, height = job.frame.grid(m.gsd)
        self.nodata = enc["nodata"]
        self.writer = CogWriter(staging, out.path, job.frame.crs, transform, width, height, len(enc["names"]),
                                enc["dtype"], enc["nodata"], enc["names"], enc["units"], tags,
                                categorical=enc.get("categorical", False), scales=enc.get("scales"))
        self.blender = RowBlender(_blend_channels(out), width, height, self._emit)

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
        self.writer.write_rows(row, out)


# --- running ------------------------------------------------------------------------------------


@dataclass
class SceneResult:
    outputs: list[Path]
    tiles: int
    skipped: int
    resumed: int
    seconds: float
    network_seconds: float
    peak_buffer_rows: int
    already_complete: bool = False  # every output existed from the same settings: nothing was run
    added: list[Path] = field(default_factory=list)  # files added to a complete run (quicklooks)


def _run_key(job: SceneJob, pipeline: Pipeline) -> str:
    o = job.options
    parts = {"spec": job.spec.name, "weights": pipeline.provenance.files, "seed": o.seed,
             "sampler": o.sampler, "others": o.others, "samples": o.samples,
             "overlap": o.overlap_m, "generate": job.generate, "date": str(job.date),
             "inputs": [(str(s.path.resolve()), s.path.stat().st_size, s.path.stat().st_mtime_ns,
                         s.product, s.bands, s.units, s.dn_offset) for s in job.inputs]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _provenance_tags(job: SceneJob, pipeline: Pipeline, run_key: str) -> dict[str, str]:
    o = job.options
    return pipeline.provenance.tags() | {
        "COPGEN_SEED": str(o.seed), "COPGEN_STEPS": str(o.sampler[1]), "COPGEN_SOLVER": o.sampler[0],
        "COPGEN_PRESET": o.preset or ("exact" if o.solver is None and o.steps is None else "custom"),
        "COPGEN_OTHERS": o.others, "COPGEN_SAMPLES": str(o.samples), "COPGEN_OVERLAP_M": f"{o.overlap_m:g}",
        "COPGEN_CONDITIONS": "; ".join(f"{n}<-{s.path.name}" for n, s in job.conditions.items())
                             + "".join(f"; {n}" for n in job.scalar_conditions),
        "COPGEN_DATE": str(job.date) if job.date else "unknown (generated)",
        "COPGEN_S2_DN_OFFSET": ", ".join(f"{s.path.name}:{s.dn_offset:+g}" for s in job.inputs
                                         if s.product.startswith("S2")) or "n/a",
        RUN_KEY_TAG: run_key,
    }


RUN_KEY_TAG = "COPGEN_RUN_KEY"  # in every output: which settings made it (`_run_key`)
RECORD_FIELD = "outputs"  # in the sidecar, the run record: {file name: {"sha256", "bytes"}} of each output


@dataclass
class OutputState:
    """A scene's output files as a run with a given run key finds them."""

    intact: list[Path] = field(default_factory=list)  # the run record vouches for them
    damaged: list[Path] = field(default_factory=list)  # ours, but they no longer match the record
    unrecorded: list[Path] = field(default_factory=list)  # carry our run key, no record yet (publish cut short)
    missing: list[Path] = field(default_factory=list)

    def complete(self, job: SceneJob) -> bool:
        """Every raster and the sidecar intact (quicklooks exist only where a recipe does)."""
        return all(p in self.intact for p in [o.path for o in job.outputs] + [job.sidecar])


def check_outputs(job: SceneJob, run_key: str | None = None) -> OutputState:
    """Which of the scene's files exist and whether this run may replace them. Files it did not
    make, or made with other settings (another run key), are refused without --overwrite; its
    own files are checked against the run record (sizes and sha256 in the sidecar). Without a
    key (before the weights are loaded) any copgen-rt output passes; run_scene checks again."""
    expected = _expected_files(job)
    if job.options.overwrite:
        return OutputState(missing=expected)
    record = _read_record(job.sidecar)
    if record is not None and run_key is not None and record.get(RUN_KEY_TAG) != run_key:
        record = None
    listed = record.get(RECORD_FIELD, {}) if record else {}
    state = OutputState()
    for path in expected:
        if not os.path.lexists(path):
            state.missing.append(path)
        elif path == job.sidecar and record is not None:
            state.intact.append(path)
        elif path.name in listed and _matches(path, listed[path.name]):
            state.intact.append(path)
        else:
            readable, found = _stored_run_key(path)
            truncated = not readable and path.name in listed and is_regular_file(path)
            if not truncated and (found is None or (run_key is not None and found != run_key)):
                raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
            (state.damaged if path.name in listed else state.unrecorded).append(path)
    return state


def _read_record(sidecar: Path) -> dict | None:
    if not is_regular_file(sidecar):
        return None
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get(RECORD_FIELD, {}), dict) else None


def _checksum(path: Path) -> dict[str, object]:
    return {"sha256": file_sha256(path), "bytes": path.stat().st_size}


def _matches(path: Path, entry: object) -> bool:
    if not isinstance(entry, dict) or not is_regular_file(path):
        return False
    return entry.get("bytes") == path.stat().st_size and entry.get("sha256") == file_sha256(path)


def _expected_files(job: SceneJob) -> list[Path]:
    """Every file a finished run of `job` has written, in the order run_scene returns them."""
    pictures = [o.path.with_suffix(".png") for o in job.outputs if job.options.quicklook and o.kind == "mean"]
    return [o.path for o in job.outputs] + pictures + [job.sidecar]


def recorded_run_key(path: Path) -> str | None:
    """The run key an output of ours carries (GeoTIFF tag, PNG text, sidecar field), else None."""
    return _stored_run_key(path)[1]


def _stored_run_key(path: Path) -> tuple[bool, str | None]:
    """(whether `path` opens as what its suffix says, the run key it carries). Only plain files
    are opened: a FIFO or a link planted under an output's name is not ours."""
    if not is_regular_file(path):
        return False, None
    try:
        if path.suffix == ".json":
            return True, json.loads(path.read_text()).get(RUN_KEY_TAG)
        if path.suffix == ".png":
            from PIL import Image

            with Image.open(path) as img:
                img.verify()
                return True, img.info.get(RUN_KEY_TAG)
        with rasterio.open(path) as src:
            return True, src.tags().get(RUN_KEY_TAG)
    except Exception:  # noqa: BLE001 - unreadable means: not known to be ours
        return False, None


def scene_lock(job: SceneJob) -> contextlib.AbstractContextManager[None]:
    """One run at a time writes a scene's outputs and work folder; another fails at once."""
    check_writable(job.out_dir)
    return exclusive(job.lock_path, f"{job.inputs[0].path.name} (outputs in {job.out_dir})")


def prepare_work_dir(job: SceneJob, pipeline: Pipeline) -> Path:
    """The folder of finished tiles' latents (a private folder of ours, never a link), emptied
    if it belongs to different settings."""
    check_writable(job.out_dir)
    work = own_folder(job.work_dir)
    key = _run_key(job, pipeline)
    run_file = work / "run.json"
    if _read_key(run_file) != key:
        shutil.rmtree(work / "latents", ignore_errors=True)
        write_text(run_file, json.dumps({"key": key}))
    own_folder(work / "latents")
    return work


def _read_key(run_file: Path) -> str | None:
    try:
        return json.loads(run_file.read_text()).get("key") if is_regular_file(run_file) else None
    except (OSError, ValueError, AttributeError):
        return None


def precompute_latents(job: SceneJob, pipeline: Pipeline, start: int, stop: int) -> int:
    """Sample and store the final latents of tiles[start:stop] (no decoding or writing), so that
    several workers can share one scene; `run_scene` then finds them and only decodes, blends
    and writes. `start` must sit on a batch boundary: batches are then the same as in a
    single-process run, and so are the results, bit for bit. The caller holds the scene's lock
    (`scene_lock`). Returns the tiles with data."""
    if start % job.options.batch_size:
        raise ValueError(f"tile range must start on a multiple of the batch size {job.options.batch_size}")
    job.check_memory()  # the decoding worker would refuse the scene after all this sampling
    work = prepare_work_dir(job, pipeline)
    loc_name, date_name = _scalar_names(job.spec)
    reader = TileReader(job)
    done = 0
    try:
        tiles = job.plan.tiles[start:stop]
        for i in range(0, len(tiles), job.options.batch_size):
            present = [t for t in map(reader.read, tiles[i:i + job.options.batch_size]) if t is not None]
            if present:
                _batch_latents(job, pipeline, present, loc_name, date_name, work)
            done += len(present)
    finally:
        reader.close()
    return done


def run_scene(job: SceneJob, pipeline: Pipeline, progress: Callable[[int], None] | None = None,
              locked: bool = False) -> SceneResult:
    """Generate every tile, blend and write. Interrupted runs resume from the work folder.
    `locked`: the caller holds the scene's lock already (many-scene runs, Ray workers)."""
    if pipeline.spec.name != job.spec.name:
        raise SceneError("the job and the pipeline use different specs")
    with contextlib.nullcontext() if locked else scene_lock(job):
        return _run_locked(job, pipeline, progress)


def _run_locked(job: SceneJob, pipeline: Pipeline, progress: Callable[[int], None] | None) -> SceneResult:
    run_key = _run_key(job, pipeline)
    state = check_outputs(job, run_key)
    if state.damaged:
        warnings.warn(f"{', '.join(p.name for p in state.damaged)}: changed since this run wrote it "
                      "(checksum differs from the run record): written again", DamagedFileWarning, stacklevel=3)
    if not os.path.lexists(job.work_dir) and state.complete(job):
        added = _add_quicklooks(job, [p for p in state.missing + state.damaged if p.suffix == ".png"])
        return SceneResult(sorted(state.intact + added, key=_expected_files(job).index), len(job.plan), 0, 0,
                           0.0, 0.0, 0, already_complete=True, added=added)
    job.check_memory()
    start = time.perf_counter()
    work = prepare_work_dir(job, pipeline)

    tags = _provenance_tags(job, pipeline, run_key)
    reader = TileReader(job)
    tiles = job.plan.tiles
    loc_name, date_name = _scalar_names(job.spec)
    weights_cache: dict[float, np.ndarray] = {}
    sidecar: dict[str, dict] = {}
    skipped = resumed = 0
    network = 0.0
    peak_rows = 0
    with Staging(job.out_dir) as staging:
        outputs = [_Output(job, o, tags, staging) for o in job.outputs]
        try:
            with cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="copgen-read") as pool:
                for batch_tiles, batch_inputs in _prefetched_batches(pool, reader, tiles, job.options.batch_size):
                    present = [t for t in batch_inputs if t is not None]
                    skipped += len(batch_tiles) - len(present)
                    if present:
                        t0 = time.perf_counter()
                        latents, n_resumed = _batch_latents(job, pipeline, present, loc_name, date_name, work)
                        resumed += n_resumed
                        decoded = pipeline.decode(latents, physical_units=False)
                        network += time.perf_counter() - t0
                        _check_finite(job, present, decoded)
                        _accumulate(job, outputs, present, decoded, weights_cache)
                        _record_scalars(job, present, latents, sidecar, loc_name, date_name)
                    last = batch_tiles[-1]
                    for out in outputs:
                        peak_rows = max(peak_rows, out.blender.buffered_rows)
                        out.blender.flush(job.plan.final_rows(last, out.modality.gsd, out.blender.height))
                    if progress:
                        progress(len(batch_tiles))
            if skipped == len(tiles):
                raise SceneError(f"{job.inputs[0].path.name}: no tile has input data (every pixel lacks at "
                                 "least one band): nothing to generate from")
            staged = [out.writer.close() for out in outputs]
        except BaseException:
            for out in outputs:
                out.writer.abort()
            raise
        finally:
            reader.close()
        paths = _publish(job, staging, staged, {"tiles": sidecar, "plan": job.plan.describe(), **tags})
    shutil.rmtree(work, ignore_errors=True)
    return SceneResult(paths, len(tiles), skipped, resumed, time.perf_counter() - start, network, peak_rows)


def _publish(job: SceneJob, staging: Staging, staged: list[Path], sidecar: dict) -> list[Path]:
    """Rename the finished outputs into place, quicklooks next, the sidecar (the run record with
    every output's checksum) last: a run cut short in between leaves no record, and its rerun
    finishes the set."""
    record = {o.path.name: _checksum(s) for o, s in zip(job.outputs, staged)}
    pictures = []
    if job.options.quicklook:
        from copgen_rt.scenes.quicklook import write_quicklooks

        pictures = write_quicklooks([(o.modality, s, o.path.with_suffix(".png"))
                                     for o, s in zip(job.outputs, staged) if o.kind == "mean"])
        record |= {p.name: _checksum(p) for p in pictures}
    paths = [staging.publish(s.name, o.path) for o, s in zip(job.outputs, staged)]
    write_text(job.sidecar, json.dumps({**sidecar, RECORD_FIELD: record}, indent=1) + "\n")
    return paths + pictures + [job.sidecar]


def _add_quicklooks(job: SceneJob, pictures: list[Path]) -> list[Path]:
    """Quicklooks asked for over a complete run: drawn from its outputs, added to its record."""
    if not pictures:
        return []
    from copgen_rt.scenes.quicklook import write_quicklooks

    written = write_quicklooks([(o.modality, o.path, o.path.with_suffix(".png")) for o in job.outputs
                                if o.path.with_suffix(".png") in pictures])
    record = _read_record(job.sidecar) or {}
    record[RECORD_FIELD] = record.get(RECORD_FIELD, {}) | {p.name: _checksum(p) for p in written}
    write_text(job.sidecar, json.dumps(record, indent=1) + "\n")
    return written


def _prefetched_batches(pool: cf.ThreadPoolExecutor, reader: TileReader, tiles: Sequence[Tile],
                        batch_size: int) -> Iterator[tuple[list[Tile], list[TileInputs | None]]]:
    """Read batch k+1 in a thread while batch k computes."""
    batches = [list(tiles[i:i + batch_size]) for i in range(0, len(tiles), batch_size)]
    read = lambda batch: [reader.read(t) for t in batch]  # noqa: E731
    pending = pool.submit(read, batches[0]) if batches else None
    for k, batch in enumerate(batches):
        result = pending.result()
        pending = pool.submit(read, batches[k + 1]) if k + 1 < len(batches) else None
        yield batch, result


def _batch_latents(job: SceneJob, pipeline: Pipeline, present: list[TileInputs], loc_name, date_name,
                   work: Path) -> tuple[dict[str, torch.Tensor], int]:
    """Final latents of every present tile, one sampler call per set of conditions with data
    (seeds stay per tile). A group whose tiles a previous run all finished is loaded; any other
    is sampled whole, so that it is the same batch as in an uninterrupted run, bit for bit,
    whichever of its tiles were saved before a kill."""
    o = job.options
    cached = [work / "latents" / f"{t.tile.key}.safetensors" for t in present]
    per_tile: list[dict[str, torch.Tensor] | None] = [None] * len(present)
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, t in enumerate(present):
        groups.setdefault(tuple(t.conditions), []).append(i)
    resumed = 0
    for names, group in groups.items():
        loaded = [_load_latents(cached[i], job) for i in group]
        if all(z is not None for z in loaded):
            for i, z in zip(group, loaded):
                per_tile[i] = z
            resumed += len(group)
            continue
        conditions: dict[str, object] = {
            name: torch.from_numpy(np.stack([present[i].conditions[name] for i in group])) for name in names}
        if loc_name in job.scalar_conditions:
            conditions[loc_name] = torch.tensor([present[i].location for i in group])
        if date_name in job.scalar_conditions:
            conditions[date_name] = [job.date] * len(group)
        latents = _generate_splitting_on_oom(job, pipeline, conditions,
                                             [tile_seed(o.seed, present[i].tile) for i in group])
        for j, i in enumerate(group):
            rows = slice(j * o.samples, (j + 1) * o.samples)
            per_tile[i] = {n: z[rows].contiguous() for n, z in latents.items()}
            _check_finite_latents(job, present[i], per_tile[i])
            _save_latents(cached[i], per_tile[i])
    merged = {n: torch.cat([t[n] for t in per_tile]) for n in job.generate}
    return merged, resumed


def _latents_digest(latents: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(latents):
        z = latents[name].contiguous()
        h.update(f"{name}:{z.dtype}:{tuple(z.shape)};".encode())
        h.update(z.numpy().tobytes())
    return h.hexdigest()


def _save_latents(path: Path, latents: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save

    data = save(latents, metadata={"sha256": _latents_digest(latents)})
    try:
        with atomic_write(path) as f:
            f.write(data)
    except OSError as e:
        raise write_error(path, e) from None


def _load_latents(path: Path, job: SceneJob) -> dict[str, torch.Tensor] | None:
    """A finished tile's latents, or None: missing, or damaged (then removed, and said once)."""
    if not os.path.lexists(path):
        return None
    from safetensors import safe_open

    latents: dict[str, torch.Tensor] = {}
    try:
        if not is_regular_file(path):
            problem = "is not a plain file"
        else:
            with safe_open(str(path), framework="pt") as f:
                digest = (f.metadata() or {}).get("sha256")
                latents = {k: f.get_tensor(k) for k in f.keys()}
            shapes = {n: (job.options.samples, *job.spec.modality(n).latent_shape) for n in job.generate}
            if {n: tuple(z.shape) for n, z in latents.items()} != shapes:
                problem = "holds other modalities or shapes"
            elif digest != _latents_digest(latents):
                problem = "does not match its checksum"
            elif not all(bool(torch.isfinite(z).all()) for z in latents.values()):
                problem = "holds NaN or infinite values"
            else:
                return latents
    except Exception as e:  # noqa: BLE001 - whatever is wrong with it, it is recomputed
        problem = f"is unreadable ({(str(e).splitlines() or [type(e).__name__])[0][:80]})"
    warnings.warn(f"cached latents {path.name} {problem}: recomputed", DamagedFileWarning, stacklevel=4)
    with contextlib.suppress(OSError):
        path.unlink()
    return None


def _check_finite_latents(job: SceneJob, tile: TileInputs, latents: dict[str, torch.Tensor]) -> None:
    bad = [n for n, z in latents.items() if not bool(torch.isfinite(z).all())]
    if bad:
        raise _not_finite(job, tile, bad[0])


def _check_finite(job: SceneJob, present: list[TileInputs], decoded: dict[str, torch.Tensor]) -> None:
    """Where inputs had data a non-finite output is an error, never a product."""
    for out in job.outputs:
        rows = decoded[out.modality.name].reshape(len(present), -1)  # a tile's samples are adjacent rows
        finite = torch.isfinite(rows).all(dim=1)
        if not bool(finite.all()):
            raise _not_finite(job, present[int((~finite).nonzero()[0])], out.modality.name)


def _not_finite(job: SceneJob, tile: TileInputs, name: str) -> SceneError:
    ranges = "; ".join(f"{m} from {job.conditions[m].path.name}: {v.min():.4g} to {v.max():.4g}"
                       for m, v in tile.conditions.items())
    return SceneError(f"tile {tile.tile.key}: the generated {name} is not finite (NaN or infinite) where the "
                      f"inputs have data ({ranges or 'no image input'}); inputs far outside their units "
                      "(S2 DNs beyond 0-65535, a wrong --s2-offset or --s1-units) make the model diverge")


def _generate_splitting_on_oom(job: SceneJob, pipeline: Pipeline, conditions: dict,
                               seeds: list[int]) -> dict[str, torch.Tensor]:
    """Sample a batch; if the device runs out of memory, halve it (tiles keep their own seeds)."""
    o = job.options
    solver, steps = o.sampler
    try:
        return pipeline.generate(job.generate, conditions, n_samples=o.samples, steps=steps, solver=solver,
                                 others=o.others, decode=False, seed=seeds, batch_size=len(seeds))
    except torch.cuda.OutOfMemoryError:
        if len(seeds) == 1:
            raise
        torch.cuda.empty_cache()
    half = len(seeds) // 2
    parts = []
    for sl in (slice(0, half), slice(half, None)):
        sub = {k: v[sl] for k, v in conditions.items()}
        parts.append(_generate_splitting_on_oom(job, pipeline, sub, seeds[sl]))
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _accumulate(job: SceneJob, outputs: list[_Output], present: list[TileInputs],
                decoded: dict[str, torch.Tensor], weights_cache: dict[float, np.ndarray]) -> None:
    n = job.options.samples
    for out in outputs:
        m = out.modality
        x = decoded[m.name]
        x = x.reshape(len(present), n, *x.shape[1:])
        if isinstance(m.processing, Classes):
            scores = ((x + 1.0) / 2.0).mean(dim=1).numpy()
            if out.spec.kind == "confidence":
                clipped = np.clip(scores, 0, None)
                values = (clipped.max(axis=1) / np.maximum(clipped.sum(axis=1), 1e-6))[:, None]
            else:
                values = scores
        else:
            phys = processing.postprocess(m, x.reshape(-1, *x.shape[2:]))
            phys = _to_file_units(m, phys.numpy()).reshape(len(present), n, *x.shape[2:])
            values = phys.mean(axis=1) if out.spec.kind == "mean" else phys.std(axis=1, ddof=1)
        size = values.shape[-1]
        if m.gsd not in weights_cache:
            weights_cache[m.gsd] = blend_weights(size, round(job.options.overlap_m / m.gsd))
        w = weights_cache[m.gsd]
        factor = round(m.gsd / BASE_GSD)
        for t, v in zip(present, values):
            valid = t.valid.reshape(size, factor, size, factor).mean(axis=(1, 3))
            col, row = t.tile.pixel_origin(m.gsd)
            out.blender.add(col, row, np.concatenate([v, valid[None]], axis=0), w)


def _record_scalars(job, present, latents, sidecar, loc_name, date_name) -> None:
    n = job.options.samples
    for i, t in enumerate(present):
        entry: dict[str, object] = {"centre_lat_lon": [round(t.location[0], 6), round(t.location[1], 6)]}
        missing = [name for name in job.conditions if name not in t.conditions]
        if missing:
            entry["conditions_without_data"] = missing
        rows = slice(i * n, (i + 1) * n)
        if loc_name in job.generate:
            entry["generated_lat_lon"] = processing.vector_to_latlon(latents[loc_name][rows]).tolist()
        if date_name in job.generate:
            days = processing.vector_to_date(latents[date_name][rows]).tolist()
            entry["generated_date"] = [f"{y:04d}-{m:02d}-{d:02d}" for d, m, y in days]
        sidecar[t.tile.key] = entry
