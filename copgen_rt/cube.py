"""The cube front door: generate from xarray inputs (odc-stac/stackstac Datasets, rioxarray
DataArrays), numpy-backed now or dask-backed lazily, as an `xarray.Dataset` (docs/chains.md).

It runs the scene code itself, not a second pipeline: each input becomes a GeoTIFF that
`open_input` recognises as `infer` would (S1 dB or linear, S2 DN conventions, nodata), and
`run_scene` tiles, samples, blends and writes; the outputs are read back with their georeferencing
and tags. A dask result is computed block by block: each block runs the scene code on the
smallest window of the inputs that holds every Earth-anchored tile touching the block (cut on the
frame's 60 m lattice, so its tiles are the whole cube's), which gives the whole cube's pixels in
memory bounded by the block size. Needs the `cube` extra (xarray, dask, rioxarray).
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform_bounds

from copgen_rt.pipeline import Pipeline
from copgen_rt.scenes.encoding import encoding
from copgen_rt.scenes.inputs.open import open_input
from copgen_rt.scenes.inputs.scene_input import SceneError, canonical_band, product_of_bands
from copgen_rt.scenes.job import BASE_GSD, OutputSpec, SceneJob, SceneOptions
from copgen_rt.scenes.outputs import provenance_tags
from copgen_rt.scenes.reader import CoarseInputWarning, SceneFrame
from copgen_rt.scenes.run import run_scene
from copgen_rt.scenes.state import RUN_KEY_TAG
from copgen_rt.scenes.tiling import ALIGN_M, TilingPlan, plan_tiles
from copgen_rt.specs import COMMON_NAMES, PRODUCTS, ModelSpec
from copgen_rt.weights import RandomWeightsWarning

SPATIAL = ("y", "x")


class CubeError(ValueError):
    """Bad input to `generate`: one line saying what and how to fix it."""


@dataclass(frozen=True)
class _Input:
    product: str
    bands: tuple[str, ...]
    array: Any  # xarray.DataArray (band, y, x), numpy- or dask-backed
    crs: CRS
    transform: Affine  # of the (band, y, x) pixel grid
    nodata: float | None


def generate(inputs: Any, generate: Sequence[str] | None = None, *, pipeline: Pipeline | str | None = None,
             preset: str | None = None, steps: int | None = None, seed: int = 0, samples: int = 1,
             dtype: str | None = None, grid: float | None = None, time: Any = None, tiling: str = "earth",
             batch_size: int = 4, overlap_m: float = 360.0, s1_units: str = "auto", lulc_values: str = "auto",
             s2_offset: float | None = None, date: str | dt.date | None = None) -> Any:
    """Generate `generate` (modality or product names as the CLI takes them; None: everything not
    given) from `inputs`: an `xarray.Dataset` with a variable per band (as odc-stac or stackstac
    load Items) or a mapping {product: DataArray with a `band` coordinate of band names}, each
    with a projected CRS. `pipeline`: a loaded Pipeline, a weights directory or hub id (str:
    copgen-base, as `infer --weights`), or None for the bundled demo model (as `infer` without
    --weights); weights are loaded with `dtype`, once per process (per dask worker). Returns an
    `xarray.Dataset`: a variable per output (its bands as a coordinate) on its native grid or on
    `grid=10`, lazy when any input is dask-backed. `time` picks one time of the inputs, whose
    date conditions the model (`date` overrides it). Bad input raises `CubeError`."""
    import xarray as xr

    from copgen_rt import specs

    products = _products(inputs, time)
    spec = pipeline.spec if isinstance(pipeline, Pipeline) else specs.get(
        "copgen-demo" if pipeline is None else "copgen-base")
    source = _PipelineSource(str(pipeline) if isinstance(pipeline, Path) else pipeline, dtype)
    wanted = _modalities(spec, _wanted(generate))
    options = SceneOptions(generate=None, preset=preset, steps=steps, seed=seed, samples=samples,
                           grid=grid, tiling=tiling, batch_size=batch_size, overlap_m=overlap_m,
                           date=_date(inputs, time) if date is None else _parse_date(date))
    opening = dict(s1_units=s1_units, lulc_values=lulc_values, s2_offset=s2_offset)
    if any(p.array.chunks for p in products):
        return _lazy(products, spec, wanted, options, opening, source)
    with tempfile.TemporaryDirectory(prefix="copgen-cube-") as tmp:
        files = [(inp, np.asarray(inp.array.values), inp.transform) for inp in products]
        job = _job(spec, files, Path(tmp), wanted, options, opening)
        loaded = source.get()
        _run(job, loaded)
        variables = {}
        for o in job.outputs:
            with rasterio.open(o.path) as src:
                variables[_variable(o)] = _array(src.read(), src.transform, src.crs, o, options)
        return xr.Dataset(variables, attrs=_attrs(job, loaded))


# --- inputs -----------------------------------------------------------------------------------


def _products(inputs: Any, time: Any) -> list[_Input]:
    import xarray as xr

    if isinstance(inputs, xr.Dataset):
        by_kind: dict[str, dict[str, Any]] = {}
        for name, var in inputs.data_vars.items():
            band = _band_name(str(name))
            if band is None:
                continue  # not a band (e.g. a mask odc-stac loaded next to them)
            kind = next((p for p in ("S1RTC", "DEM", "LULC") if band in PRODUCTS[p]), "S2")
            by_kind.setdefault(kind, {})[band] = var
        if not by_kind:
            raise CubeError(f"no band of a known product among the variables {', '.join(map(str, inputs))}")
        found = []
        for arrays in by_kind.values():
            product = product_of_bands(list(arrays))
            if product is None:
                raise CubeError(f"bands {' '.join(arrays)} are of no one product")
            order = [b for b in PRODUCTS[product] if b in arrays]
            stacked = xr.concat([_one_time(arrays[b], time, b) for b in order], dim="band")
            found.append(_input(product, tuple(order), stacked.assign_coords(band=order), inputs))
        return found
    if isinstance(inputs, Mapping):
        found = []
        for key, array in inputs.items():
            if not isinstance(array, xr.DataArray):
                raise CubeError(f"{key}: expected an xarray.DataArray, got {type(array).__name__}")
            product = str(key).upper()
            if product not in PRODUCTS:
                raise CubeError(f"unknown product {key!r}; choose {', '.join(PRODUCTS)}")
            array = _one_time(array, time, product)
            if "band" not in array.dims:
                array = array.expand_dims(band=[PRODUCTS[product][0]])
            names = _band_names(array, product)
            unknown = [b for b in names if b not in PRODUCTS[product]]
            if unknown:
                raise CubeError(f"{product}: unknown band(s) {' '.join(unknown)}; name the `band` coordinate "
                                f"with {product} bands ({' '.join(PRODUCTS[product])})")
            found.append(_input(product, names, array, array))
        if not found:
            raise CubeError("no input: give at least one product")
        return found
    raise CubeError(f"inputs must be an xarray.Dataset or a mapping of product to DataArray, "
                    f"not {type(inputs).__name__}")


def _band_names(array: Any, product: str) -> tuple[str, ...]:
    """Band names from the `band` coordinate, else rioxarray's `long_name` (the file's band
    descriptions), else the product's bands in order when the count says so (as `infer` guesses)."""
    labels = [str(b) for b in array["band"].values]
    if all(_band_name(b) for b in labels):
        return tuple(_band_name(b) or b for b in labels)
    described = array.attrs.get("long_name")
    if isinstance(described, (list, tuple)) and all(_band_name(str(d)) for d in described):
        return tuple(_band_name(str(d)) or str(d) for d in described)
    if len(labels) == len(PRODUCTS[product]) and all(b.isdigit() for b in labels):
        return PRODUCTS[product]
    return tuple(labels)


