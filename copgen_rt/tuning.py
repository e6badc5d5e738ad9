"""Which CPU engine runs a model's denoiser fastest on this machine kind, and at which batch.

Measured once per (CPU kind, threads, model shape, precision, engine versions) and cached under
`<cache>/tuning/`, as compiled engines are. The measurement runs a short copy of the model (one
in-block, the mid-block and one out-block at the model's width, heads and sequence length, with
random weights) on each candidate engine of `EngineChoice.candidates`, interleaved, medians of
several calls: every block of the U-ViT costs the same, so the engines' ratio is the full model's
at a fraction of the build time. The fastest engine then runs the short model at 1, 2, 4 and 8
tiles per call; the scene runner's default batch is the fastest per tile within its memory check.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from copgen_rt import __version__
from copgen_rt.backends import DenoiserBackend, scratch_denoiser
from copgen_rt.backends.export_cache import cache_root
from copgen_rt.device import cpu_kind, memory_batch_limit
from copgen_rt.errors import CopgenError, first_line
from copgen_rt.files import out_of_space, write_error, write_new, write_text
from copgen_rt.models import Denoiser
from copgen_rt.phases import phase
from copgen_rt.reading import read_json
from copgen_rt.specs import ModelSpec

ENGINE_BATCH = 2  # the engines are compared at this many tiles per call
BATCHES = (1, 2, 4, 8)
REPEATS = 5  # timed calls per engine and batch, after one warm-up call (which compiles)
# an engine earlier in the order of preference is kept unless another is this much faster, so that
# run-to-run noise does not flip the choice between engines that are equally fast; the same for a
# smaller batch against a larger one (less memory, less padding on a scene's last batch)
MARGIN = 0.05
# torch.compile compiles again in every new process (5 s for the demo model with a warm inductor
# cache, measured; OpenVINO loads its compiled blob in a fraction of that), so it replaces another
# engine only where it is this much faster per call
COMPILED_MARGIN = 0.15
# it ran at most 1.32x faster than eager torch in our measurements (copgen-mid, bf16), so its
# compile (10 s to a minute) is paid only where that gain could take it COMPILED_MARGIN below the
# other engines
COMPILED_MAX_GAIN = 1.35
COMPILED, EAGER = "torch-compile", "torch"
# in the cache key: a measurement made under an older rule, or of an engine that has become faster
# since, is made again (3: the torch engine's linear layers fused with bias and GELU in bf16)
CHOICE_RULE = 3


@dataclass(frozen=True)
class Tuning:
    """What this machine kind measured for one model shape and precision."""

    engine: str
    seconds: dict[str, float]  # per engine: median seconds per call of the short model, ENGINE_BATCH tiles
    per_tile: dict[int, float]  # the chosen engine's median seconds per tile, by tiles per call
    failed: dict[str, str]  # engines that could not run here, and why
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)  # not worth building, and why

    def batch(self, limit: int) -> int:
        """The fastest measured tiles per call up to `limit` (the memory check's)."""
        allowed = {b: s for b, s in self.per_tile.items() if b <= limit}
        if not allowed:
            return max(1, limit)
        best = min(allowed.values())
        return min(b for b, s in allowed.items() if s <= best * (1 + MARGIN))

    def describe(self) -> str:
        ranked = sorted(self.seconds.items(), key=lambda item: item[1])
        timed = ", ".join(f"{e} {s * 1000:.0f} ms" for e, s in ranked)
        fastest = ranked[0][0]
        if fastest != self.engine:
            margin = COMPILED_MARGIN if fastest == COMPILED else MARGIN
            timed += f"; {self.engine} kept: {fastest} is less than {margin:.0%} faster"
            if fastest == COMPILED:
                timed += " and compiles again in every process"
        failed = "".join(f"; {e} could not run: {why}" for e, why in self.failed.items())
        failed += "".join(f"; {e} not measured: {why}" for e, why in self.skipped.items())
        return f"auto: the fastest measured on this CPU kind ({timed} per short-model call){failed}"

    def to_json(self) -> dict:
        return {"engine": self.engine, "seconds": self.seconds,
                "per_tile": {str(b): s for b, s in self.per_tile.items()}, "failed": self.failed,
                "skipped": self.skipped}

    @classmethod
    def from_json(cls, data: dict) -> Tuning:
        return cls(data["engine"], data["seconds"], {int(b): s for b, s in data["per_tile"].items()},
                   data["failed"], data.get("skipped", {}))


def short_spec(spec: ModelSpec) -> ModelSpec:
    """The model with one in-block, the mid-block and one out-block: same width, heads, tokens."""
    return spec.replace(denoiser=dataclasses.replace(spec.denoiser, depth=2))


def tuning_key(spec: ModelSpec, dtype: str, candidates: tuple[str, ...]) -> str:
    from copgen_rt.backends.openvino_backend import threads

    versions = [__version__, str(torch.__version__)]  # a new release's engines are measured again
    if "openvino" in candidates:
        from copgen_rt.backends.openvino_backend import version

        versions.append(version())
    shape = [dataclasses.asdict(spec.denoiser), [(m.latent_shape, m.patch_size) for m in spec.modalities]]
    data = json.dumps([cpu_kind(), threads(), versions, shape, dtype, candidates, CHOICE_RULE],
                      sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:24]


def _cache_file(spec: ModelSpec, dtype: str, candidates: tuple[str, ...]) -> Path:
    return cache_root() / "tuning" / f"{tuning_key(spec, dtype, candidates)}.json"


def cached(spec: ModelSpec, dtype: str, candidates: tuple[str, ...]) -> Tuning | None:
    path = _cache_file(spec, dtype, candidates)
    try:
        return Tuning.from_json(read_json(path))
    except (CopgenError, ValueError, KeyError, TypeError):  # not measured yet, or a foreign file
        return None


def random_inputs(spec: ModelSpec, batch: int, device: str = "cpu") -> tuple[list[Tensor], list[Tensor]]:
    """Latents and timesteps of `batch` tiles for every modality, the same on every run (what
    engine timings feed)."""
    g = torch.Generator().manual_seed(1)
    latents = [torch.randn(batch, *m.latent_shape, generator=g).to(device) for m in spec.modalities]
    times = [(torch.rand(batch, generator=g) * 1000).to(device) for _ in spec.modalities]
    return latents, times


def _seconds(backend: DenoiserBackend, inputs: tuple[list[Tensor], list[Tensor]]) -> float:
    start = time.perf_counter()
    backend(*inputs)
    return time.perf_counter() - start


def measure(spec: ModelSpec, dtype: str, candidates: tuple[str, ...]) -> Tuning:
    """Time every candidate engine on the short model, then the fastest at each batch."""
    short = short_spec(spec)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Denoiser(short).eval()
    inputs = random_inputs(short, ENGINE_BATCH)
    engines: dict[str, DenoiserBackend] = {}
    failed: dict[str, str] = {}
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="copgen-tuning-") as scratch:
        def build(engine: str) -> None:
            try:
                folder = Path(scratch) / engine
                folder.mkdir()
                with phase(f"measuring: building {engine} on a short model"):
                    engines[engine] = scratch_denoiser(engine, short, model, dtype, folder)
                    _seconds(engines[engine], inputs)  # the warm-up call compiles
            except Exception as e:  # e.g. inductor without a C++ compiler: measured as unable to run
                if out_of_space(e):  # not the engine's failure: it would be cached as one
                    raise write_error(Path(scratch), e) from None
                failed[engine] = first_line(e)
                engines.pop(engine, None)

        compiled_later = COMPILED in candidates and EAGER in candidates
        for engine in candidates:
            if not (compiled_later and engine == COMPILED):
                build(engine)
        seconds = _interleaved(engines, inputs)
        if compiled_later:
            best = min(seconds.values(), default=math.inf)
            if EAGER in seconds and seconds[EAGER] > best * COMPILED_MAX_GAIN / (1 + COMPILED_MARGIN):
                skipped[COMPILED] = (f"eager torch takes {seconds[EAGER] / best:.2f}x the fastest engine's "
                                     f"time: torch.compile (at most {COMPILED_MAX_GAIN}x faster than eager) "
                                     f"would not be {COMPILED_MARGIN:.0%} faster than it")
            else:
                build(COMPILED)
                seconds = _interleaved(engines, inputs)
        if not engines:
            raise RuntimeError(f"no CPU engine runs {spec.name} here: "
                               + "; ".join(f"{e}: {why}" for e, why in failed.items()))
        chosen = _fastest(candidates, seconds)
        per_tile = _per_tile(engines[chosen], short, list(BATCHES))
    return Tuning(chosen, seconds, per_tile, failed, skipped)


