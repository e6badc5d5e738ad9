"""The `copgen-rt` command line: its options, and for each command the calls of the Python API
that do the work (`copgen_rt.run_setup`, `copgen_rt.scenes`, `copgen_rt.multiscene`, ...)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from copgen_rt import specs
from copgen_rt.cli_errors import EXIT_SCENES_FAILED, OneLineUsageErrors, friendly_errors, one_line_messages
from copgen_rt.cli_options import (
    job_planner,
    model_option,
    parse_batch_range,
    pop_model_options,
    run_options,
    scene_options,
    spec_json_option,
)
from copgen_rt.cli_progress import progress_bar
from copgen_rt.device import Choice, EngineChoice
from copgen_rt.multiscene import JobPlanner
from copgen_rt.run_setup import ModelOptions, resolve_spec
from copgen_rt.scenes.job import SceneJob
from copgen_rt.scenes.state import refuse_existing


@click.group(cls=OneLineUsageErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="copgen-rt")
def main():
    """copgen-rt: run COP-GEN multimodal Copernicus generation in production."""
    one_line_messages()


@main.command("info")
@click.argument("scene", required=False)
@click.option("--model", "--spec", "model", default=None,
              help="model spec (default: copgen-demo, as `infer` without --weights)")
@spec_json_option
@click.option("--mlm", "mlm_path", type=click.Path(dir_okay=False),
              help="write the model's STAC MLM Item (docs/chains.md) to this JSON file")
@click.option("--weights", help="with --mlm: weights directory or hub id, listed with their checksums")
@click.option("--export", "export_dir", type=click.Path(file_okay=False, exists=True),
              help="with --mlm: an export folder (copgen-rt export) whose ONNX files are listed")
@scene_options
@friendly_errors
def info_cmd(scene, model, spec_json, mlm_path, weights, export_dir, **p):
    """Print a spec's modality table, or what `infer SCENE` would read, tile and write."""
    from copgen_rt.describe import describe_plan, describe_spec
    from copgen_rt.device import choose, choose_engine
    from copgen_rt.tuning import default_batch_size, measured_choice

    spec = ModelOptions(model, spec_json).spec()
    if mlm_path:
        from copgen_rt.mlm import write_mlm_item

        click.echo(write_mlm_item(Path(mlm_path), spec, weights, Path(export_dir) if export_dir else None))
        return
    choice = choose()
    engines, measured = measured_choice(spec, choose_engine(choice.device), measure=False)
    if scene is None:
        click.echo(describe_spec(spec))
        click.echo(choice.describe())
        click.echo(engines.describe())
        return
    batch = p["batch_size"] or default_batch_size(spec, choice.device, measured)
    job = job_planner(p, None, "reference", 0, True)(spec, scene, p["conds"], Path(p["out"]), batch)
    click.echo(describe_plan(job))


def _planned_and_measured(plan: JobPlanner, spec: specs.ModelSpec, scene: str, p: dict, model: ModelOptions,
                          choice: Choice, engines: EngineChoice | None
                          ) -> tuple[SceneJob, EngineChoice | None]:
    """The scene's job and engines. Planned once before anything is measured, so that bad options
    fail at once; planned again when the default batch is the one measured on this CPU kind."""
    from copgen_rt.device import memory_batch_limit
    from copgen_rt.tuning import default_batch_size

    planned = p["batch_size"] or memory_batch_limit(spec, choice.device)
    job = plan(spec, scene, p["conds"], Path(p["out"]), planned)
    engines, measured = model.measured(spec, engines)
    batch = p["batch_size"] or default_batch_size(spec, choice.device, measured)
    return (job if batch == planned else plan(spec, scene, p["conds"], Path(p["out"]), batch)), engines


def _run_scene_job(job: SceneJob, model: ModelOptions, choice: Choice, engines: EngineChoice | None,
                   quiet: bool, verbose: bool):
    """One scene job from the command line: checks before loading, the lock, progress."""
    from copgen_rt.describe import describe_plan
    from copgen_rt.files import check_writable
    from copgen_rt.scenes.run import run_scene
    from copgen_rt.scenes.state import check_outputs, scene_lock

    check_writable(job.out_dir)  # before loading any weights
    check_outputs(job)
    job.check_memory()
    with scene_lock(job):  # a second run of the same scene fails here, before loading anything
        pipeline = model.load(job.spec, choice, engines)
        if verbose:
            click.echo(choice.describe(), err=True)
            if engines:
                click.echo(engines.describe(), err=True)
            click.echo(describe_plan(job), err=True)
        with progress_bar(len(job.plan), quiet) as bar:
            result = run_scene(job, pipeline, progress=bar, locked=True)
    if not quiet and result.already_complete:
        added = f"; added {', '.join(p.name for p in result.added)}" if result.added else ""
        click.echo("already complete: every output exists from the same settings (--overwrite to "
                   f"run again){added}; outputs:", err=True)
    return result