def _band_name(name: str) -> str | None:
    return canonical_band(name) or COMMON_NAMES.get(name.lower())


def _one_time(array: Any, time: Any, what: str) -> Any:
    if "time" not in array.dims:
        return array
    if time is not None:
        return array.sel(time=time)
    if array.sizes["time"] != 1:
        raise CubeError(f"{what}: {array.sizes['time']} times; choose one with time=")
    return array.isel(time=0)


def _date(inputs: Any, time: Any) -> dt.date | None:
    """The acquisition date from the time coordinate of the cube (of a mapping: of its first
    array), as infer takes it from metadata."""
    holder: Any = next(iter(inputs.values()), None) if isinstance(inputs, Mapping) else inputs
    coord = holder.coords.get("time") if hasattr(holder, "coords") else None
    if coord is None:
        return None
    values = np.atleast_1d(coord.sel(time=time).values if time is not None else coord.values)
    return None if len(values) != 1 else dt.date.fromisoformat(str(values[0])[:10])


def _parse_date(date: str | dt.date) -> dt.date:
    if isinstance(date, dt.date):
        return date
    try:
        return dt.date.fromisoformat(date)
    except ValueError:
        raise CubeError(f"date {date!r}: expected YYYY-MM-DD") from None


def _input(product: str, bands: tuple[str, ...], array: Any, holder: Any) -> _Input:
    array = array.transpose("band", *SPATIAL) if set(SPATIAL) <= set(array.dims) else array
    if tuple(array.dims) != ("band", *SPATIAL):
        raise CubeError(f"{product}: dimensions {tuple(array.dims)}; expected band, y, x (and time)")
    crs = array.rio.crs or getattr(holder, "rio", None) and holder.rio.crs
    if crs is None:
        raise CubeError(f"{product}: no CRS (write one with .rio.write_crs, e.g. the UTM zone's EPSG code)")
    crs = CRS.from_user_input(crs)
    if not crs.is_projected:
        raise CubeError(f"{product}: CRS {crs.to_string()} is geographic; load it on a projected grid "
                        "(odc.stac.load(..., crs='EPSG:326NN', resolution=10))")
    if array.sizes["y"] == 0 or array.sizes["x"] == 0:
        raise CubeError(f"{product}: empty (0 pixels)")
    nodata = array.rio.nodata if array.rio.nodata is not None else array.attrs.get("nodata")
    return _Input(product, bands, array, crs, array.rio.transform(recalc=True), nodata)


