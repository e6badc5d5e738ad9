"""`copgen-rt info`: a spec's modality table and the run's plan, or what `infer SCENE` would read,
tile and write."""

from __future__ import annotations

from pathlib import Path

import click

from copgen_rt.cli.errors import friendly_errors
from copgen_rt.cli.options import (
    engine_option,
    first_condition_as_scene,
    scene_options,
    scene_request,
    spec_json_option,
)
from copgen_rt.options import ModelOptions
from copgen_rt.plan import DTYPES


@click.command("info")
@click.argument("scene", required=False)
@click.option("--model", "--spec", "model", default=None,
              help="model spec (default: copgen-demo, as `infer` without --weights)")
@spec_json_option
@click.option("--weights", help="weights directory or hub id (as `infer`)")
@engine_option
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
@click.option("--dtype", type=click.Choice(DTYPES), help="denoiser precision (as `infer`)")
@click.option("--mlm", "mlm_path", type=click.Path(dir_okay=False),
              help="write the model's STAC MLM Item (docs/chains.md) to this JSON file: with --weights "
                   "their checksums, with --export its ONNX files")
@click.option("--export", "export_dir", type=click.Path(file_okay=False, exists=True),
              help="with --mlm: an export folder (copgen-rt export) whose ONNX files are listed")
@scene_options
@friendly_errors
def command(scene, model, spec_json, weights, engine, device, dtype, mlm_path, export_dir, **p):
    """Print a spec's modality table and plan, or what `infer SCENE` would read, tile and write."""
    from copgen_rt.describe import describe_plan, describe_spec

    options = ModelOptions(model, spec_json, weights, engine=engine, device=device, dtype=dtype)
    spec = options.spec()
    if mlm_path:
        from copgen_rt.mlm import write_mlm_item

        click.echo(write_mlm_item(Path(mlm_path), spec, weights, Path(export_dir) if export_dir else None))
        return
    plan = options.plan(spec, p["batch_size"], measure=False)  # info measures nothing
    if scene is None and p["conds"]:
        scene = first_condition_as_scene(p)  # as `infer`
    if scene is None:
        if p["product"] or p["bands"]:
            raise ValueError("--modality and --bands describe SCENE: give SCENE (or a --cond)")
        click.echo(describe_spec(spec))
        click.echo(plan.describe())
        return
    request = scene_request(p, None, "reference", 0, True)
    job = request.job(spec, scene, p["conds"], Path(p["out"]), plan.batch_size)
    click.echo(describe_plan(job, plan))
