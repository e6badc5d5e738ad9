"""A scene job: what is read, what is generated, how it is tiled and which files it writes.

`SceneJob` plans everything up front, so that `copgen-rt info scene.tif` and `copgen-rt infer`
share one description, and the scene's memory need is known before anything runs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from copgen_rt.device import available_host_memory
from copgen_rt.errors import SceneError
from copgen_rt.scenes.encoding import StoredType, blend_channels
from copgen_rt.scenes.fill import FillOptions, gap_masks, stored_type
from copgen_rt.scenes.inputs.open import open_input
from copgen_rt.scenes.inputs.scene_input import SceneInput
from copgen_rt.scenes.reader import COARSE_FACTOR, CoarseInputWarning, SceneFrame
from copgen_rt.scenes.tiling import TilingPlan, plan_tiles
from copgen_rt.solvers import resolve_preset
from copgen_rt.specs import PRODUCTS, Classes, Date, LatLon, Modality, ModelSpec

BASE_GSD = 10.0  # validity masks are kept on the finest grid
MEMORY_FRACTION = 0.5  # of the available memory, for the blenders (weights, GDAL and tiles need the rest)


@dataclass(frozen=True)
class SceneOptions:
    generate: tuple[str, ...] | None = None  # spec modality names; None = everything not given
    steps: int | None = None  # None: from the preset
    solver: str | None = None
    preset: str | None = None  # exact (default), fast, draft
    others: str = "reference"
    seed: int = 0
    overlap_m: float = 360.0
    batch_size: int = 4
    samples: int = 1
    date: dt.date | None = None
    overwrite: bool = False
    quicklook: bool = False  # also write PNG pictures of the outputs
    grid: float | None = None  # None: each output on its native grid; 10: all on the scene's 10 m grid
    fill: FillOptions | None = None  # gap filling: the modalities of the scene are filled, not generated
    tiling: str = "earth"  # tiles anchored to the CRS ("earth") or to the scene's corner ("scene")
    sampler: tuple[str, int] = field(init=False)  # (solver, steps): the preset resolved once

    def __post_init__(self) -> None:
        object.__setattr__(self, "sampler", resolve_preset(self.preset, self.solver, self.steps))


@dataclass(frozen=True)
class OutputSpec:
    modality: Modality
    kind: str  # "mean" (values), "std", "confidence", or "generated" (gap filling: which pixels)
    path: Path
    stored: StoredType | None = None  # gap filling: the input's integer type, kept by the mean


def scalar_names(spec: ModelSpec) -> tuple[str | None, str | None]:
    loc = next((m.name for m in spec.modalities if isinstance(m.processing, LatLon)), None)
    date = next((m.name for m in spec.modalities if isinstance(m.processing, Date)), None)
    return loc, date


@dataclass
class SceneJob:
    spec: ModelSpec
    inputs: list[SceneInput]
    out_dir: Path
    options: SceneOptions
    frame: SceneFrame = field(init=False)
    plan: TilingPlan = field(init=False)
    conditions: dict[str, SceneInput] = field(init=False)  # image modality -> the input it comes from
    scalar_conditions: list[str] = field(init=False)
    generate: list[str] = field(init=False)
    outputs: list[OutputSpec] = field(init=False)
    filled: list[str] = field(init=False)  # gap filling: the scene's modalities, known where valid
    gaps: dict[str, np.ndarray | None] = field(init=False)  # their masks on their native grids

    def __post_init__(self) -> None:
        if not self.inputs:
            raise SceneError("no input scene")
        self.frame = SceneFrame.of(self.inputs[0])
        if min(self.frame.width_m, self.frame.height_m) < BASE_GSD:
            raise SceneError(f"{self.inputs[0].path.name}: covers only {self.frame.width_m:.3g} x "
                             f"{self.frame.height_m:.3g} m, less than one {BASE_GSD:g} m output pixel; "
                             "check its pixel size (georeferencing)")
        self.plan = plan_tiles(self.frame, self.options.overlap_m, tiling=self.options.tiling)
        if self.options.batch_size > len(self.plan):  # a batch is never larger than the scene
            self.options = dataclasses.replace(self.options, batch_size=len(self.plan))
        self.conditions = {}
        first = self.inputs[0]
        for scene in self.inputs:
            if scene is not first and not self.frame.overlaps(scene):
                raise SceneError(f"{scene.path.name}: does not overlap {first.path.name} (the scene); give "
                                 "conditions that cover part of it")
            matched = [m for m in self.spec.modalities if m.is_image and m.product == scene.product
                       and all(b in scene.bands for b in (m.bands or scene.bands[:1]))]
            partial = [(m, b) for m in self.spec.modalities if scene.sources and m.product == scene.product
                       and m not in matched for b in m.bands if b not in scene.bands]
            if partial:
                m, band = partial[0]
                raise SceneError(f"{scene.path.name}: band {band} of {m.name} is missing ({scene.form}: "
                                 f"found {' '.join(scene.bands)})")
            if not matched:
                raise SceneError(f"{scene.path.name}: no modality of {self.spec.name} can be read from "
                                 f"{scene.product} bands {' '.join(scene.bands)}")
            _warn_if_coarse(scene, self.frame.pixel_size(scene), matched)
            for m in matched:
                if m.name in self.conditions:
                    raise SceneError(f"{m.name} is given twice ({self.conditions[m.name].path.name} and "
                                     f"{scene.path.name})")
                self.conditions[m.name] = scene
        _check_baselines(self.inputs)
        self.filled, self.gaps = [], {}
        if self.options.fill is not None:
            self._plan_fill(self.options.fill)
        loc, date_name = scalar_names(self.spec)
        wanted = set(self.options.generate or self.filled)
        for name in wanted:
            self.spec.modality(name)
            if name in self.conditions:
                raise SceneError(f"{name} is both given (from {self.conditions[name].path.name}) and "
                                 "asked for")
        self.scalar_conditions = []
        if loc and loc not in wanted:
            self.scalar_conditions.append(loc)
        if date_name and self.date is not None and date_name not in wanted:
            self.scalar_conditions.append(date_name)
        if wanted:
            self.generate = self.spec.canonical(wanted)
        else:
            given = set(self.conditions) | set(self.scalar_conditions)
            self.generate = [n for n in self.spec.names if n not in given]
        if not self.generate:
            raise SceneError("nothing to generate: every modality is given")
        stem = self.stem
        self.outputs = []
        for name in self.generate:
            m = self.spec.modality(name)
            if not m.is_image:
                continue
            label = m.file_label
            stored = stored_type(self.inputs[0], m, self.frame) if name in self.filled else None
            self.outputs.append(OutputSpec(m, "mean", self.out_dir / f"{stem}_{label}.tif", stored))
            if self.options.samples > 1:
                kind = "confidence" if isinstance(m.processing, Classes) else "std"
                self.outputs.append(OutputSpec(m, kind, self.out_dir / f"{stem}_{label}_{kind}.tif"))
            if self.filled:
                generated = self.out_dir / f"{stem}_{label}_generated.tif"
                self.outputs.append(OutputSpec(m, "generated", generated))

    def _plan_fill(self, fill: FillOptions) -> None:
        """The scene's modalities become the targets; its other inputs stay conditions."""
        scene = self.inputs[0]
        if self.options.generate:
            raise SceneError("fill fills the modalities of the scene: drop --generate")
        self.filled = [n for n, s in self.conditions.items() if s is scene]
        for name in self.filled:
            del self.conditions[name]
        solver = self.options.sampler[0]
        if fill.jumps and solver not in ("reference", "ddim"):
            raise SceneError(f"--jumps needs a singlestep solver (--solver reference or ddim), not {solver}")
        max_gsd = max(self.spec.modality(n).image_gsd for n in self.filled)
        if fill.feather * max_gsd > self.options.overlap_m / 2:
            raise SceneError(f"--feather {fill.feather}: the seam must lie within half the tile overlap "
                             f"({self.options.overlap_m:g} m) on the {max_gsd:g} m grid: at most "
                             f"{int(self.options.overlap_m / 2 // max_gsd)} px, or a larger --overlap")
        self.gaps = gap_masks(fill, self.frame, [self.spec.modality(n) for n in self.filled])
        masks = [g for g in self.gaps.values() if g is not None]
        if masks and all(g.all() for g in masks) and not self.conditions:
            raise SceneError(f"the mask covers all of {scene.path.name} and no other input is given "
                             "(--cond): nothing to fill from")

    @property
    def date(self) -> dt.date | None:
        return self.options.date or next((s.date for s in self.inputs if s.date), None)

    @property
    def stem(self) -> str:
        """Start of every file name of this job: the scene's, `_filled` for gap filling (so that a
        fill and an infer of one scene can share a folder)."""
        return self.inputs[0].path.stem + ("_filled" if self.options.fill else "")

    @property
    def sidecar(self) -> Path:
        return self.out_dir / f"{self.stem}_tiles.json"

    @property
    def stac_item(self) -> Path:
        return self.out_dir / f"{self.stem}_item.json"

    @property
    def work_dir(self) -> Path:
        return self.out_dir / f".copgen-work-{self.stem}"

    @property
    def staging_prefix(self) -> str:
        """Of this scene's temporary folders (`Staging`): those a killed worker left are found by it."""
        return f".copgen-tmp-{self.stem}."

    @property
    def lock_path(self) -> Path:
        """Held by the run writing this scene's outputs (`scene_lock`)."""
        return self.out_dir / f".copgen-lock-{self.stem}"

    @property
    def blend_bytes(self) -> int:
        """Peak memory of the output blenders: float64 sums and weights (`RowBlender`) over the rows
        one batch of tiles can span, for every output at once, plus one output's transient copy
        (and the gap masks of a fill)."""
        plan = self.plan
        span_m = plan.footprint_m + math.ceil(self.options.batch_size / plan.n_cols) * plan.stride_m
        sizes = []
        for out in self.outputs:
            _, width, height = self.frame.grid(out.modality.image_gsd)
            rows = min(height, math.ceil(span_m / out.modality.image_gsd))
            sizes.append((blend_channels(out.modality, out.kind) + 1) * rows * width * 8)
        masks = sum(g.size for g in self.gaps.values() if g is not None)  # gap masks are held whole
        return sum(sizes) + max(sizes, default=0) + masks

    def pixel_count(self, name: str) -> int:
        """Pixels of modality `name` on the scene's grid."""
        _, width, height = self.frame.grid(self.spec.modality(name).image_gsd)
        return width * height

    def check_memory(self) -> None:
        """Refuse a scene too wide for this machine's memory before running anything."""
        need, limit = self.blend_bytes, memory_limit()
        if limit is None or need <= limit:
            return
        first = self.inputs[0]
        strip = max(1, int(first.width * limit / need))
        raise SceneError(f"{first.path.name}: blending {len(self.outputs)} outputs over {first.width} px of "
                         f"width needs about {_gib(need)} of memory, more than the {_gib(limit)} allowed "
                         f"({MEMORY_FRACTION:g} of what is available); split the scene into strips at most "
                         f"{strip} px wide (gdal_translate -srcwin XOFF 0 {strip} {first.height} "
                         f"{first.path.name} part.tif) or generate fewer modalities (--generate)")

    def describe(self) -> str:
        lines = ["inputs:"] + [f"  {s.describe()}" for s in self.inputs]
        lines.append("conditions: " + ", ".join(list(self.conditions) + self.scalar_conditions))
        if self.date is None:
            lines.append("date: unknown (pass --date to condition on it); generated per tile")
        if self.options.fill:
            lines.append("fill: " + ", ".join(self.filled) + f" from {self.options.fill.describe()}")
        else:
            lines.append("generate: " + ", ".join(self.generate))
        lines.append("tiling: " + self.plan.describe())
        o = self.options
        solver, steps = o.sampler
        lines.append(f"work: {len(self.plan)} tiles x {o.samples} sample(s) x {steps} steps ({solver}) = "
                     f"{len(self.plan) * o.samples * steps} denoiser evaluations, batch {o.batch_size}")
        lines.append("outputs: " + ", ".join(p.path.name for p in self.outputs)
                     + f", {self.stac_item.name}, {self.sidecar.name}")
        limit = memory_limit()
        lines.append(f"memory: about {_gib(self.blend_bytes)} of blending buffers" + (
            f" (allowed: {_gib(limit)}, {MEMORY_FRACTION:g} of the available memory)" if limit else ""))
        return "\n".join(lines)


