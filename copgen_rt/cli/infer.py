"""`copgen-rt infer`: generate the missing modalities of one scene, many scenes, or (COP-GEN-Beta)
thumbnails."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from copgen_rt import specs
from copgen_rt.cli.errors import friendly_errors
from copgen_rt.cli.options import pop_model_options, run_options, scene_request
from copgen_rt.cli.scene_run import planned_job, run_scene_job
from copgen_rt.errors import EXIT_SCENES_FAILED
from copgen_rt.options import ModelOptions


@click.command("infer")
@click.argument("scenes", nargs=-1)
@run_options
@click.option("--manifest", type=click.Path(dir_okay=False),
              help="scenes to run: one path per line, or CSV with the header scene,cond,out")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", metavar="[ADDRESS]",
              help="run the scenes on Ray: a local runtime, or the cluster at ADDRESS (HOST:PORT)")
@click.option("--cpus-per-worker", default=1, show_default=True, type=click.IntRange(1),
              help="CPU cores per Ray worker when there is no GPU (else one worker per GPU)")
@click.option("--split-tiles", default=64, show_default=True, type=click.IntRange(1),
              help="with --ray, scenes with more tiles are split across workers")
@friendly_errors
def command(scenes, solver, others, seed, overwrite, quiet, verbose, manifest, ray_address, cpus_per_worker,
            split_tiles, **p):
    """Generate the missing modalities of SCENE (default: a bundled real chip) as COGs.

    COP-GEN-Beta (--model copgen-beta) takes thumbnails instead: --cond s1_rtc=s1.png, PNGs out.

    Several SCENEs, a glob ('scenes/*.tif') or --manifest run many scenes, on Ray with --ray; a
    rerun skips the scenes already done; exit code 8 if any scene failed.
    """
    from copgen_rt import demo
    from copgen_rt.describe import describe_result
    from copgen_rt.runs import scheduler
    from copgen_rt.runs.scenelist import has_glob
    from copgen_rt.scenes.thumbnail_job import takes_thumbnails

    model = pop_model_options(p)
    if scenes and manifest:
        raise ValueError("give scenes on the command line or --manifest, not both")
    model.check()
    request = scene_request(p, solver, others, seed, overwrite)
    if ray_address is not None or manifest or len(scenes) > 1 or has_glob(scenes):
        summary = scheduler.run_from_options(scenes, manifest, p["conds"], p["out"], model, request,
                                              p["batch_size"], ray_address, cpus_per_worker, split_tiles,
                                              quiet, verbose)
        sys.exit(EXIT_SCENES_FAILED if summary.failed else 0)
    scene = scenes[0] if scenes else None
    spec = model.spec()
    if takes_thumbnails(spec):
        return _infer_thumbnails(spec, scene, model, solver, others, seed, overwrite, quiet, p)
    job, plan = planned_job(request, spec, scene or demo.default_scene(), p, model)
    result = run_scene_job(job, model, plan, quiet, verbose)
    if not quiet and not result.already_complete:
        click.echo(describe_result(result), err=True)
    for path in result.outputs:
        click.echo(str(path))


def _infer_thumbnails(spec: specs.ModelSpec, scene: str | None, model: ModelOptions, solver: str | None,
                      others: str, seed: int, overwrite: bool, quiet: bool, p: dict) -> None:
    """Thumbnail families (COP-GEN-Beta): --cond MODALITY=FILE (image or raster), PNGs out."""
    from copgen_rt.files import check_writable
    from copgen_rt.scenes.job import parse_generate
    from copgen_rt.scenes.thumbnail_job import run_thumbnails, thumbnail_conditions

    if scene is not None:
        raise ValueError(f"{spec.name} takes its inputs as --cond MODALITY=FILE, e.g. --cond s1_rtc=s1.png")
    conditions = thumbnail_conditions(spec, p["conds"])
    generate = None if p["generate"] is None else parse_generate(p["generate"], "modalities")
    check_writable(Path(p["out"]))  # before loading any weights
    pipeline = model.load(spec, model.plan(spec, p["batch_size"]))
    written = run_thumbnails(pipeline, conditions, Path(p["out"]), generate, samples=p["samples"], seed=seed,
                             preset=p["preset"], solver=solver, steps=p["steps"], others=others,
                             overwrite=overwrite)
    if not quiet:
        click.echo(f"wrote {len(written)} files", err=True)
    for path in written:
        click.echo(str(path))