@main.command("infer")
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
def infer_cmd(scenes, solver, others, seed, overwrite, quiet, verbose, manifest, ray_address, cpus_per_worker,
              split_tiles, **p):
    """Generate the missing modalities of SCENE (default: a bundled real chip) as COGs.

    COP-GEN-Beta (--model copgen-beta) takes thumbnails instead: --cond s1_rtc=s1.png, PNGs out.

    Several SCENEs, a glob ('scenes/*.tif') or --manifest run many scenes, on Ray with --ray; a
    rerun skips the scenes already done; exit code 8 if any scene failed.
    """
    from copgen_rt import demo, multiscene
    from copgen_rt.describe import describe_result
    from copgen_rt.scenelist import has_glob
    from copgen_rt.scenes.thumbnail_job import takes_thumbnails

    model = pop_model_options(p)
    if scenes and manifest:
        raise ValueError("give scenes on the command line or --manifest, not both")
    choice, engines = model.check()
    plan = job_planner(p, solver, others, seed, overwrite)
    if ray_address is not None or manifest or len(scenes) > 1 or has_glob(scenes):
        summary = multiscene.run_from_options(scenes, manifest, p["conds"], p["out"], model, plan,
                                              p["batch_size"], ray_address, cpus_per_worker, split_tiles,
                                              quiet, verbose)
        sys.exit(EXIT_SCENES_FAILED if summary.failed else 0)
    scene = scenes[0] if scenes else None
    spec = model.spec()
    if takes_thumbnails(spec):
        return _infer_thumbnails(spec, scene, model, choice, engines, solver, others, seed, overwrite,
                                 quiet, p)
    job, engines = _planned_and_measured(plan, spec, scene or demo.default_scene(), p, model, choice, engines)
    result = _run_scene_job(job, model, choice, engines, quiet, verbose)
    if not quiet and not result.already_complete:
        click.echo(describe_result(result), err=True)
    for path in result.outputs:
        click.echo(str(path))


def _infer_thumbnails(spec: specs.ModelSpec, scene: str | None, model: ModelOptions, choice: Choice,
                      engines: EngineChoice | None, solver: str | None, others: str, seed: int,
                      overwrite: bool, quiet: bool, p: dict) -> None:
    """Thumbnail families (COP-GEN-Beta): --cond MODALITY=FILE (image or raster), PNGs out."""
    from copgen_rt.files import check_writable
    from copgen_rt.scenes.job import parse_generate
    from copgen_rt.scenes.thumbnail_job import run_thumbnails, thumbnail_conditions

    if scene is not None:
        raise ValueError(f"{spec.name} takes its inputs as --cond MODALITY=FILE, e.g. --cond s1_rtc=s1.png")
    conditions = thumbnail_conditions(spec, p["conds"])
    generate = None if p["generate"] is None else parse_generate(p["generate"], "modalities")
    check_writable(Path(p["out"]))  # before loading any weights
    engines, _ = model.measured(spec, engines)
    pipeline = model.load(spec, choice, engines)
    written = run_thumbnails(pipeline, conditions, Path(p["out"]), generate, samples=p["samples"], seed=seed,
                             preset=p["preset"], solver=solver, steps=p["steps"], others=others,
                             overwrite=overwrite)
    if not quiet:
        click.echo(f"wrote {len(written)} files", err=True)
    for path in written:
        click.echo(str(path))


@main.command("fill")
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
def fill_cmd(scene, mask, scl, scl_classes, nodata_only, feather, jumps, jump_length, solver, others, seed,
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
    choice, engines = model.check()
    spec = model.spec()
    if takes_thumbnails(spec):
        raise ValueError(f"{spec.name} takes thumbnails: fill runs on COP-GEN scenes")
    fill = FillOptions(mask=Path(mask) if mask else None, scl=Path(scl) if scl else None,
                       scl_classes=parse_scl_classes(scl_classes), feather=feather, jumps=jumps,
                       jump_length=jump_length)
    plan = job_planner(p, solver, others, seed, overwrite, fill)
    job, engines = _planned_and_measured(plan, spec, scene, p, model, choice, engines)
    result = _run_scene_job(job, model, choice, engines, quiet, verbose)
    if not quiet and not result.already_complete:
        for line in describe_fill_result(job, result):
            click.echo(line, err=True)
    for path in result.outputs:
        click.echo(str(path))


@main.command("make-random-weights")
@model_option
@spec_json_option
@click.option("--out", required=True, type=click.Path(file_okay=False), help="output directory")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--dtype", default="fp32", show_default=True, type=click.Choice(["fp32", "fp16", "bf16"]))
@click.option("--overwrite", is_flag=True, help="replace existing files in --out")
@friendly_errors
def make_random_weights_cmd(model, spec_json, out, seed, dtype, overwrite):
    """Write a synthetic checkpoint set with the real shapes, marked random (benchmarks, demos)."""
    from copgen_rt.weights import make_random_weights, parse_dtype

    spec = resolve_spec(model, spec_json)
    refuse_existing([Path(out) / "weights.json"], overwrite)
    make_random_weights(spec, out, seed=seed, dtype=parse_dtype(dtype))
    click.echo(f"wrote random {spec.name} weights to {out} (marked random: outputs will say so)")


@main.command("convert")
@model_option
@spec_json_option
@click.option("--weights", required=True, help="weights directory (released layout) or hub id")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), help="cast (default: keep)")
@click.option("--overwrite", is_flag=True)
@friendly_errors
def convert_cmd(model, spec_json, weights, out, dtype, overwrite):
    """Check released checkpoints strictly against the spec and write them as safetensors."""
    from copgen_rt.weights import convert, parse_dtype

    spec = resolve_spec(model, spec_json)
    refuse_existing([Path(out) / "weights.json"], overwrite)
    convert(spec, weights, out, parse_dtype(dtype) if dtype else None)
    click.echo(f"wrote {out}")