@dataclass(frozen=True)
class SceneRequest:
    """A scene job in the words of the command line (or of a request to the server): --modality
    and --bands of SCENE, --generate as modalities or products, --date YYYY-MM-DD and the units of
    the inputs; `options` holds the rest (its generate, date and batch size are set by `job`)."""

    options: SceneOptions = SceneOptions()
    product: str | None = None
    bands: str | None = None  # comma-separated, in file order
    generate: str | None = None  # comma-separated modalities or products
    date: str | None = None
    s1_units: str = "auto"
    lulc_values: str = "auto"
    s2_offset: float | None = None

    def job(self, spec: ModelSpec, scene: str, conds: Sequence[str], out: Path, batch_size: int) -> SceneJob:
        """The job of SCENE and --cond PRODUCT=PATH inputs, writing into `out`."""
        day = parse_date(self.date)
        common: dict[str, Any] = dict(s1_units=self.s1_units, lulc_values=self.lulc_values,
                                      s2_offset=self.s2_offset, date=day)
        band_names = tuple(b.strip() for b in self.bands.split(",")) if self.bands else None
        inputs = [open_input(scene, product=self.product, bands=band_names, **common)]
        for item in conds:
            name, path = cond_pair(item, "PRODUCT=PATH, e.g. S1RTC=s1.tif")
            inputs.append(open_input(path, product=name, **common))
        wanted = None
        if self.generate is not None:
            wanted = []
            for token in parse_generate(self.generate, "modalities or products"):
                matches = [m.name for m in spec.modalities if token in (m.name, m.product)]
                if not matches:
                    products = ", ".join(p for p in PRODUCTS if any(m.product == p for m in spec.modalities))
                    raise ValueError(f"--generate {token}: not a modality or product of {spec.name}; choose "
                                     f"products {products} or modalities {', '.join(spec.names)}")
                wanted += matches
        options = dataclasses.replace(self.options, generate=None if wanted is None else tuple(wanted),
                                      date=day, batch_size=batch_size)
        return SceneJob(spec, inputs, out, options)


