"""Whole scenes, one way: scene -> tiles -> batches -> sampler -> decode -> blend -> writer.

The stages, each a module: `job` (plan), `tile_inputs` (read a tile), `sampling` (final latents
of a batch), `outputs` (blend, write, publish) and `state` (run keys, the run record, the work
folder and the lock). This module only runs them in order, streaming tiles in row-major order
with bounded memory, and resumes interrupted runs from the work folder.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from copgen_rt.errors import SceneError
from copgen_rt.files import Staging
from copgen_rt.phases import phase
from copgen_rt.pipeline import Pipeline
from copgen_rt.scenes.job import SceneJob
from copgen_rt.scenes.outputs import SceneOutputs, add_quicklooks, provenance_tags
from copgen_rt.scenes.sampling import batch_latents
from copgen_rt.scenes.state import (
    DamagedFileWarning,
    check_outputs,
    discard_unless_resumable,
    expected_files,
    prepare_work_dir,
    run_key_of,
    scene_lock,
)
from copgen_rt.scenes.tile_inputs import TileInputs, TileReader
from copgen_rt.scenes.tiling import Tile


@dataclass
class SceneResult:
    outputs: list[Path]
    tiles: int
    skipped: int
    resumed: int
    seconds: float
    network_seconds: float
    peak_buffer_rows: int
    copied: int = 0  # gap filling: tiles without a gap pixel, not generated
    generated_pixels: dict[str, int] = field(default_factory=dict)  # gap filling, per filled modality
    already_complete: bool = False  # every output existed from the same settings: nothing was run
    added: list[Path] = field(default_factory=list)  # files added to a complete run (quicklooks)


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
    reader = TileReader(job)
    done = 0
    try:
        tiles = job.plan.tiles[start:stop]
        for i in range(0, len(tiles), job.options.batch_size):
            present = [t for t in map(reader.read, tiles[i:i + job.options.batch_size])
                       if t is not None and not t.copy]
            if present:
                batch_latents(job, pipeline, present, work)
            done += len(present)
    finally:
        reader.close()
    return done


def run_scene(job: SceneJob, pipeline: Pipeline, progress: Callable[[float], None] | None = None,
              locked: bool = False) -> SceneResult:
    """Generate every tile, blend and write. Interrupted runs resume from the work folder.
    `progress` gets tiles done, in fractions of a tile as network calls finish.
    `locked`: the caller holds the scene's lock already (many-scene runs, Ray workers)."""
    if pipeline.spec.name != job.spec.name:
        raise SceneError("the job and the pipeline use different specs")
    with contextlib.nullcontext() if locked else scene_lock(job):
        return _run_locked(job, pipeline, progress)


def _run_locked(job: SceneJob, pipeline: Pipeline, progress: Callable[[float], None] | None) -> SceneResult:
    key = run_key_of(job, pipeline)
    state = check_outputs(job, key)
    if state.damaged:
        warnings.warn(f"{', '.join(p.name for p in state.damaged)}: changed since this run wrote it "
                      "(checksum differs from the run record): written again", DamagedFileWarning,
                      stacklevel=3)
    if not os.path.lexists(job.work_dir) and state.complete(job):
        added = add_quicklooks(job, [p for p in state.missing + state.damaged if p.suffix == ".png"])
        return SceneResult(sorted(state.intact + added, key=expected_files(job).index), len(job.plan), 0, 0,
                           0.0, 0.0, 0, already_complete=True, added=added)
    job.check_memory()
    start = time.perf_counter()
    work = prepare_work_dir(job, pipeline)
    try:  # a failed run leaves its work folder only where it holds tiles to resume from
        reader = TileReader(job)
        tiles = job.plan.tiles
        skipped = resumed = copied = 0
        network = 0.0
        with Staging(job.out_dir, job.staging_prefix) as staging:
            outputs = SceneOutputs(job, provenance_tags(job, pipeline, key), staging)
            try:
                with cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="copgen-read") as pool:
                    size = job.options.batch_size
                    batches = _prefetched_batches(pool, reader, tiles, size)
                    for first, (batch, inputs) in zip(range(0, len(tiles), size), batches, strict=True):
                        present = [t for t in inputs if t is not None and not t.copy]
                        copies = [t for t in inputs if t is not None and t.copy]
                        skipped += len(batch) - len(present) - len(copies)
                        copied += len(copies)
                        outputs.add_copied(copies)
                        if present:
                            t0 = time.perf_counter()
                            latents, n_resumed = batch_latents(job, pipeline, present, work, progress)
                            resumed += n_resumed
                            with phase(f"decoding and blending tiles {first + 1}-{first + len(batch)} of "
                                       f"{len(tiles)}"):
                                decoded = pipeline.decode(latents, physical_units=False)
                                network += time.perf_counter() - t0
                                outputs.add(present, latents, decoded)
                        outputs.flush(batch[-1])
                        if progress and len(present) < len(batch):
                            progress(len(batch) - len(present))  # tiles without data, or copied
                if skipped == len(tiles):
                    raise SceneError(f"{job.inputs[0].path.name}: no tile has input data (every pixel lacks "
                                     "at least one band): nothing to generate from")
                with phase(f"writing {len(job.outputs)} outputs (COGs with overviews), the STAC Item and "
                           "the run record"):
                    paths = outputs.publish()
            except BaseException:
                outputs.abort()
                raise
            finally:
                reader.close()
    except BaseException:
        discard_unless_resumable(work)
        raise
    shutil.rmtree(work, ignore_errors=True)
    return SceneResult(paths, len(tiles), skipped, resumed, time.perf_counter() - start, network,
                       outputs.peak_rows, copied, outputs.generated_pixels)


def _prefetched_batches(pool: cf.ThreadPoolExecutor, reader: TileReader, tiles: Sequence[Tile],
                        batch_size: int) -> Iterator[tuple[list[Tile], list[TileInputs | None]]]:
    """Read batch k+1 in a thread while batch k computes."""
    batches = [list(tiles[i:i + batch_size]) for i in range(0, len(tiles), batch_size)]
    read = lambda batch: [reader.read(t) for t in batch]  # noqa: E731
    if not batches:
        return
    pending = pool.submit(read, batches[0])
    for k, batch in enumerate(batches):
        result = pending.result()
        if k + 1 < len(batches):
            pending = pool.submit(read, batches[k + 1])
        yield batch, result
