"""Many scenes in one command: in this process, one after the other (`run_sequential`), or on a
Ray cluster (`copgen_rt.distributed`). Every scene runs through `copgen_rt.scenes.run` exactly as
a single scene does; `copgen_rt.scenelist` says which scenes, `copgen_rt.driver` plans them and
records their results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from copgen_rt.driver import RUN_MANIFEST, Batch, PipelineSource, Report, RunManifest, Summary, one_line, say
from copgen_rt.pipeline import Pipeline
from copgen_rt.scenelist import SceneEntry
from copgen_rt.scenes.job import SceneJob
from copgen_rt.scenes.run import run_scene
from copgen_rt.scenes.stac import write_collection


def run_sequential(batch: Batch, pipeline: Pipeline) -> None:
    for entry, job in batch.jobs():
        try:
            result = run_scene(job, pipeline, progress=batch.report.tiles, locked=True)
        except Exception as e:  # noqa: BLE001 - a bad scene must not stop the others
            batch.fail(entry, one_line(e))
        else:
            batch.done(entry, job, result)


def run(entries: Sequence[SceneEntry], make_job: Callable[[SceneEntry], SceneJob], source: PipelineSource,
        out: Path, ray_address: str | None = None, cpus_per_worker: int = 1, split_tiles: int = 64,
        quiet: bool = False, verbose: bool = False) -> Summary:
    """Run every scene (in this process, or on Ray with `ray_address`: "local" starts a local
    runtime) and print the summary. A failed scene is recorded and the others go on."""
    if ray_address is not None:
        from copgen_rt import distributed

        distributed.check_address(ray_address)
    manifest = RunManifest(Path(out).absolute() / RUN_MANIFEST)
    report = Report(len(entries), quiet)
    batch: Batch | None = None
    try:
        if ray_address is None:
            pipeline = source.load()
            batch = Batch(entries, make_job, manifest, source.provenance(pipeline), report, verbose)
            _warn_if_random(batch.provenance)
            run_sequential(batch, pipeline)
        else:
            with distributed.connect(ray_address, quiet), \
                    distributed.WorkerPool.start(source, cpus_per_worker) as pool:
                batch = Batch(entries, make_job, manifest, pool.provenance, report, verbose)
                _warn_if_random(batch.provenance)
                distributed.run_on_ray(batch, pool, split_tiles)
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


def _warn_if_random(provenance: dict) -> None:
    if provenance["random_weights"]:
        say("RANDOM WEIGHTS: outputs are synthetic, not predictions (pass --weights for a real model)")