@main.command("export")
@click.option("--model", "--spec", "model", default=None,
              help="model spec (default: copgen-demo without --weights, copgen-base with)")
@spec_json_option
@click.option("--weights", help="weights directory or hub id (default: the bundled random demo model)")
@click.option("--format", "fmt", type=click.Choice(["onnx", "tensorrt"]), default="onnx", show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True,
              help="engine precision (ONNX graphs are fp32; fp16/bf16 apply to TensorRT engines)")
@click.option("--batch", default="1:4:16", show_default=True, help="dynamic batch MIN:OPT:MAX")
@click.option("--modalities", help="VAEs to export (default: every VAE found), comma-separated")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True)
@friendly_errors
def export_cmd(model, spec_json, weights, fmt, precision, batch, modalities, out, overwrite):
    """Export the denoiser and each VAE encoder/decoder to ONNX (and TensorRT engines)."""
    from copgen_rt import demo
    from copgen_rt.export.onnx import export_weights
    from copgen_rt.export.tensorrt import _require_tensorrt, build_engines, build_plan
    from copgen_rt.weights import resolve_weights

    batch_range = parse_batch_range(batch)
    if fmt == "onnx" and precision != "fp32":
        raise ValueError("ONNX graphs are exported in fp32; use --format tensorrt for fp16/bf16 engines")
    if fmt == "tensorrt":
        _require_tensorrt()  # fail before the (long) export
    spec = ModelOptions(model, spec_json, weights).spec()
    refuse_existing([Path(out) / "manifest.json"], overwrite)
    files = resolve_weights(spec, weights or demo.demo_weights())
    names = [m.strip() for m in modalities.split(",")] if modalities else None
    manifest = export_weights(spec, files, Path(out), names, batch_range,
                              progress=lambda name: click.echo(f"exporting {name}", err=True))
    manifest.tensorrt = build_plan(manifest, precision if fmt == "tensorrt" else "fp32", list(batch_range))
    manifest.save(Path(out))
    for c in manifest.components:
        click.echo(f"{c.file}: parity {c.parity.get('max_rel_err', float('nan')):.1e} vs torch")
    if fmt == "tensorrt":
        build_engines(Path(out), precision, list(batch_range), log=lambda m: click.echo(m, err=True))
    click.echo(f"wrote {out}")


@main.command("build-engines")
@click.argument("folder", type=click.Path(file_okay=False, exists=True))
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp16", show_default=True)
@click.option("--batch", help="MIN:OPT:MAX (default: the export's)")
@friendly_errors
def build_engines_cmd(folder, precision, batch):
    """Build TensorRT engines for an ONNX export folder (on the GPU that will run them)."""
    from copgen_rt.export.tensorrt import build_engines

    build_engines(Path(folder), precision, list(parse_batch_range(batch)) if batch else None,
                  log=lambda m: click.echo(m, err=True))
    click.echo(f"engines in {folder}")


@main.command("bench")
@click.option("--device", default=None, help="cpu or cuda (default: cuda if available)")
@click.option("--quick", is_flag=True, help="a smoke run on the tiny model (seconds)")
@click.option("--base-only", is_flag=True, help="skip the tiny and mid-size per-call tables")
@click.option("--out", default="benchmarks/results", show_default=True, type=click.Path(file_okay=False))
@friendly_errors
def bench_cmd(device, quick, base_only, out):
    """Measure GEMM limits, denoiser calls per engine/precision, presets and scenes on this machine."""
    from copgen_rt import bench
    from copgen_rt.device import choose

    results = bench.run(Path(out), device=choose(device).device, quick=quick, base_only=base_only,
                        log=lambda line: click.echo(line, err=True))
    click.echo(str(bench.write_reports(results, Path(out)).with_suffix(".md")))
