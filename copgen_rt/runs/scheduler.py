"""Many scenes in one command: in this process, one after the other (`run_sequential`), or on a
Ray cluster (`copgen_rt.runs.ray_workers`). Every scene runs through `copgen_rt.scenes.run` exactly
as a single scene does; `scenelist` says which scenes, `batch` plans them and records their
results in the run record (`record`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from copgen_rt.errors import one_line
from copgen_rt.files import check_writable
from copgen_rt.options import ModelOptions, say_if_random
from copgen_rt.pipeline import Pipeline
from copgen_rt.runs import ray_workers, scenelist
from copgen_rt.runs.batch import Batch
from copgen_rt.runs.lease import Lease
from copgen_rt.runs.record import RUN_MANIFEST, RunManifest, record_location
from copgen_rt.runs.report import Report, Summary
from copgen_rt.runs.scenelist import SceneEntry
from copgen_rt.runs.source import PipelineSource
from copgen_rt.scenes.job import SceneJob, SceneRequest
from copgen_rt.scenes.run import run_scene
from copgen_rt.scenes.stac import COLLECTION_FILE, write_collection
from copgen_rt.scenes.state import outputs_intact, run_key
from copgen_rt.scenes.thumbnail_job import takes_thumbnails
from copgen_rt.specs import ModelSpec


def run_sequential(batch: Batch, pipeline: Pipeline) -> None:
    for entry, job in batch.jobs():
        try:
            result = run_scene(job, pipeline, progress=batch.report.tiles, locked=True)
        except Exception as e:  # noqa: BLE001 - a bad scene must not stop the others
            batch.fail(entry, one_line(e))
        else:
            batch.done(entry, job, result)




def run_from_options(scenes: Sequence[str], manifest: str | None, conds: Sequence[str], out: str,
                     model: ModelOptions, request: SceneRequest, batch_size: int | None,
                     ray_address: str | None = None, cpus_per_worker: int = 1, split_tiles: int = 64,
                     quiet: bool = False, verbose: bool = False) -> Summary:
    """Many scenes as `infer` takes them (SCENE paths, globs, a --manifest): what can be checked
    before any weights load, then `run`; `request` makes each scene's job. For the command line:
    joining a cluster, the run goes on in a forked child process (`ray_workers.connect`), this one
    reporting a driver that Ray ends."""
    if ray_address is not None:
        ray_workers.check_address(ray_address)  # before the scenes: `--ray scene.tif` took one as ADDRESS
    entries = scenelist.expand(scenes, manifest, conds, out)
    manifest_file = Path(manifest) if manifest else None
    record = record_location([e.out for e in entries], Path(os.path.abspath(out)), manifest_file)
    check_writable(record.parent)  # before loading any weights; a scene whose own folder cannot
    # be written fails alone
    RunManifest(record, manifest_file)  # a record of another source fails here, not after the run
    spec = model.spec()
    if takes_thumbnails(spec):
        raise ValueError(f"{spec.name} takes thumbnails (--cond MODALITY=FILE): run one job at a time")
    if ray_address is None:
        plan = model.plan(spec, batch_size)  # one plan for every scene: engines, precision, batch size

        def make_job(entry: SceneEntry) -> SceneJob:
            return request.job(spec, str(entry.scene), entry.conds, entry.out, plan.batch_size)

        return run(entries, make_job, model.source(spec, plan), Path(out), None, cpus_per_worker,
                   split_tiles, quiet, verbose, manifest_file)
    # on Ray the driver samples nothing: the plan is resolved on a worker (measured there where
    # "auto" is not yet measured) and every worker runs it; options that cannot work fail here
    model.plan(spec, batch_size, measure=False)
    if _recorded_complete(entries, spec, model, request, batch_size, record, manifest_file):
        return _all_skipped(len(entries), quiet)
    with ray_workers.connect(ray_address, quiet, lease_folder=record.parent):
        ray_workers.check_cluster([Path(out), *{e.out for e in entries}])
        plan = ray_workers.plan_on_worker(model, spec, batch_size, cpus_per_worker)

        def make_ray_job(entry: SceneEntry) -> SceneJob:
            return request.job(spec, str(entry.scene), entry.conds, entry.out, plan.batch_size)

        return run(entries, make_ray_job, model.source(spec, plan), Path(out),
                   ray_address, cpus_per_worker, split_tiles, quiet, verbose, manifest_file)


def _recorded_complete(entries: Sequence[SceneEntry], spec: ModelSpec, model: ModelOptions,
                       request: SceneRequest, batch_size: int | None, record_path: Path,
                       manifest_file: Path | None) -> bool:
    """Whether the run record says every scene is done by this software with these options and
    weights, and every scene's outputs are intact: then a Ray rerun starts nothing. The identity
    is each record's own (its engines and plan); an option given explicitly must match it."""
    if model.export:
        return False
    manifest = RunManifest(record_path, manifest_file)
    source = model.source(spec, model.plan(spec, batch_size, measure=False))
    files = source.weight_files()
    hashes = None
    wanted = {"denoiser": model.engine, "dtype": model.dtype, "device": model.device,
              "batch_size": batch_size}
    for entry in entries:
        record = manifest.scenes.get(entry.key, {})
        seen = record.get("provenance", {})
        plan = seen.get("plan", {})
        if record.get("status") != "done" or seen.get("software") != source.software or \
                sorted(seen.get("files", {}).values()) != sorted(files.values()) or \
                any(v not in (None, "auto") and plan.get(k) != v for k, v in wanted.items()):
            return False
        hashes = hashes or source.weight_hashes(files)
        if seen.get("weights") != hashes:
            return False
        job = request.job(spec, str(entry.scene), entry.conds, entry.out, plan.get("batch_size", 1))
        key = run_key(job, seen["files"], seen.get("engine", ""))
        if key != record.get("run_key") or not outputs_intact(job, key):
            return False
    return True


