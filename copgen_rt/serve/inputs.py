"""Process inputs -> a scene job, as the command line would plan it from the same words.

Inputs carry the names of `infer`'s and `fill`'s arguments and options. A raster is
`{"href": PATH}` (a path or `file://` URI inside one of the server's --allow-root folders: a
raster, a SAFE folder or .zip, a per-band folder, a STAC Item, or an A.tif,B.tif list) or a small
GeoTIFF inline (`{"value": BASE64, "mediaType": "image/tiff; application=geotiff"}`).

Every path is resolved (links followed) before anything opens it and must stay inside an
--allow-root: `..` is refused outright, a link leading out is refused, and so is anything that
is not a plain file or folder (a device or a FIFO would block or feed the reader forever). A
folder's entries and a STAC Item's asset hrefs are checked the same way, and after opening,
every file the input reads.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from copgen_rt.files import atomic_write, own_folder, write_error
from copgen_rt.scenes.fill import FillOptions
from copgen_rt.scenes.job import SceneJob, SceneOptions, SceneRequest
from copgen_rt.scenes.masks import parse_scl_classes
from copgen_rt.solvers import MAX_STEPS, PRESETS, SOLVERS
from copgen_rt.specs import ModelSpec

TIFF_TYPES = ("image/tiff; application=geotiff", "image/tiff")
MAX_FOLDER_ENTRIES = 10_000  # a SAFE product has a few hundred
MAX_STAC_ITEM_BYTES = 16 << 20
MAX_SAMPLES = 64  # one job must not hold the shared batch for everyone


class InputRefused(ValueError):
    """An input path outside --allow-root, a device, a FIFO, an upload too large (HTTP 403/413)."""

    def __init__(self, message: str, status: int = 403):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class InputSpec:
    """One process input: its JSON schema (for the process description) and how it is read."""

    schema: dict[str, Any]
    description: str
    read: Callable[[str, Any], Any]
    required: bool = False


def _string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected a string, got {json.dumps(value)[:60]}")
    return value


def _names(name: str, value: Any) -> str:
    """A comma-separated string or a list of strings, as the option's comma-separated text."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    return _string(name, value)


def _integer(low: int, high: int | None = None) -> Callable[[str, Any], int]:
    def read(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high and value > high):
            bound = f"from {low} to {high}" if high else f">= {low}"
            raise ValueError(f"{name}: expected a whole number {bound}, got {json.dumps(value)[:60]}")
        return value

    return read


def _number(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value != value
        or abs(value) == float("inf")
    ):
        raise ValueError(f"{name}: expected a finite number, got {json.dumps(value)[:60]}")
    return float(value)


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected true or false, got {json.dumps(value)[:60]}")
    return value


def _choice(*choices: str) -> Callable[[str, Any], str]:
    def read(name: str, value: Any) -> str:
        if value not in choices:
            raise ValueError(f"{name}: expected one of {', '.join(choices)}, got {json.dumps(value)[:60]}")
        return value

    return read


def _raw(name: str, value: Any) -> Any:
    return value  # rasters: resolved by `RasterInputs`


RASTER_SCHEMA = {
    "oneOf": [
        {"type": "object", "required": ["href"], "properties": {"href": {"type": "string"}}},
        {
            "type": "object",
            "required": ["value", "mediaType"],
            "properties": {
                "value": {"type": "string", "contentEncoding": "base64"},
                "mediaType": {"type": "string", "enum": list(TIFF_TYPES)},
            },
        },
    ]
}