def _wanted(names: Sequence[str] | None) -> tuple[str, ...] | None:
    if names is None:
        return None
    if isinstance(names, str):
        names = [names]
    return tuple(names)


# --- the scene code on files ------------------------------------------------------------------


def _write(inp: _Input, values: np.ndarray, transform: Affine, folder: Path) -> Path:
    """One input as the stacked GeoTIFF `infer` would read: band names, CRS, nodata (NaN for floats)."""
    path = folder / f"{inp.product}.tif"
    nodata = inp.nodata
    if nodata is None and np.issubdtype(values.dtype, np.floating):
        nodata = float("nan")
    with rasterio.open(path, "w", driver="GTiff", width=values.shape[2], height=values.shape[1],
                       count=values.shape[0], dtype=values.dtype, crs=inp.crs, transform=transform,
                       nodata=nodata) as dst:
        dst.write(values)
        for i, band in enumerate(inp.bands, 1):
            dst.set_band_description(i, band)
    return path


def _job(spec: ModelSpec, files: list[tuple[_Input, np.ndarray, Affine]], folder: Path,
         generate: tuple[str, ...] | None, options: SceneOptions, opening: dict[str, Any]) -> SceneJob:
    """A scene job over inputs written to `folder` (values and transform of each)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        scenes = [open_input(_write(inp, values, transform, folder), product=inp.product, bands=inp.bands,
                             **opening) for inp, values, transform in files]
        return SceneJob(spec, scenes, folder / "out", replace(options, generate=generate))
    except (SceneError, ValueError) as e:  # named by product, not by the temporary file
        raise CubeError(str(e).replace(f"{folder}/", "")) from None


def _modalities(spec: ModelSpec, wanted: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """Modality or product names, as the CLI's --generate takes them, as modality names."""
    if wanted is None:
        return None
    names: list[str] = []
    for token in wanted:
        matches = [m.name for m in spec.modalities if token in (m.name, m.product)]
        if not matches:
            raise CubeError(f"generate {token!r}: not a modality or product of {spec.name}")
        names += matches
    return tuple(names)


def _run(job: SceneJob, pipeline: Pipeline) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RandomWeightsWarning)  # flagged in the attrs
            run_scene(job, pipeline)
    except SceneError as e:
        raise CubeError(str(e)) from None


def _variable(o: OutputSpec) -> str:
    return o.modality.name if o.kind == "mean" else f"{o.modality.name}_{o.kind}"


