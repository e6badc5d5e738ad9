"""The options several commands share (`scene_options`, `run_options`, the model options) and
what they give: the model options as `ModelOptions`, the scene options as a job planner."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from copgen_rt import specs
from copgen_rt.backends.registry import ENGINES
from copgen_rt.options import ModelOptions
from copgen_rt.plan import DTYPES

if TYPE_CHECKING:
    from copgen_rt.scenes.fill import FillOptions
    from copgen_rt.scenes.job import SceneRequest

F = TypeVar("F", bound=Callable[..., Any])
MAX_ENGINE_BATCH = 4096  # the sampler's --batch-size limit: engines are never built larger


engine_option = click.option(
    "--engine", "--backend", "engine", type=click.Choice(["auto", *ENGINES]),
    help="engine of each component when running from --weights (default auto: on CPUs the fastest "
         "measured here, once per CPU kind; see `info`); --backend is its old name")
model_option = click.option("--model", "--spec", "model", default="copgen-base", show_default=True,
                            help=f"model spec: {', '.join(specs.names())}")
spec_json_option = click.option("--spec-json", type=click.Path(dir_okay=False),
                                help="a custom spec.json (fixture format) instead of --model")


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number")
    return value


# the model options of the commands that run a model (infer, fill, serve): which model, which files
run_model_option = click.option("--model", "--spec", "model", default=None,
                                help="model spec (default: copgen-demo without --weights, copgen-base with)")
weights_option = click.option("--weights",
                              help="weights directory or hub id (default: the bundled random demo model)")
export_option = click.option("--export", type=click.Path(file_okay=False),
                             help="an export folder of `copgen-rt export` (onnxruntime or TensorRT) instead "
                                  "of --weights")
device_option = click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
dtype_option = click.option("--dtype", type=click.Choice(DTYPES),
                            help="denoiser precision (default: what the device runs natively; see `info`); "
                                 "int8: opt-in W8A8 on CPUs with VNNI, calibrated once on the bundled chip")


def scene_options(fn: F) -> F:
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
        click.option("--tiling", type=click.Choice(["earth", "scene"]), default="earth", show_default=True,
                     help="earth: tiles anchored to the CRS (same pixels whatever the window; "
                          "docs/chains.md); scene: anchored to the scene's corner (fewer tiles on small "
                          "scenes)"),
        click.option("--samples", default=1, show_default=True, type=click.IntRange(1, 1000),
                     help="samples per tile; > 1 writes per-pixel mean and standard deviation"),
        click.option("--preset", type=click.Choice(["exact", "fast", "draft"]), show_default="exact",
                     help="exact = the reference sampler (50 steps); fast/draft = fewer steps "
                          "(docs/solvers.md); --solver/--steps override"),
        click.option("--steps", type=click.IntRange(1, 1000), help="network calls (default: preset's)"),
        click.option("--batch-size", type=click.IntRange(1, MAX_ENGINE_BATCH),
                     show_default="the fastest measured on this CPU kind within the memory limit, at most "
                                  "the scene's tiles; `info` says which",
                     help="tiles per sampler call"),
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


def run_options(fn: F) -> F:
    """Options shared by `infer` and `fill` (which model, engine, sampler and run policy)."""
    options = [
        run_model_option,
        spec_json_option,
        weights_option,
        export_option,
        engine_option,
        scene_options,
        click.option("--solver", type=click.Choice(["reference", "dpmpp-2m", "dpmpp-3m", "ddim"]),
                     help="default: the preset's (reference for exact)"),
        click.option("--others", default="reference", show_default=True,
                     type=click.Choice(["reference", "marginal"]),
                     help="modalities neither given nor generated: reference behaviour or pure noise"),
        click.option("--seed", default=0, show_default=True, type=int),
        device_option,
        dtype_option,
        click.option("--overwrite", is_flag=True, help="replace existing outputs"),
        click.option("--quiet", "-q", is_flag=True, help="no progress bar"),
        click.option("--verbose", "-v", is_flag=True, help="print the plan before running"),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def pop_model_options(p: dict) -> ModelOptions:
    """The model options of `run_options`, taken out of a command's keyword arguments."""
    return ModelOptions(**{f.name: p.pop(f.name) for f in dataclasses.fields(ModelOptions)})


def first_condition_as_scene(p: dict) -> str:
    """With no SCENE, the first --cond PRODUCT=PATH is the scene (its grid, bounds and tiles are the
    run's frame), the others stay conditions: what `--cond S1RTC=s1.tif --cond DEM=dem.tif` means."""
    from copgen_rt.scenes.job import cond_pair

    first, *rest = p["conds"]
    product, path = cond_pair(first, "PRODUCT=PATH, e.g. S1RTC=s1.tif")
    if p["product"] not in (None, product):
        raise ValueError(f"--modality {p['product']} and --cond {first}: without SCENE, the first --cond "
                         "is the scene and names its product")
    p["product"], p["conds"] = product, tuple(rest)
    return path


def scene_request(p: dict, solver: str | None, others: str, seed: int, overwrite: bool,
                  fill: FillOptions | None = None) -> SceneRequest:
    """A command's `scene_options` (and the sampler and run policy of `run_options`) as the typed
    request that makes each scene's job."""
    from copgen_rt.scenes.job import SceneOptions, SceneRequest

    options = SceneOptions(steps=p["steps"], solver=solver, preset=p["preset"], others=others, seed=seed,
                           quicklook=p["quicklook"], overlap_m=p["overlap"], tiling=p["tiling"],
                           samples=p["samples"],
                           overwrite=overwrite, grid=None if p["grid"] == "native" else float(p["grid"]),
                           fill=fill)
    return SceneRequest(options, product=p["product"], bands=p["bands"], generate=p["generate"],
                        date=p["date"], s1_units=p["s1_units"], lulc_values=p["lulc_values"],
                        s2_offset=p["s2_offset"])


def parse_batch_range(text: str) -> tuple[int, int, int]:
    """--batch MIN:OPT:MAX of `export` and `build-engines`."""
    try:
        lo, opt, hi = (int(v) for v in text.split(":"))
    except ValueError:
        raise ValueError(f"--batch {text!r}: expected MIN:OPT:MAX, e.g. 1:8:32") from None
    if not 1 <= lo <= opt <= hi <= MAX_ENGINE_BATCH:
        raise ValueError(f"--batch {text}: need 1 <= MIN <= OPT <= MAX <= {MAX_ENGINE_BATCH}")
    return lo, opt, hi