COMMON_INPUTS: dict[str, InputSpec] = {
    "scene": InputSpec(
        RASTER_SCHEMA,
        "the scene (SCENE): a path under the server's --allow-root, or an inline GeoTIFF",
        _raw,
        required=True,
    ),
    "cond": InputSpec(
        {"type": "object", "additionalProperties": RASTER_SCHEMA},
        'other inputs (--cond PRODUCT=PATH): {PRODUCT: raster}, e.g. {"S1RTC": {"href": ...}}',
        _raw,
    ),
    "product": InputSpec(
        {"type": "string"},
        "product of the scene (--modality): S2L2A, S2L1C, S1RTC, DEM, LULC, CLOUD",
        _string,
    ),
    "bands": InputSpec(
        {"type": ["string", "array"]}, "band names of the scene in file order (--bands)", _names
    ),
    "date": InputSpec({"type": "string", "format": "date"}, "acquisition date YYYY-MM-DD (--date)", _string),
    "preset": InputSpec(
        {"type": "string", "enum": list(PRESETS)}, "sampler preset (--preset)", _choice(*PRESETS)
    ),
    "solver": InputSpec({"type": "string", "enum": list(SOLVERS)}, "solver (--solver)", _choice(*SOLVERS)),
    "steps": InputSpec(
        {"type": "integer", "minimum": 1, "maximum": MAX_STEPS},
        "network calls (--steps)",
        _integer(1, MAX_STEPS),
    ),
    "seed": InputSpec({"type": "integer"}, "run seed (--seed)", _integer(-(2**63))),
    "samples": InputSpec(
        {"type": "integer", "minimum": 1, "maximum": MAX_SAMPLES},
        "samples per tile (--samples)",
        _integer(1, MAX_SAMPLES),
    ),
    "others": InputSpec(
        {"type": "string", "enum": ["reference", "marginal"]}, "--others", _choice("reference", "marginal")
    ),
    "overlap": InputSpec({"type": "number"}, "tile overlap in metres (--overlap)", _number),
    "grid": InputSpec({"type": "string", "enum": ["native", "10"]}, "--grid", _choice("native", "10")),
    "quicklook": InputSpec({"type": "boolean"}, "also write PNG pictures (--quicklook)", _boolean),
    "s1_units": InputSpec(
        {"type": "string", "enum": ["auto", "db", "linear"]}, "--s1-units", _choice("auto", "db", "linear")
    ),
    "lulc_values": InputSpec(
        {"type": "string", "enum": ["auto", "index", "code"]},
        "--lulc-values",
        _choice("auto", "index", "code"),
    ),
    "s2_offset": InputSpec({"type": "number"}, "added to S2 DNs (--s2-offset)", _number),
    "dtype": InputSpec(
        {"type": "string", "enum": ["fp32", "fp16", "bf16", "int8"]},
        "denoiser precision (--dtype): must be the server's, which loads one model",
        _string,
    ),
}
GENERATE_INPUTS = {
    **COMMON_INPUTS,
    "generate": InputSpec(
        {"type": ["string", "array"]},
        "modalities or products to generate (--generate; default: all not given)",
        _names,
    ),
}
FILL_INPUTS = {
    **COMMON_INPUTS,
    "mask": InputSpec(RASTER_SCHEMA, "gap mask raster (--mask): non-zero = gap", _raw),
    "scl": InputSpec(RASTER_SCHEMA, "SCL band (--scl): its scl_classes are gaps", _raw),
    "scl_classes": InputSpec({"type": "string"}, "--scl-classes, e.g. 0,3,8,9,10", _string),
    "nodata": InputSpec({"type": "boolean"}, "fill only the scene's own nodata (--nodata)", _boolean),
    "feather": InputSpec({"type": "integer", "minimum": 0, "maximum": 100}, "--feather", _integer(0, 100)),
    "jumps": InputSpec({"type": "integer", "minimum": 0, "maximum": 100}, "--jumps", _integer(0, 100)),
    "jump_length": InputSpec(
        {"type": "integer", "minimum": 1, "maximum": 1000}, "--jump-length", _integer(1, 1000)
    ),
}
PROCESS_INPUTS = {"generate": GENERATE_INPUTS, "fill": FILL_INPUTS}


def read_inputs(process: str, inputs: Any) -> dict[str, Any]:
    """Check every input's name and type; one line for the first problem."""
    if not isinstance(inputs, dict):
        raise ValueError("inputs: expected an object of input name to value")
    table = PROCESS_INPUTS[process]
    unknown = sorted(set(inputs) - set(table))
    if unknown:
        raise ValueError(f"unknown input {unknown[0]!r} of {process}; inputs: {', '.join(table)}")
    missing = [n for n, spec in table.items() if spec.required and n not in inputs]
    if missing:
        raise ValueError(f"{process} needs the input {missing[0]!r}")
    return {name: table[name].read(name, value) for name, value in inputs.items()}