def _fastest(candidates: tuple[str, ...], seconds: dict[str, float]) -> str:
    """The first engine in the order of preference within MARGIN of the fastest; torch-compile
    only where it is COMPILED_MARGIN faster than every other engine."""
    others = {e: s for e, s in seconds.items() if e != COMPILED}
    if COMPILED in seconds and (not others
                                or seconds[COMPILED] * (1 + COMPILED_MARGIN) <= min(others.values())):
        return COMPILED
    best = min(others.values())
    return next(e for e in candidates if e in others and others[e] <= best * (1 + MARGIN))


def _interleaved(engines: dict[str, DenoiserBackend], inputs: tuple[list[Tensor], list[Tensor]]
                 ) -> dict[str, float]:
    """Median seconds per call of each engine, one call each per round: a noisy neighbour slows
    every engine alike."""
    times: dict[str, list[float]] = {e: [] for e in engines}
    for _ in range(REPEATS):
        for engine, backend in engines.items():
            times[engine].append(_seconds(backend, inputs))
    return {e: statistics.median(t) for e, t in times.items()}


def _per_tile(backend: DenoiserBackend, spec: ModelSpec, batches: list[int]) -> dict[int, float]:
    feeds = {b: random_inputs(spec, b) for b in batches}
    for b in batches:
        _seconds(backend, feeds[b])  # engines compiled per batch size compile here
    times: dict[int, list[float]] = {b: [] for b in batches}
    for _ in range(REPEATS):
        for b in batches:
            times[b].append(_seconds(backend, feeds[b]))
    return {b: statistics.median(t) / b for b, t in times.items()}