def parse_date(text: str | None) -> dt.date | None:
    """--date YYYY-MM-DD; None when not given."""
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--date {text!r}: expected YYYY-MM-DD") from None


def cond_pair(item: str, expected: str) -> tuple[str, str]:
    """NAME and PATH of a --cond NAME=PATH; `expected` says its form in the error."""
    name, sep, path = item.partition("=")
    if not sep or not path:
        raise ValueError(f"--cond {item!r}: expected {expected}")
    return name, path


def parse_generate(text: str, what: str) -> list[str]:
    """The names of a comma-separated --generate; none at all is an error asking for `what`."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ValueError(f"--generate is empty: name {what}, or leave it out for all")
    return names


def _check_baselines(inputs: list[SceneInput]) -> None:
    """S2 inputs of one run come from one side of the baseline-04.00 offset change."""
    known = [(s, s.baseline) for s in inputs if s.product.startswith("S2") and s.baseline]
    sides = {_with_offset(b) for _, b in known}
    if len(sides) > 1:
        parts = ", ".join(f"{s.path.name} baseline {b}" for s, b in known)
        raise SceneError(f"mixed S2 processing baselines ({parts}): before and after 04.00 (the +1000 DN "
                         "offset); give products of one baseline side")


def _with_offset(baseline: str) -> bool:
    try:
        return float(baseline) >= 4.0
    except ValueError:
        raise SceneError(f"processing baseline {baseline!r} is not a number like 05.09") from None


def _warn_if_coarse(scene: SceneInput, pixel_m: float, modalities: list[Modality]) -> None:
    coarse = [m for m in modalities if pixel_m > COARSE_FACTOR * m.image_gsd]
    if coarse:
        native = "/".join(f"{g:g}" for g in sorted({m.image_gsd for m in coarse}))
        warnings.warn(f"{scene.path.name}: its {pixel_m:.4g} m pixels are more than {COARSE_FACTOR:g}x "
                      f"coarser than the native {native} m of "
                      f"{', '.join(m.name for m in coarse)}: upsampled, the model sees no real detail",
                      CoarseInputWarning, stacklevel=4)


def memory_limit() -> int | None:
    """Bytes the blenders may use: a fraction of the available memory, None where unknown."""
    available = available_host_memory()
    return int(available * MEMORY_FRACTION) if available is not None else None


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"