def _array(values: Any, transform: Affine, crs: CRS, o: OutputSpec, options: SceneOptions) -> Any:
    """One output as a DataArray: its bands as a coordinate, on the grid `transform` gives, with
    units, CF scale/offset and nodata as the output file has them."""
    import xarray as xr

    gsd = abs(transform.a)
    suffix = "" if gsd == BASE_GSD else f"_{gsd:g}m"
    ydim, xdim, band = f"y{suffix}", f"x{suffix}", f"band_{_variable(o)}"
    enc = encoding(o.modality, o.kind, options.samples)
    height, width = values.shape[1:]
    xs = transform.c + (np.arange(width) + 0.5) * transform.a
    ys = transform.f + (np.arange(height) + 0.5) * transform.e
    da = xr.DataArray(values, dims=(band, ydim, xdim), coords={band: enc.names, ydim: ys, xdim: xs},
                      name=_variable(o))
    da.attrs["statistic"] = enc.statistic
    if len(set(enc.units)) == 1:
        da.attrs["units"] = enc.units[0]
    else:
        da.coords[f"units_{_variable(o)}"] = (band, enc.units)
    if enc.scales and enc.offsets:  # value = scale x stored + offset (CF, rioxarray mask_and_scale)
        da.attrs["scale_factor"], da.attrs["add_offset"] = enc.scales[0], enc.offsets[0]
    if enc.classes is not None:
        da.attrs["class_codes"] = list(enc.classes.codes)
        da.attrs["class_names"] = list(enc.classes.names)
    # a grid mapping per grid: variables on the 10, 20, 30 and 60 m grids share a Dataset
    mapping = f"spatial_ref{suffix}"
    da = da.rio.set_spatial_dims(x_dim=xdim, y_dim=ydim).rio.write_crs(crs, grid_mapping_name=mapping)
    da = da.rio.write_transform(transform, grid_mapping_name=mapping)
    return da.rio.write_nodata(enc.nodata, encoded=False)


def _attrs(job: SceneJob, pipeline: Pipeline) -> dict[str, str]:
    """Provenance of the run (model, weights, random-weights flag, sampler, seed, tiling)."""
    tags = provenance_tags(job, pipeline, "")
    return {k: v for k, v in tags.items() if k.startswith("COPGEN_") and k not in DROPPED_TAGS}


# tags that name the temporary files the cube writes, not the caller's inputs
DROPPED_TAGS = {RUN_KEY_TAG, "COPGEN_CONDITIONS", "COPGEN_S2_DN_OFFSET", "COPGEN_S2_DN_CONVENTION"}


# --- the pipeline, once per process -------------------------------------------------------------


@dataclass(frozen=True)
class _PipelineSource:
    """The caller's pipeline (travelling with the tasks), or weights (None: the demo model) that
    each process loads once."""

    pipeline: Pipeline | str | None
    dtype: str | None

    def get(self) -> Pipeline:
        if isinstance(self.pipeline, Pipeline):
            return self.pipeline
        return loaded_pipeline(self.pipeline, self.dtype)


@functools.cache
def loaded_pipeline(weights: str | None, dtype: str | None, engine: str | None = None) -> Pipeline:
    """The pipeline of `weights` (a weights directory or hub id, as `infer --weights`: copgen-base;
    None: the bundled demo model), loaded once per process."""
    kwargs: dict[str, Any] = {"dtype": dtype} if dtype else {}
    if engine:
        kwargs["engine"] = engine
    if weights is not None:
        return Pipeline.from_pretrained("copgen-base", weights, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RandomWeightsWarning)  # flagged in the attrs
        return Pipeline.demo(**kwargs)


# --- dask: block by block -----------------------------------------------------------------------