def summary(inputs: dict[str, Any]) -> dict[str, Any]:
    """The inputs as the job store keeps them: inline rasters as their size, not their bytes."""

    def short(value: Any) -> Any:
        if isinstance(value, dict) and isinstance(value.get("value"), str):
            return {"mediaType": value.get("mediaType"), "inline_bytes": len(value["value"]) * 3 // 4}
        if isinstance(value, dict):
            return {k: short(v) for k, v in value.items()}
        return value

    return {k: short(v) for k, v in inputs.items()}


class RasterInputs:
    """Raster inputs as local paths: hrefs checked against the allowed roots, inline GeoTIFFs
    written into the job's private input folder."""

    def __init__(self, roots: Sequence[Path], max_inline_bytes: int):
        self.roots = [Path(os.path.realpath(r)) for r in roots]
        self.max_inline_bytes = max_inline_bytes

    def resolve(self, name: str, value: Any, folder: Path) -> str:
        """A raster input as the path text `open_input` takes."""
        if isinstance(value, dict) and "href" in value and "value" not in value:
            href = _string(f"{name}.href", value["href"])
            return ",".join(self.check_path(name, part) for part in href.split(","))
        if isinstance(value, dict) and "value" in value:
            return self._inline(name, value, folder)
        raise ValueError(
            f'{name}: expected {{"href": PATH}} or {{"value": BASE64, "mediaType": "{TIFF_TYPES[0]}"}}'
        )

    def check_path(self, name: str, href: str) -> str:
        """The real path of `href`, if it and everything it leads to stays inside a root."""
        parsed = urllib.parse.urlparse(href)
        if parsed.scheme == "file":
            if parsed.netloc not in ("", "localhost"):
                raise InputRefused(f"{name}: {href}: only local file:// hrefs are read")
            text = urllib.parse.unquote(parsed.path)
        elif parsed.scheme and len(parsed.scheme) > 1:  # a Windows drive letter is not a scheme
            raise InputRefused(
                f"{name}: {href}: only local paths and file:// hrefs are read, not {parsed.scheme}"
            )
        else:
            text = href
        if not text:
            raise ValueError(f"{name}: empty href")
        path = Path(text)
        if ".." in path.parts:
            raise InputRefused(f"{name}: {href}: '..' is not allowed in input paths")
        if not path.is_absolute():
            if not self.roots:
                raise InputRefused(f"{name}: {href}: the server reads no files (start it with --allow-root)")
            path = self.roots[0] / path
        real = self._inside(name, href, path)
        st = os.stat(real)
        if stat.S_ISDIR(st.st_mode):
            self._check_folder(name, href, real)
        elif real.suffix.lower() == ".json":
            self._check_stac_item(name, href, real)
        return str(real)

    def check_opened(self, job: SceneJob, uploads: Path) -> None:
        """After opening: every file the job's inputs read is inside a root or is one of its own
        uploads (belt and braces)."""
        for scene in job.inputs:
            for _, href, _ in scene.sources:
                # inside a zip checked as a whole, or an inline upload
                if not href.startswith("/vsi") and not Path(href).is_relative_to(uploads):
                    self._inside("input", href, Path(href))

    def _inside(self, name: str, href: str, path: Path) -> Path:
        if not self.roots:
            raise InputRefused(f"{name}: {href}: the server reads no files (start it with --allow-root)")
        real = Path(os.path.realpath(path))
        if not any(real == root or real.is_relative_to(root) for root in self.roots):
            raise InputRefused(f"{name}: {href}: outside the folders this server reads (--allow-root)")
        try:
            mode = os.stat(real).st_mode
        except FileNotFoundError:
            raise FileNotFoundError(f"{name}: {href}: no such file or folder") from None
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise InputRefused(f"{name}: {href}: not a plain file or folder (a device, FIFO or socket)")
        return real

    def _check_folder(self, name: str, href: str, folder: Path) -> None:
        seen = 0
        for parent, dirs, files in os.walk(folder):
            for entry in dirs + files:
                seen += 1
                if seen > MAX_FOLDER_ENTRIES:
                    raise InputRefused(f"{name}: {href}: more than {MAX_FOLDER_ENTRIES} entries")
                self._inside(name, f"{href} ({entry})", Path(parent) / entry)

    def _check_stac_item(self, name: str, href: str, path: Path) -> None:
        if os.stat(path).st_size > MAX_STAC_ITEM_BYTES:
            raise InputRefused(f"{name}: {href}: larger than a STAC Item ({MAX_STAC_ITEM_BYTES >> 20} MiB)")
        try:
            assets = json.loads(path.read_text()).get("assets", {})
            hrefs = [a["href"] for a in assets.values()]
        except (ValueError, AttributeError, KeyError, TypeError):
            return  # not a STAC Item: open_input says so in its own words
        for asset in hrefs:
            if not isinstance(asset, str) or "://" in asset and not asset.startswith("file://"):
                continue  # remote: open_input refuses what it cannot read
            local = (
                urllib.parse.unquote(urllib.parse.urlparse(asset).path)
                if asset.startswith("file://")
                else asset
            )
            target = Path(local) if Path(local).is_absolute() else path.parent / local
            self._inside(name, f"{href} (asset {asset})", target)

    def _inline(self, name: str, value: dict, folder: Path) -> str:
        media = value.get("mediaType")
        if media not in TIFF_TYPES:
            raise ValueError(
                f'{name}: inline rasters are GeoTIFFs (mediaType "{TIFF_TYPES[0]}"), '
                f"not {json.dumps(media)[:60]}"
            )
        text = _string(f"{name}.value", value["value"])
        if len(text) * 3 // 4 > self.max_inline_bytes:
            raise InputRefused(
                f"{name}: inline GeoTIFF larger than this server's limit of "
                f"{self.max_inline_bytes} bytes (--max-upload); pass an href",
                status=413,
            )
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{name}: inline value is not base64") from None
        own_folder(folder)
        path = folder / f"{name.replace('.', '-')}.tif"
        try:
            with atomic_write(path) as f:
                f.write(data)
        except OSError as e:
            raise write_error(path, e) from None
        return str(path)


def plan_job(
    spec: ModelSpec,
    process: str,
    inputs: Mapping[str, Any],
    rasters: RasterInputs,
    out: Path,
    batch_size: int,
    server_dtype: str | None,
) -> SceneJob:
    """The scene job `infer` or `fill` would plan from the same arguments and options."""
    uploads = out / ".inputs"
    if "dtype" in inputs and server_dtype is not None and inputs["dtype"] != server_dtype:
        raise ValueError(
            f"dtype {inputs['dtype']}: this server runs the denoiser in {server_dtype} (one "
            "loaded model); start a server with --dtype " + inputs["dtype"]
        )
    cond = inputs.get("cond", {})
    if not isinstance(cond, dict):
        raise ValueError('cond: expected an object of product to raster, e.g. {"S1RTC": {"href": ...}}')
    scene = rasters.resolve("scene", inputs["scene"], uploads)
    conds = [
        f"{product}={rasters.resolve(f'cond.{product}', value, uploads)}" for product, value in cond.items()
    ]
    fill = None
    if process == "fill":
        given = [n for n in ("mask", "scl") if n in inputs] + (["nodata"] if inputs.get("nodata") else [])
        if len(given) != 1:
            raise ValueError("say what to fill: mask, scl or nodata (one of them)")
        mask = Path(rasters.resolve("mask", inputs["mask"], uploads)) if "mask" in inputs else None
        scl = Path(rasters.resolve("scl", inputs["scl"], uploads)) if "scl" in inputs else None
        fill = FillOptions(
            mask=mask,
            scl=scl,
            feather=inputs.get("feather", 2),
            jumps=inputs.get("jumps", 0),
            jump_length=inputs.get("jump_length", 1),
            **({"scl_classes": parse_scl_classes(inputs["scl_classes"])} if "scl_classes" in inputs else {}),
        )
    grid = inputs.get("grid", "native")
    options = SceneOptions(steps=inputs.get("steps"), solver=inputs.get("solver"),
                           preset=inputs.get("preset"), others=inputs.get("others", "reference"),
                           seed=inputs.get("seed", 0),
                           quicklook=inputs.get("quicklook", False), overlap_m=inputs.get("overlap", 360.0),
                           samples=inputs.get("samples", 1), overwrite=False,
                           grid=None if grid == "native" else float(grid), fill=fill)
    request = SceneRequest(options, product=inputs.get("product"), bands=inputs.get("bands"),
                           generate=inputs.get("generate"), date=inputs.get("date"),
                           s1_units=inputs.get("s1_units", "auto"),
                           lulc_values=inputs.get("lulc_values", "auto"), s2_offset=inputs.get("s2_offset"))
    job = request.job(spec, scene, conds, out, batch_size)
    rasters.check_opened(job, uploads)
    return job