def _all_skipped(total: int, quiet: bool) -> Summary:
    report, summary = Report(total, quiet), Summary(total)
    report.begin()
    for _ in range(total):
        summary.skipped += 1
        report.unplanned(finished=True)
    report.summary(summary)
    return summary


def run(entries: Sequence[SceneEntry], make_job: Callable[[SceneEntry], SceneJob], source: PipelineSource,
        out: Path, ray_address: str | None = None, cpus_per_worker: int = 1, split_tiles: int = 64,
        quiet: bool = False, verbose: bool = False, manifest_file: Path | None = None) -> Summary:
    """Run every scene (in this process, or on Ray with `ray_address`: "local" starts a local
    runtime) and print the summary. A failed scene is recorded and the others go on. The run
    record and the STAC Collection go where `record_location` says (`manifest_file`: the
    --manifest the entries came from)."""
    if ray_address is not None:
        ray_workers.check_address(ray_address)
    record = record_location([e.out for e in entries], Path(os.path.abspath(out)), manifest_file)
    manifest = RunManifest(record, manifest_file)
    report = Report(len(entries), quiet)
    batch: Batch | None = None
    try:
        if ray_address is None:
            pipeline = source.load()
            batch = Batch(entries, make_job, manifest, source.provenance(pipeline), report, verbose)
            say_if_random(batch.provenance["random_weights"])
            run_sequential(batch, pipeline)
        else:
            with ray_workers.connect(ray_address, quiet), Lease(manifest.path.parent) as lease, \
                    ray_workers.WorkerPool.start(source, cpus_per_worker, lease) as pool:
                batch = Batch(entries, make_job, manifest, pool.provenance, report, verbose)
                say_if_random(batch.provenance["random_weights"])
                ray_workers.run_on_ray(batch, pool, split_tiles, lease)
    finally:
        if batch is not None:
            batch.close()
        manifest.save()
    write_collection(
        manifest.path.with_name(manifest.path.name.replace(RUN_MANIFEST, COLLECTION_FILE)),
        [
            Path(p)
            for r in manifest.scenes.values()
            if r.get("status") == "done"
            for p in r.get("outputs", [])
            if p.endswith("_item.json")
        ],
    )
    report.summary(batch.summary)
    return batch.summary