def _lazy(products: list[_Input], spec: ModelSpec, wanted: tuple[str, ...] | None, options: SceneOptions,
          opening: dict[str, Any], source: _PipelineSource) -> Any:
    import dask
    import dask.array as dsa
    import xarray as xr

    if options.tiling != "earth":
        raise CubeError("dask inputs need tiling='earth': blocks agree only on Earth-anchored tiles")
    first = products[0]
    frame = _frame(first)
    if abs(ALIGN_M / first.transform.a - round(ALIGN_M / first.transform.a)) > 1e-9:
        raise CubeError(f"{first.product}: dask blocks are cut on the 60 m lattice, which "
                        f"{first.transform.a:g} m pixels do not divide; resample to 10, 20, 30 or 60 m, "
                        "or load with numpy")
    plan = plan_tiles(frame, options.overlap_m, tiling="earth")
    opening = _pinned(products, opening)
    with tempfile.TemporaryDirectory(prefix="copgen-cube-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", CoarseInputWarning)  # which outputs: from a coarse copy
        template = _job(spec, [(inp, *_coarse(inp)) for inp in products], Path(tmp), wanted, options, opening)
    options = replace(options, generate=tuple(template.generate))
    attrs = _attrs(template, source.get())
    grids = {o: frame.grid(options.grid or o.modality.image_gsd) for o in template.outputs}
    row_edges, col_edges = _edges(first.array.chunks[1]), _edges(first.array.chunks[2])
    pixel = first.transform.a
    rows: dict[OutputSpec, list[Any]] = {o: [] for o in template.outputs}
    for r0, r1 in zip(row_edges, row_edges[1:], strict=False):
        row: dict[OutputSpec, list[Any]] = {o: [] for o in template.outputs}
        for c0, c1 in zip(col_edges, col_edges[1:], strict=False):
            box = (c0 * pixel, r0 * pixel, c1 * pixel, r1 * pixel)  # metres from the frame's corner
            window = _window(plan, frame, box)
            crops = [_crop(inp, frame, window, exact=inp is first) for inp in products]
            pieces = {o: _pixels(box, *grids[o]) for o in template.outputs}
            task = dask.delayed(_block, pure=True)(
                spec, [(inp, a, t) for inp, (a, t) in zip(products, crops, strict=True) if a is not None],
                window, pieces, options, opening, source)
            for o, ((y0, y1), (x0, x1)) in pieces.items():
                enc = encoding(o.modality, o.kind, options.samples)
                row[o].append(dsa.from_delayed(task[_variable(o)], (len(enc.names), y1 - y0, x1 - x0),
                                               np.dtype(enc.dtype)))
        for o, blocks in row.items():
            rows[o].append(dsa.concatenate(blocks, axis=2))
    variables = {_variable(o): _array(dsa.concatenate(rows[o], axis=1), grids[o][0], first.crs, o, options)
                 for o in template.outputs}
    return xr.Dataset(variables, attrs=attrs)


Box = tuple[float, float, float, float]  # left, top, right, bottom: metres from the frame's top-left corner


def _frame(inp: _Input) -> SceneFrame:
    t = inp.transform
    if t.b or t.d or t.a <= 0 or t.e >= 0:
        raise CubeError(f"{inp.product}: not a north-up grid (transform {tuple(t)[:6]})")
    return SceneFrame(inp.crs, t.c, t.f, t.a * inp.array.sizes["x"], -t.e * inp.array.sizes["y"])


def _edges(chunks: tuple[int, ...]) -> list[int]:
    return [0, *np.cumsum(chunks).tolist()]


def _snap(box: Box, frame: SceneFrame) -> Box:
    """`box` grown to the frame's 60 m lattice (so that every native grid's pixels are whole), within it."""
    left, top, right, bottom = box
    down = lambda m: math.floor(m / ALIGN_M + 1e-9) * ALIGN_M  # noqa: E731
    up = lambda m: math.ceil(m / ALIGN_M - 1e-9) * ALIGN_M  # noqa: E731
    return (max(0.0, down(left)), max(0.0, down(top)),
            min(frame.width_m, up(right)), min(frame.height_m, up(bottom)))


def _window(plan: TilingPlan, frame: SceneFrame, box: Box) -> Box:
    """The part of the frame that every tile covering a pixel of the block (at any grid) lies in."""
    left, top, right, bottom = _snap(box, frame)
    f = plan.footprint_m
    touching = [t for t in plan.tiles
                if t.x_m < right and t.x_m + f > left and t.y_m < bottom and t.y_m + f > top]
    return _snap((min(t.x_m for t in touching), min(t.y_m for t in touching),
                  max(t.x_m + f for t in touching), max(t.y_m + f for t in touching)), frame)


