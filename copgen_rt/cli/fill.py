"""`copgen-rt fill`: fill the gaps of a scene (clouds, shadows, nodata), keeping its valid pixels."""

from __future__ import annotations

from pathlib import Path

import click

from copgen_rt.cli.errors import friendly_errors
from copgen_rt.cli.options import pop_model_options, run_options, scene_request
from copgen_rt.cli.scene_run import planned_job, run_scene_job


@click.command("fill")
@click.argument("scene")
@click.option("--mask", type=click.Path(dir_okay=False),
              help="gap mask raster: non-zero (and its nodata) = gap, e.g. clouds and shadows = 1")
@click.option("--scl", type=click.Path(dir_okay=False),
              help="the SCL band of an L2A product: its --scl-classes are gaps")
@click.option("--scl-classes", default="0,3,8,9,10", show_default=True,
              help="SCL classes to fill: 0 no data, 3 cloud shadows, 8/9 cloud medium/high probability, "
                   "10 thin cirrus (1 saturated, 2 dark area, 11 snow also possible)")
@click.option("--nodata", "nodata_only", is_flag=True, help="fill only the scene's own nodata pixels")
@click.option("--feather", default=2, show_default=True, type=click.IntRange(0, 100),
              help="seam width in pixels (of each output's grid) where the fill meets the input")
@click.option("--jumps", default=0, show_default=True, type=click.IntRange(0, 100),
              help="RePaint resampling jumps (with --solver reference or ddim; docs/gapfill.md)")
@click.option("--jump-length", default=1, show_default=True, type=click.IntRange(1, 1000),
              help="solver steps per resampling block")
@run_options
@friendly_errors
def command(scene, mask, scl, scl_classes, nodata_only, feather, jumps, jump_length, solver, others, seed,
             overwrite, quiet, verbose, **p):
    """Fill the gaps of SCENE (clouds, shadows, nodata) from the other inputs (--cond) and the
    valid pixels around them; the valid pixels are kept bit for bit.

    Writes SCENE_filled_MODALITY.tif per modality of SCENE, SCENE_filled_MODALITY_generated.tif
    (1 = generated pixel), with --samples N a per-pixel standard deviation inside the gaps.
    """
    from copgen_rt.describe import describe_fill_result
    from copgen_rt.scenes.fill import FillOptions
    from copgen_rt.scenes.masks import parse_scl_classes
    from copgen_rt.scenes.thumbnail_job import takes_thumbnails

    model = pop_model_options(p)
    if [bool(mask), bool(scl), nodata_only].count(True) != 1:
        raise ValueError("say what to fill: --mask MASK, --scl SCL or --nodata (one of them)")
    model.check()
    spec = model.spec()
    if takes_thumbnails(spec):
        raise ValueError(f"{spec.name} takes thumbnails: fill runs on COP-GEN scenes")
    fill = FillOptions(mask=Path(mask) if mask else None, scl=Path(scl) if scl else None,
                       scl_classes=parse_scl_classes(scl_classes), feather=feather, jumps=jumps,
                       jump_length=jump_length)
    request = scene_request(p, solver, others, seed, overwrite, fill)
    job, plan = planned_job(request, spec, scene, p, model)
    result = run_scene_job(job, model, plan, quiet, verbose)
    if not quiet and not result.already_complete:
        for line in describe_fill_result(job, result):
            click.echo(line, err=True)
    for path in result.outputs:
        click.echo(str(path))