def tuned(spec: ModelSpec, dtype: str, candidates: tuple[str, ...]) -> Tuning:
    """The measurement for this machine kind, model shape and precision: cached, else made now."""
    found = cached(spec, dtype, candidates)
    if found is not None:
        return found
    with phase(f"measuring the CPU engines {', '.join(candidates)} for {spec.name} {dtype} on this CPU "
               "kind (once; cached)"):
        tuning = measure(spec, dtype, candidates)
    path = _cache_file(spec, dtype, candidates)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(tuning.to_json(), indent=1)
    if write_new(path, text.encode()):
        return tuning
    # another process measured at the same time and recorded first: its choice is the machine's,
    # so that every process here runs the same engine (outputs equal bit for bit, not just close)
    recorded = cached(spec, dtype, candidates)
    if recorded is not None:
        return recorded
    write_text(path, text)  # what was there is not a measurement: replaced
    return tuning


def default_batch_size(spec: ModelSpec, device: str, precision: str, engine: str,
                       tuning: Tuning | None = None) -> int:
    """Tiles per sampler call: the fastest per tile this CPU kind measured, within the memory
    limit of `engine` at `precision`; the memory limit where nothing was measured (GPUs, engines
    named explicitly)."""
    limit = memory_batch_limit(spec, device, precision, engine)
    return tuning.batch(limit) if tuning is not None else limit
