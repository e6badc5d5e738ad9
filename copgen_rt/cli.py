"""The `copgen-rt` command line: thin wrappers over the Python API."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import click

from copgen_rt import demo, specs
from copgen_rt.scenes.job import SceneJob
from copgen_rt.scenes.state import OutputExistsError, refuse_existing
from copgen_rt.weights import RandomWeightsWarning

# distinct exit codes, documented in the README
EXIT_INPUT, EXIT_CHECKPOINT, EXIT_OUTPUT_EXISTS, EXIT_MISSING, EXIT_EXPORT, EXIT_INTERNAL = 3, 4, 5, 6, 7, 1
EXIT_SCENES_FAILED = 8  # many scenes: at least one failed (the others ran)
EXIT_CANNOT_WRITE = 9  # an output folder is not writable, the disk is full, a planted link was refused
EXIT_BUSY = 10  # another run is writing the same scene's outputs right now
MAX_ENGINE_BATCH = 4096  # the sampler's --batch-size limit: engines are never built larger


def _fail(code: int, message: str):
    from copgen_rt.signals import exit_if_interrupted

    exit_if_interrupted()
    click.echo(f"copgen-rt: error: {message}", err=True)
    sys.exit(code)


def friendly_errors(fn):
    """One line and a distinct exit code for every expected failure; no tracebacks."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from copgen_rt.export.onnx import ExportError
        from copgen_rt.files import OutputBusyError, OutputWriteError
        from copgen_rt.weights import CheckpointError

        try:
            return fn(*args, **kwargs)
        except OutputWriteError as e:
            _fail(EXIT_CANNOT_WRITE, str(e))
        except OutputBusyError as e:
            _fail(EXIT_BUSY, str(e))
        except CheckpointError as e:
            _fail(EXIT_CHECKPOINT, str(e))
        except ExportError as e:
            _fail(EXIT_EXPORT, str(e))
        except (OutputExistsError, FileExistsError) as e:
            _fail(EXIT_OUTPUT_EXISTS, str(e))
        except (ValueError, KeyError, FileNotFoundError, IsADirectoryError, PermissionError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            _fail(EXIT_INPUT, str(msg).splitlines()[0] if str(msg) else type(e).__name__)
        except ImportError as e:
            _fail(EXIT_MISSING, str(e).splitlines()[0])
        except MemoryError:
            _fail(EXIT_INTERNAL, "out of memory: lower --batch-size")
        except KeyboardInterrupt:
            _fail(130, "interrupted")
        except Exception as e:  # noqa: BLE001 - last resort, still one line
            if "--debug" in sys.argv or _debug():
                raise
            first = str(e).splitlines()[0] if str(e) else ""
            _fail(EXIT_INTERNAL,
                  f"internal error: {type(e).__name__}: {first} (set COPGEN_RT_DEBUG=1 for a traceback)")

    return wrapper


def _debug() -> bool:
    return os.environ.get("COPGEN_RT_DEBUG") == "1"


def resolve_spec(model: str, spec_json: str | None) -> specs.ModelSpec:
    if spec_json:
        return specs.from_json(spec_json)
    return specs.get(model)


model_option = click.option("--model", "--spec", "model", default="copgen-base", show_default=True,
                            help=f"model spec: {', '.join(specs.names())}")
spec_json_option = click.option("--spec-json", type=click.Path(dir_okay=False),
                                help="a custom spec.json (fixture format) instead of --model")


class _OneLineUsageErrors(click.Group):
    """click's usage errors (unknown option, bad value) as one line, like every other error."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:
            click.echo(e.ctx.get_help(), err=True)
            sys.exit(e.exit_code)
        except click.UsageError as e:
            where = e.ctx.command_path if e.ctx else "copgen-rt"
            _fail(e.exit_code, f"{e.format_message()} (see '{where} --help')")
        except click.ClickException as e:
            _fail(e.exit_code, e.format_message())
        except click.Abort:
            _fail(130, "interrupted")
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_OneLineUsageErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="copgen-rt")
def main():
    """copgen-rt: run COP-GEN multimodal Copernicus generation in production."""
    warnings.simplefilter("default")
    # GDAL's messages reach us as exceptions, each turned into one line; its log lines would
    # print raw (e.g. "_tiffSeekProc" on a full disk) next to them
    logging.getLogger("rasterio").addHandler(logging.NullHandler())
    logging.getLogger("rasterio").propagate = False
    os.environ.setdefault("CPL_LOG", os.devnull)  # GDAL's default handler, outside rasterio's calls
    # a raster without georeferencing is refused with its own one-line error
    warnings.filterwarnings("ignore", message="Dataset has no geotransform")
    # the API's RandomWeightsWarning: the commands print their own RANDOM WEIGHTS line
    warnings.filterwarnings("ignore", category=RandomWeightsWarning)
    warnings.showwarning = _show_warning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each, written through tqdm so that a progress bar does not hide them."""
    from tqdm import tqdm

    text = str(message).strip().splitlines()[0] if str(message).strip() else ""
    tqdm.write(f"copgen-rt: warning: {category.__name__}: {text}", file=sys.stderr)


class _LineProgress:
    """Progress for logs (stderr not a terminal): a plain line at most every `interval` seconds
    and at the end, never carriage returns."""

    def __init__(self, total: int, interval: float = 10.0):
        import time

        self.total, self.done, self.interval, self.clock = total, 0.0, interval, time.monotonic
        self.start = self.last = self.clock()

    def __call__(self, tiles: float) -> None:
        self.done += tiles
        if self.clock() - self.last >= self.interval:
            self._line()

    def _line(self) -> None:
        self.last = self.clock()
        click.echo(f"copgen-rt: {self.done:.1f}/{self.total} tiles ({self.done / max(self.total, 1):.0%}), "
                   f"{self.last - self.start:.0f} s", err=True)

    def __enter__(self) -> _LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self._line()


@contextlib.contextmanager
def progress_bar(total: int, quiet: bool):
    """A callable taking tiles done (fractions as network calls finish): a tqdm bar on a terminal,
    periodic plain lines in logs, nothing with --quiet."""
    from copgen_rt.signals import exit_if_interrupted

    def checked(report: Callable[[float], object]) -> Callable[[float], None]:
        def update(tiles: float) -> None:  # a signal swallowed by a library still stops the run here
            exit_if_interrupted()
            report(tiles)
        return update

    if quiet:
        yield checked(lambda tiles: None)
    elif sys.stderr.isatty():
        from tqdm import tqdm

        with tqdm(total=total, unit="tile", desc="copgen-rt", file=sys.stderr,
                  bar_format="{l_bar}{bar}| {n:.1f}/{total} tiles [{elapsed}<{remaining}]") as bar:
            yield checked(bar.update)
    else:
        with _LineProgress(total) as lines:
            yield checked(lines)


def _finite(ctx, param, value):
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number")
    return value


def scene_options(fn):
    """Options shared by `infer` and `info SCENE` (what is read, how it is tiled)."""
    options = [
        click.option("--cond", "conds", multiple=True, metavar="PRODUCT=PATH",
                     help="another input, e.g. --cond S1RTC=s1.tif --cond DEM=dem.tif; PATH as SCENE: a "
                          "raster, SAFE folder or .zip, per-band folder or A.tif,B.tif list, STAC Item"),
        click.option("--modality", "product", help="product of SCENE: S2L2A, S2L1C, S1RTC, DEM, LULC, CLOUD"),
        click.option("--bands", help="band names of SCENE in file order, comma-separated"),
        click.option("--generate", help="modalities or products to generate (default: all not given)"),
        click.option("--date", help="acquisition date YYYY-MM-DD (default: from metadata, else generated)"),
        click.option("--overlap", default=360.0, show_default=True, type=float, callback=_finite,
                     help="tile overlap in metres (multiple of 60)"),
        click.option("--samples", default=1, show_default=True, type=click.IntRange(1, 1000),
                     help="samples per tile; > 1 writes per-pixel mean and standard deviation"),
        click.option("--preset", type=click.Choice(["exact", "fast", "draft"]),
                     help="exact = the reference sampler (50 steps); fast/draft = fewer steps "
                          "(docs/solvers.md); --solver/--steps override"),
        click.option("--steps", type=click.IntRange(1, 1000), help="network calls (default: preset's)"),
        click.option("--batch-size", type=click.IntRange(1, 4096), help="tiles per sampler call"),
        click.option("--s1-units", type=click.Choice(["auto", "db", "linear"]), default="auto",
                     show_default=True),
        click.option("--lulc-values", type=click.Choice(["auto", "index", "code"]), default="auto",
                     show_default=True, help="land cover as class indices 0-9 or Esri codes"),
        click.option("--s2-offset", type=float, default=None, callback=_finite,
                     help="add to S2 DNs, e.g. -1000 to remove the baseline-04.00 BOA offset "
                          "(default 0: DNs as distributed, as in training)"),
        click.option("--out", default="copgen-out", show_default=True, type=click.Path(file_okay=False)),
        click.option("--quicklook", is_flag=True, help="also write PNG pictures of the outputs"),
        click.option("--grid", type=click.Choice(["native", "10"]), default="native", show_default=True,
                     help="native: each output on its own 10/20/30/60 m grid; 10: every output on the "
                          "scene's 10 m grid with exactly its bounds (coarser pixels repeated)"),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _parse_date(text: str | None):
    import datetime as dt

    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--date {text!r}: expected YYYY-MM-DD") from None


def _scene_job(spec: specs.ModelSpec, scene: str, p: dict, batch_size: int, solver: str | None, others: str,
               seed: int, overwrite: bool, fill=None):
    from copgen_rt.scenes.job import SceneJob, SceneOptions
    from copgen_rt.scenes.reader import open_input

    date = _parse_date(p["date"])
    common = dict(s1_units=p["s1_units"], lulc_values=p["lulc_values"], s2_offset=p["s2_offset"], date=date)
    bands = tuple(b.strip() for b in p["bands"].split(",")) if p["bands"] else None
    inputs = [open_input(scene, product=p["product"], bands=bands, **common)]
    for item in p["conds"]:
        product, sep, path = item.partition("=")
        if not sep or not path:
            raise ValueError(f"--cond {item!r}: expected PRODUCT=PATH, e.g. S1RTC=s1.tif")
        inputs.append(open_input(path, product=product, **common))
    generate = None
    if p["generate"] is not None:
        wanted = []
        for token in (t.strip() for t in p["generate"].split(",") if t.strip()):
            matches = [m.name for m in spec.modalities if token in (m.name, m.product)]
            if not matches:
                raise ValueError(f"--generate {token}: not a modality or product of {spec.name}")
            wanted += matches
        if not wanted:
            raise ValueError("--generate is empty: name modalities or products, or leave it out for all")
        generate = tuple(wanted)
    options = SceneOptions(generate=generate, steps=p["steps"], solver=solver, preset=p["preset"],
                           others=others, seed=seed, quicklook=p["quicklook"],
                           overlap_m=p["overlap"], batch_size=batch_size, samples=p["samples"], date=date,
                           overwrite=overwrite, grid=None if p["grid"] == "native" else float(p["grid"]),
                           fill=fill)
    return SceneJob(spec, inputs, Path(p["out"]), options)


def default_scene() -> str:
    return str(demo.chip_path())


def demo_weights() -> str:
    return str(demo.weights_path())


@main.command("info")
@click.argument("scene", required=False)
@click.option("--model", "--spec", "model", default=None,
              help="model spec (default: copgen-demo, as `infer` without --weights)")
@spec_json_option
@scene_options
@friendly_errors
def info_cmd(scene, model, spec_json, **p):
    """Print a spec's modality table, or what `infer SCENE` would read, tile and write."""
    from copgen_rt.device import choose, choose_engine

    spec = _infer_spec(model, spec_json, weights=None, engine=None)
    choice = choose()
    if scene is None:
        click.echo(describe_spec(spec))
        click.echo(choice.describe())
        click.echo(choose_engine(choice.device).describe())
        return
    job = _scene_job(spec, scene, p, batch_size=p["batch_size"] or _default_batch_size(spec, choice.device),
                     solver=None, others="reference", seed=0, overwrite=True)
    click.echo(describe_plan(spec, job))


def describe_plan(spec: specs.ModelSpec, job: SceneJob) -> str:
    """The model a scene job is planned for, then the job's plan (`info SCENE`, `infer -v`)."""
    model = f"model: {spec.name}"
    if spec.name == "copgen-demo":
        model += " (the bundled random demo model: infer's default without --weights)"
    return f"{model}\n{job.describe()}"


def run_options(fn):
    """Options shared by `infer` and `fill` (which model, engine, sampler and run policy)."""
    options = [
        click.option("--model", "--spec", "model", default=None,
                     help="model spec (default: copgen-demo without --weights, copgen-base with)"),
        spec_json_option,
        click.option("--weights",
                     help="weights directory or hub id (default: the bundled random demo model)"),
        click.option("--engine", type=click.Path(file_okay=False),
                     help="an export folder of `copgen-rt export` (onnxruntime or TensorRT) instead of "
                          "--weights"),
        click.option("--backend", type=click.Choice(["auto", "torch", "triton", "onnxruntime", "openvino"]),
                     help="engine of each component when running from --weights (default auto: openvino on "
                          "CPUs where it is installed, else torch; see `info`)"),
        scene_options,
        click.option("--solver", type=click.Choice(["reference", "dpmpp-2m", "dpmpp-3m", "ddim"]),
                     help="default: the preset's (reference for exact)"),
        click.option("--others", default="reference", show_default=True,
                     type=click.Choice(["reference", "marginal"]),
                     help="modalities neither given nor generated: reference behaviour or pure noise"),
        click.option("--seed", default=0, show_default=True, type=int),
        click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)"),
        click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16", "int8"]),
                     help="denoiser precision (default: what the device runs natively; see `info`); int8: "
                          "opt-in W8A8 on CPUs with VNNI, calibrated once on the bundled chip"),
        click.option("--overwrite", is_flag=True, help="replace existing outputs"),
        click.option("--quiet", "-q", is_flag=True, help="no progress bar"),
        click.option("--verbose", "-v", is_flag=True, help="print the plan before running"),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _check_run_args(model, spec_json, weights, engine, backend, dtype, device):
    """The choices of `run_options` that cannot go together fail before anything loads;
    returns the device choice and the engines (None with --engine)."""
    from copgen_rt.device import choose as choose_device
    from copgen_rt.device import choose_engine

    if engine and weights:
        raise ValueError("give --weights or --engine, not both")
    if engine and (model or spec_json):
        raise ValueError("--engine carries the spec it was exported with: drop --model/--spec-json")
    if model is not None and spec_json is None:
        specs.get(model)  # an unknown name fails here, before anything else
    if weights is None and engine is None and model not in (None, "copgen-demo"):
        raise ValueError(f"--model {model} needs --weights (a directory or a hub id)")
    if engine and (backend or dtype):
        raise ValueError("--engine runs the export's own engine and precision: drop --backend/--dtype")
    choice = choose_device(device, dtype)
    return choice, None if engine else choose_engine(choice.device, backend, dtype)  # bad pairs fail here


def _run_scene_job(job: SceneJob, spec: specs.ModelSpec, weights, engine, choice, engines, quiet: bool,
                   verbose: bool):
    """One scene job from the command line: checks before loading, the lock, progress."""
    from copgen_rt.files import check_writable
    from copgen_rt.scenes.run import run_scene
    from copgen_rt.scenes.state import check_outputs, scene_lock

    check_writable(job.out_dir)  # before loading any weights
    check_outputs(job)
    job.check_memory()
    with scene_lock(job):  # a second run of the same scene fails here, before loading anything
        pipeline = _load_pipeline(spec, weights, engine, choice, engines)
        if verbose:
            click.echo(choice.describe(), err=True)
            if engines:
                click.echo(engines.describe(), err=True)
            click.echo(describe_plan(spec, job), err=True)
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
def infer_cmd(scenes, model, spec_json, weights, engine, backend, solver, others, seed, device, dtype,
              overwrite, quiet, verbose, manifest, ray_address, cpus_per_worker, split_tiles, **p):
    """Generate the missing modalities of SCENE (default: a bundled real chip) as COGs.

    COP-GEN-Beta (--model copgen-beta) takes thumbnails instead: --cond s1_rtc=s1.png, PNGs out.

    Several SCENEs, a glob ('scenes/*.tif') or --manifest run many scenes, on Ray with --ray; a
    rerun skips the scenes already done; exit code 8 if any scene failed.
    """
    from copgen_rt.scenelist import has_glob

    if scenes and manifest:
        raise ValueError("give scenes on the command line or --manifest, not both")
    choice, engines = _check_run_args(model, spec_json, weights, engine, backend, dtype, device)
    if ray_address is not None or manifest or len(scenes) > 1 or has_glob(scenes):
        sys.exit(_infer_many(scenes, manifest, ray_address, cpus_per_worker, split_tiles, model, spec_json,
                             weights, engine, backend, solver, others, seed, device, dtype, overwrite, quiet,
                             verbose, p))
    scene = scenes[0] if scenes else None
    spec = _infer_spec(model, spec_json, weights, engine)
    if all(isinstance(m.processing, specs.RGB8) for m in spec.modalities):
        return _infer_thumbnails(spec, scene, weights, engine, choice, engines, solver, others, seed,
                                 overwrite, quiet, p)
    batch = p["batch_size"] or _default_batch_size(spec, choice.device)
    job = _scene_job(spec, scene or default_scene(), p, batch, solver, others, seed, overwrite)
    result = _run_scene_job(job, spec, weights, engine, choice, engines, quiet, verbose)
    if not quiet and not result.already_complete:
        note = f", {result.skipped} without data" if result.skipped else ""
        note += f", {result.resumed} resumed" if result.resumed else ""
        click.echo(f"{result.tiles} tiles in {result.seconds:.1f} s{note}; wrote:", err=True)
    for path in result.outputs:
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
def fill_cmd(scene, mask, scl, scl_classes, nodata_only, feather, jumps, jump_length, model, spec_json,
             weights, engine, backend, solver, others, seed, device, dtype, overwrite, quiet, verbose, **p):
    """Fill the gaps of SCENE (clouds, shadows, nodata) from the other inputs (--cond) and the
    valid pixels around them; the valid pixels are kept bit for bit.

    Writes SCENE_filled_MODALITY.tif per modality of SCENE, SCENE_filled_MODALITY_generated.tif
    (1 = generated pixel), with --samples N a per-pixel standard deviation inside the gaps.
    """
    from copgen_rt.scenes.fill import FillOptions
    from copgen_rt.scenes.masks import parse_scl_classes

    if [bool(mask), bool(scl), nodata_only].count(True) != 1:
        raise ValueError("say what to fill: --mask MASK, --scl SCL or --nodata (one of them)")
    choice, engines = _check_run_args(model, spec_json, weights, engine, backend, dtype, device)
    spec = _infer_spec(model, spec_json, weights, engine)
    if all(isinstance(m.processing, specs.RGB8) for m in spec.modalities):
        raise ValueError(f"{spec.name} takes thumbnails: fill runs on COP-GEN scenes")
    fill = FillOptions(mask=Path(mask) if mask else None, scl=Path(scl) if scl else None,
                       scl_classes=parse_scl_classes(scl_classes), feather=feather, jumps=jumps,
                       jump_length=jump_length)
    batch = p["batch_size"] or _default_batch_size(spec, choice.device)
    job = _scene_job(spec, scene, p, batch, solver, others, seed, overwrite, fill)
    result = _run_scene_job(job, spec, weights, engine, choice, engines, quiet, verbose)
    if not quiet and not result.already_complete:
        generated = ", ".join(f"{n} {100 * k / _pixels(job, n):.2f}%"
                              for n, k in result.generated_pixels.items())
        note = f", {result.skipped} without data" if result.skipped else ""
        note += f", {result.resumed} resumed" if result.resumed else ""
        click.echo(f"{result.tiles} tiles in {result.seconds:.1f} s ({result.copied} copied, no gap{note}); "
                   f"generated pixels: {generated}; wrote:", err=True)
        if not any(result.generated_pixels.values()):
            click.echo("note: no pixel of the scene is a gap: the outputs are the input", err=True)
        elif all(k == _pixels(job, n) for n, k in result.generated_pixels.items()):
            click.echo("note: every pixel of the scene is a gap: generated from the other inputs alone",
                       err=True)
    for path in result.outputs:
        click.echo(str(path))


def _pixels(job: SceneJob, name: str) -> int:
    _, width, height = job.frame.grid(job.spec.modality(name).image_gsd)
    return width * height


def _infer_spec(model: str | None, spec_json: str | None, weights: str | None, engine: str | None
                ) -> specs.ModelSpec:
    """The spec an export was made with, else --model/--spec-json (demo without weights)."""
    if engine:
        from copgen_rt.export.manifest import Manifest

        return specs.from_dict(Manifest.load(Path(engine)).spec)
    return resolve_spec(model or ("copgen-demo" if weights is None else "copgen-base"), spec_json)


def _infer_many(scenes, manifest, ray_address, cpus_per_worker, split_tiles, model, spec_json, weights,
                engine, backend, solver, others, seed, device, dtype, overwrite, quiet, verbose, p) -> int:
    """Many scenes (copgen_rt.multiscene), in this process or on Ray; returns the exit code."""
    from copgen_rt import distributed, driver, multiscene, scenelist
    from copgen_rt.device import choose as choose_device
    from copgen_rt.files import check_writable

    if ray_address is not None:
        distributed.check_address(ray_address)  # before the scenes: `--ray scene.tif` took one as ADDRESS
    entries = scenelist.expand(scenes, manifest, p["conds"], p["out"])
    check_writable(Path(p["out"]))  # the run manifest's folder, before loading any weights; a scene
    # whose own folder cannot be written fails alone
    spec = _infer_spec(model, spec_json, weights, engine)
    if all(isinstance(m.processing, specs.RGB8) for m in spec.modalities):
        raise ValueError(f"{spec.name} takes thumbnails (--cond MODALITY=FILE): run one job at a time")
    if weights is None and engine is None and spec.name != "copgen-demo":
        raise ValueError(f"{spec.name} needs --weights (a directory or a hub id)")
    # one batch size for every worker (results depend on it); with --ray, as on this machine's CPU
    batch = p["batch_size"] or _default_batch_size(
        spec, "cpu" if ray_address else choose_device(device, dtype).device)
    make_job = lambda e: _scene_job(spec, str(e.scene), {**p, "conds": e.conds, "out": str(e.out)},  # noqa: E731
                                    batch, solver, others, seed, overwrite)
    source = driver.PipelineSource.create(spec, None if engine else weights or demo_weights(), engine,
                                              backend, device, dtype)
    summary = multiscene.run(entries, make_job, source, Path(p["out"]), ray_address, cpus_per_worker,
                             split_tiles, quiet, verbose)
    return EXIT_SCENES_FAILED if summary.failed else 0


def _load_pipeline(spec: specs.ModelSpec, weights: str | None, engine: str | None, choice, engines):
    from copgen_rt.pipeline import Pipeline

    if engine:
        pipeline = Pipeline.from_export(engine, device=choice.device)
    else:
        if weights is None and spec.name != "copgen-demo":
            raise ValueError(f"{spec.name} needs --weights (a directory or a hub id)")
        if engines.dtype == "int8":
            click.echo("copgen-rt: int8: a model's first int8 run calibrates and quantizes its denoiser "
                       "(minutes at copgen-base size); later runs load it from the cache", err=True)
        pipeline = Pipeline.from_pretrained(spec, weights or demo_weights(), device=choice.device,
                                            dtype=engines.dtype,
                                            backend={"denoiser": engines.denoiser, "vae": engines.vae})
    if pipeline.is_random:
        click.echo("copgen-rt: RANDOM WEIGHTS: outputs are synthetic, not predictions "
                   "(pass --weights for a real model)", err=True)
    return pipeline


def _infer_thumbnails(spec, scene, weights, engine, choice, engines, solver, others, seed, overwrite,
                      quiet, p):
    """Thumbnail families (COP-GEN-Beta): --cond MODALITY=FILE (image or raster), PNGs out."""
    from copgen_rt.files import check_writable
    from copgen_rt.scenes.thumbnail_job import run_thumbnails

    if scene is not None:
        raise ValueError(f"{spec.name} takes its inputs as --cond MODALITY=FILE, e.g. --cond s1_rtc=s1.png")
    conditions = {}
    for item in p["conds"]:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise ValueError(f"--cond {item!r}: expected MODALITY=FILE, e.g. s1_rtc=s1.png")
        spec.modality(name)
        conditions[name] = Path(path)
    generate = None
    if p["generate"] is not None:
        generate = [t.strip() for t in p["generate"].split(",") if t.strip()]
        if not generate:
            raise ValueError("--generate is empty: name modalities, or leave it out for all")
    check_writable(Path(p["out"]))  # before loading any weights
    pipeline = _load_pipeline(spec, weights, engine, choice, engines)
    written = run_thumbnails(pipeline, conditions, Path(p["out"]), generate, samples=p["samples"], seed=seed,
                             preset=p["preset"], solver=solver, steps=p["steps"], others=others,
                             overwrite=overwrite)
    if not quiet:
        click.echo(f"wrote {len(written)} files", err=True)
    for path in written:
        click.echo(str(path))


def _default_batch_size(spec: specs.ModelSpec, device: str) -> int:
    """Tiles per call from free memory: ~40 activations of (tokens x width) floats per sample."""
    import torch

    from copgen_rt.device import available_host_memory

    per_sample = 4 * spec.num_tokens * spec.denoiser.embed_dim * 40 + 4 * spec.denoiser.num_heads * \
        spec.num_tokens ** 2 * 2
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return max(1, min(64, int(free * 0.5 // per_sample)))
    free = available_host_memory() or 0
    return max(1, min(8, int(free * 0.25 // per_sample)))  # CPUs saturate at small batches


def describe_spec(spec: specs.ModelSpec) -> str:
    d = spec.denoiser
    lines = [f"{spec.name} ({spec.family}): embed {d.embed_dim}, depth {d.depth}, {d.num_heads} heads, "
             f"{spec.num_tokens} tokens",
             f"{'#':>2}  {'modality':<30} {'bands / classes':<28} {'GSD':>5} {'pixels':<12} "
             f"{'latent':<10} {'tokens':>6}"]
    for i, m in enumerate(spec.modalities):
        p = m.processing
        content = ",".join(m.bands) if m.bands else (
            f"{len(p.codes)} classes" if isinstance(p, specs.Classes) else p.units)
        gsd = f"{m.gsd:g}m" if m.gsd else "-"
        pix = "x".join(map(str, spec.pixel_shape(m.name)))
        lat = "x".join(map(str, m.latent_shape))
        lines.append(f"{i:>2}  {m.name:<30} {content:<28} {gsd:>5} {pix:<12} {lat:<10} {m.num_tokens:>6}")
    return "\n".join(lines)


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


def _parse_batch(text: str) -> tuple[int, int, int]:
    try:
        lo, opt, hi = (int(v) for v in text.split(":"))
    except ValueError:
        raise ValueError(f"--batch {text!r}: expected MIN:OPT:MAX, e.g. 1:8:32") from None
    if not 1 <= lo <= opt <= hi <= MAX_ENGINE_BATCH:
        raise ValueError(f"--batch {text}: need 1 <= MIN <= OPT <= MAX <= {MAX_ENGINE_BATCH}")
    return lo, opt, hi


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
    from copgen_rt.export.onnx import export_weights
    from copgen_rt.export.tensorrt import _require_tensorrt, build_engines, build_plan
    from copgen_rt.weights import resolve_weights

    batch_range = _parse_batch(batch)
    if fmt == "onnx" and precision != "fp32":
        raise ValueError("ONNX graphs are exported in fp32; use --format tensorrt for fp16/bf16 engines")
    if fmt == "tensorrt":
        _require_tensorrt()  # fail before the (long) export
    spec = resolve_spec(model or ("copgen-demo" if weights is None else "copgen-base"), spec_json)
    refuse_existing([Path(out) / "manifest.json"], overwrite)
    files = resolve_weights(spec, weights or demo_weights())
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

    build_engines(Path(folder), precision, list(_parse_batch(batch)) if batch else None,
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