def _pixels(box: Box, transform: Affine, width: int, height: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Rows and columns of a grid that a block owns: blocks share no pixel and leave none out."""
    gsd = transform.a
    edge = lambda m, n: min(n, math.ceil(m / gsd - 1e-6))  # noqa: E731
    left, top, right, bottom = box
    return (edge(top, height), edge(bottom, height)), (edge(left, width), edge(right, width))


def _crop(inp: _Input, frame: SceneFrame, window: Box, exact: bool) -> tuple[Any, Affine]:
    """The (lazy) pixels of an input that a window needs: exactly the window for the input that
    makes the frame, else its bounds plus a margin for resampling; None where it has none."""
    left, top, right, bottom = window
    bounds = (frame.left + left, frame.top - bottom, frame.left + right, frame.top - top)
    if inp.crs != frame.crs:
        bounds = transform_bounds(frame.crs, inp.crs, *bounds, densify_pts=21)
    inverse = ~inp.transform
    c0, r0 = inverse @ (bounds[0], bounds[3])
    c1, r1 = inverse @ (bounds[2], bounds[1])
    margin = 0 if exact else 2
    h, w = inp.array.sizes["y"], inp.array.sizes["x"]
    r0, c0 = max(0, math.floor(r0 + 1e-6) - margin), max(0, math.floor(c0 + 1e-6) - margin)
    r1, c1 = min(h, math.ceil(r1 - 1e-6) + margin), min(w, math.ceil(c1 - 1e-6) + margin)
    if r1 <= r0 or c1 <= c0:
        return None, inp.transform
    return inp.array.data[:, r0:r1, c0:c1], inp.transform @ Affine.translation(c0, r0)


def _block(spec: ModelSpec, crops: list[tuple[_Input, np.ndarray, Affine]], window: Box,
           pieces: dict[OutputSpec, tuple[tuple[int, int], tuple[int, int]]], options: SceneOptions,
           opening: dict[str, Any], source: _PipelineSource) -> dict[str, np.ndarray]:
    """One block of every output: the scene code over the block's window, cut to the block."""
    left, top, _, _ = window
    out: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="copgen-cube-") as tmp:
        job = None
        if any(_has_data(inp, values) for inp, values, _ in crops):
            files = [(inp, np.asarray(v), t) for inp, v, t in crops]
            job = _job(spec, files, Path(tmp), options.generate, options, opening)
            _run(job, source.get())
        for o, ((y0, y1), (x0, x1)) in pieces.items():
            enc = encoding(o.modality, o.kind, options.samples)
            if job is None:  # no input has data here: no data, as the whole scene has it
                out[_variable(o)] = np.full((len(enc.names), y1 - y0, x1 - x0), enc.nodata, enc.dtype)
                continue
            path = next(p.path for p in job.outputs if (p.modality, p.kind) == (o.modality, o.kind))
            gsd = options.grid or o.modality.image_gsd
            dy, dx = round(top / gsd), round(left / gsd)
            with rasterio.open(path) as src:
                out[_variable(o)] = src.read(window=((y0 - dy, y1 - dy), (x0 - dx, x1 - dx)))
    return out


def _has_data(inp: _Input, values: np.ndarray) -> bool:
    """Any pixel with every band valid (what the scene code calls input data)."""
    values = np.asarray(values)
    valid = np.ones(values.shape[1:], bool)
    for band in values:
        ok = np.isfinite(band) if np.issubdtype(band.dtype, np.floating) else np.ones(band.shape, bool)
        if inp.nodata is not None and not math.isnan(inp.nodata):
            ok &= band != inp.nodata
        valid &= ok
    return bool(valid.any())


def _coarse(inp: _Input) -> tuple[np.ndarray, Affine]:
    """A 2 x 2 pixel copy of an input over its whole extent: enough to plan the job's outputs."""
    values = np.asarray(inp.array[:, :2, :2].values)
    t, (h, w) = inp.transform, values.shape[1:]
    scale = Affine.scale(inp.array.sizes["x"] / w, inp.array.sizes["y"] / h)
    return values, t @ scale


def _pinned(products: list[_Input], opening: dict[str, Any]) -> dict[str, Any]:
    """S1 and class units recognised once, on the first and last chunk of each input (what `infer`
    samples of a file), so that every block reads the same units."""
    pinned = dict(opening)
    with tempfile.TemporaryDirectory(prefix="copgen-cube-") as tmp:
        for inp in products:
            if inp.product not in ("S1RTC", "LULC", "CLOUD"):
                continue
            a = inp.array
            rows, cols = a.chunks[1], a.chunks[2]
            head = np.asarray(a[:, : rows[0], : cols[0]].values)
            tail = np.asarray(a[:, -rows[-1]:, -cols[-1]:].values)
            width = max(head.shape[2], tail.shape[2])
            both = [np.pad(v, ((0, 0), (0, 0), (0, width - v.shape[2])), mode="edge") for v in (head, tail)]
            path = _write(inp, np.concatenate(both, axis=1), inp.transform, Path(tmp))
            scene = open_input(path, product=inp.product, bands=inp.bands, **opening)
            pinned["s1_units" if inp.product == "S1RTC" else "lulc_values"] = scene.units
    return pinned
