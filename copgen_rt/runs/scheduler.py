"""Many scenes in one command: in this process, one after the other (`run_sequential`), or on a
Ray cluster (`copgen_rt.runs.ray_workers`). Every scene runs through `copgen_rt.scenes.run` exactly
as a single scene does; `scenelist` says which scenes, `batch` plans them and records their
results in the run record (`record`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from copgen_rt.errors import one_line
from copgen_rt.files import check_writable
from copgen_rt.options import ModelOptions, say_if_random
from copgen_rt.pipeline import Pipeline
from copgen_rt.runs import ray_workers, scenelist
from copgen_rt.runs.batch import Batch
from copgen_rt.runs.record import RUN_MANIFEST, RunManifest
from copgen_rt.runs.report import Report, Summary
from copgen_rt.runs.scenelist import SceneEntry
from copgen_rt.runs.source import PipelineSource
from copgen_rt.scenes.job import SceneJob, SceneRequest
from copgen_rt.scenes.run import run_scene
from copgen_rt.scenes.stac import write_collection
from copgen_rt.scenes.thumbnail_job import takes_thumbnails


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
    before any weights load, then `run`; `request` makes each scene's job."""
    if ray_address is not None:
        ray_workers.check_address(ray_address)  # before the scenes: `--ray scene.tif` took one as ADDRESS
    entries = scenelist.expand(scenes, manifest, conds, out)
    check_writable(Path(out))  # the run manifest's folder, before loading any weights; a scene
    # whose own folder cannot be written fails alone
    spec = model.spec()
    if takes_thumbnails(spec):
        raise ValueError(f"{spec.name} takes thumbnails (--cond MODALITY=FILE): run one job at a time")
    # one plan for every worker: engines, precision and batch size (results depend on them)
    plan = model.plan(spec, batch_size)
    source = model.source(spec, plan)

    def make_job(entry: SceneEntry) -> SceneJob:
        return request.job(spec, str(entry.scene), entry.conds, entry.out, plan.batch_size)

    return run(entries, make_job, source, Path(out),
               ray_address, cpus_per_worker, split_tiles, quiet, verbose)


def run(entries: Sequence[SceneEntry], make_job: Callable[[SceneEntry], SceneJob], source: PipelineSource,
        out: Path, ray_address: str | None = None, cpus_per_worker: int = 1, split_tiles: int = 64,
        quiet: bool = False, verbose: bool = False) -> Summary:
    """Run every scene (in this process, or on Ray with `ray_address`: "local" starts a local
    runtime) and print the summary. A failed scene is recorded and the others go on."""
    if ray_address is not None:
        ray_workers.check_address(ray_address)
    manifest = RunManifest(Path(out).absolute() / RUN_MANIFEST)
    report = Report(len(entries), quiet)
    batch: Batch | None = None
    try:
        if ray_address is None:
            pipeline = source.load()
            batch = Batch(entries, make_job, manifest, source.provenance(pipeline), report, verbose)
            say_if_random(batch.provenance["random_weights"])
            run_sequential(batch, pipeline)
        else:
            with ray_workers.connect(ray_address, quiet), \
                    ray_workers.WorkerPool.start(source, cpus_per_worker) as pool:
                batch = Batch(entries, make_job, manifest, pool.provenance, report, verbose)
                say_if_random(batch.provenance["random_weights"])
                ray_workers.run_on_ray(batch, pool, split_tiles)
    finally:
        if batch is not None:
            batch.close()
        manifest.save()
    write_collection(
        manifest.path.parent,
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


