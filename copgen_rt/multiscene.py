"""Many scenes in one command: which scenes (paths, globs, a manifest file), the run manifest
that lets a rerun skip finished scenes, progress, and the sequential runner.
`copgen_rt.distributed` runs the same plan on a Ray cluster.

Every scene runs through `copgen_rt.scenes.run` exactly as a single scene does. A scene is
complete when the run manifest (`copgen-run.json` in the output folder) records it as done with
the same settings (model, weight hashes, options, input files) and every output it lists
exists; complete scenes are skipped, whatever `--overwrite` says.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import fcntl
import glob
import hashlib
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from copgen_rt import __version__, specs
from copgen_rt.device import choose as choose_device
from copgen_rt.pipeline import Pipeline
from copgen_rt.scenes.run import (OutputExistsError, SceneJob, SceneResult, check_outputs, recorded_run_key,
                                  run_scene)
from copgen_rt.weights import CheckpointError, file_sha256, resolve_weights

RUN_MANIFEST = "copgen-run.json"
MANIFEST_COLUMNS = ("scene", "cond", "out")
SAVE_INTERVAL_S = 2.0  # the run manifest is rewritten at most this often (and at the end)


# --- which scenes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneEntry:
    """One scene to run: its main input, its other inputs (PRODUCT=PATH) and its output folder,
    every path absolute so that workers on other machines read and write the same files."""

    scene: Path
    conds: tuple[str, ...]
    out: Path

    @property
    def key(self) -> str:
        """Where its outputs go (out folder and stem): unique within a run."""
        return str(self.out / self.scene.stem)

    @property
    def name(self) -> str:
        relative = os.path.relpath(self.scene)
        return str(self.scene) if relative.startswith("..") else relative


def has_glob(args: Sequence[str]) -> bool:
    return any(c in arg for arg in args for c in "*?[")


def expand(scenes: Sequence[str], manifest: str | None, conds: Sequence[str], out: str) -> list[SceneEntry]:
    """Scene arguments (paths or globs, expanded here so that quoting works) and the lines of a
    manifest file; every scene gets `conds` and `out` unless its manifest row says otherwise."""
    cwd, default_out = Path.cwd(), _absolute(out, Path.cwd())
    default_conds = tuple(_absolute_cond(c, cwd, "--cond") for c in conds)
    entries = []
    for arg in scenes:
        entries += [SceneEntry(_absolute(p, cwd), default_conds, default_out) for p in _matches(arg)]
    if manifest:
        entries += read_manifest(Path(manifest), default_conds, default_out)
    if not entries:
        raise ValueError("no scene to run: give SCENE paths, a glob or --manifest")
    return _unique(entries)


def _matches(arg: str) -> list[str]:
    if not has_glob([arg]) or Path(arg).exists():
        return [arg]
    files = sorted(p for p in glob.glob(arg, recursive=True) if not os.path.isdir(p))
    if not files:
        raise ValueError(f"{arg}: no file matches")
    ours = [p for p in files if recorded_run_key(Path(p)) is not None]
    if ours:  # e.g. --out is the scene folder: a rerun must not take the outputs for new scenes
        warnings.warn(f"{arg}: {len(ours)} matching file(s) are copgen-rt outputs, not taken as scenes")
    scenes = [p for p in files if p not in ours]
    if not scenes:
        raise ValueError(f"{arg}: every matching file is a copgen-rt output")
    return scenes


def read_manifest(path: Path, conds: tuple[str, ...], out: Path) -> list[SceneEntry]:
    """One scene path per line, or CSV with the header scene,cond,out (cond: PRODUCT=PATH;...;
    an empty cond or out takes the command's). Relative paths are relative to the file's folder;
    blank lines and lines starting with # are ignored."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # spreadsheets save CSV with a byte-order mark
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--manifest {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    base = path.absolute().parent
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise ValueError(f"--manifest {path}: no scene listed")
    header = [h.strip().lower() for h in lines[0][1].split(",")]
    if header[0] != "scene":
        return [SceneEntry(_absolute(line, base), conds, out) for _, line in lines]
    if set(header) - set(MANIFEST_COLUMNS) or len(set(header)) != len(header):
        raise ValueError(f"{path} line {lines[0][0]}: header {lines[0][1]!r}: expected scene,cond,out")
    entries = []
    for (n, _), row in zip(lines[1:], csv.reader(line for _, line in lines[1:])):
        where = f"{path} line {n}"
        if len(row) > len(header):
            raise ValueError(f"{where}: {len(row)} fields, the header has {len(header)}")
        fields = dict(zip(header, (v.strip() for v in row)))
        if not fields.get("scene"):
            raise ValueError(f"{where}: no scene path")
        cond = fields.get("cond", "")
        row_conds = tuple(_absolute_cond(c.strip(), base, f"{where}: cond") for c in cond.split(";")
                          if c.strip()) if cond else conds
        row_out = _absolute(fields["out"], base) if fields.get("out") else out
        entries.append(SceneEntry(_absolute(fields["scene"], base), row_conds, row_out))
    return entries


def _absolute(path: str, base: Path) -> Path:
    return Path(os.path.abspath(base / Path(path).expanduser()))


def _absolute_cond(item: str, base: Path, what: str) -> str:
    product, sep, path = item.partition("=")
    if not sep or not path.strip() or not product.strip():
        raise ValueError(f"{what} {item!r}: expected PRODUCT=PATH, e.g. S1RTC=s1.tif")
    return f"{product.strip()}={_absolute(path.strip(), base)}"


def _unique(entries: list[SceneEntry]) -> list[SceneEntry]:
    """Drop repeats; refuse two scenes whose outputs would overwrite each other."""
    by_key: dict[str, SceneEntry] = {}
    for e in entries:
        other = by_key.setdefault(e.key, e)
        if other != e:
            raise ValueError(f"{other.name} and {e.name} would write the same outputs in {e.out}; "
                             "give them different output folders (--manifest with an out column)")
    return list(by_key.values())


# --- the pipeline every runner loads ------------------------------------------------------------


@dataclass(frozen=True)
class PipelineSource:
    """How to load the pipeline, picklable so that every Ray worker can load its own copy."""

    spec: dict  # specs.to_dict (ModelSpec itself does not pickle)
    weights: str | None  # a weights directory or hub id; None with an engine
    engine: str | None
    backend: str | None = None  # None: auto (copgen_rt.device.choose_engine, where it loads)
    device: str | None = None  # chosen where the pipeline is loaded
    dtype: str | None = None

    @classmethod
    def create(cls, spec: specs.ModelSpec, weights: str | None, engine: str | None, backend: str | None = None,
               device: str | None = None, dtype: str | None = None) -> "PipelineSource":
        local = lambda p: str(Path(p).absolute()) if p and Path(p).exists() else p  # noqa: E731
        return cls(specs.to_dict(spec), local(weights), local(engine), backend, device, dtype)

    def load(self) -> Pipeline:
        choice = choose_device(self.device, self.dtype)
        if self.engine:
            pipeline = Pipeline.from_export(self.engine, device=choice.device)
        else:
            pipeline = Pipeline.from_pretrained(specs.from_dict(self.spec), self.weights, device=choice.device,
                                                dtype=self.dtype or "auto", backend=self.backend or "auto")
        return pipeline

    def provenance(self, pipeline: Pipeline) -> dict:
        """Model and hashes of every weight file the pipeline may load (hashed once per run)."""
        if self.engine:
            files = dict(pipeline.provenance.files)
        else:
            found = resolve_weights(pipeline.spec, self.weights)
            files = {"denoiser": found.denoiser, **{f"vae/{k}": p for k, p in found.vaes.items()}}
        return {"model": pipeline.spec.name, "software": f"copgen-rt {__version__}",
                "weights": {k: file_sha256(Path(p))[:16] for k, p in sorted(files.items())},
                "random_weights": pipeline.is_random}


# --- the run manifest ---------------------------------------------------------------------------


class RunManifest:
    """`copgen-run.json`: per scene its status, outputs, provenance, settings and error."""

    def __init__(self, path: Path):
        self.path = path
        self.scenes = self._read()
        self._changed: set[str] = set()
        self._saved = 0.0

    def _read(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        try:
            return dict(json.loads(self.path.read_text())["scenes"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{self.path}: not a copgen-rt run manifest ({type(e).__name__}); "
                             "move it away") from None

    def complete(self, key: str, fingerprint: str) -> bool:
        record = self.scenes.get(key, {})
        return record.get("status") == "done" and record.get("fingerprint") == fingerprint and \
            all(Path(p).exists() for p in record.get("outputs", [None]))

    def record(self, key: str, record: dict) -> None:
        self.scenes[key] = record
        self._changed.add(key)
        if time.monotonic() - self._saved >= SAVE_INTERVAL_S:
            self.save()

    def save(self) -> None:
        """Merge this run's records into the file under a lock (another run may share the output
        folder), then replace it atomically: a temporary file and a rename."""
        if not self._changed:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f".{self.path.name}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            merged = {**self._read(), **{k: self.scenes[k] for k in self._changed}}
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"software": f"copgen-rt {__version__}", "scenes": merged}, indent=1) + "\n")
            tmp.replace(self.path)
        self.scenes, self._changed, self._saved = merged, set(), time.monotonic()


def fingerprint(job: SceneJob, provenance: dict) -> str:
    """Everything that decides a scene's outputs, the batch size aside (it only changes rounding,
    and its default depends on free memory)."""
    options = {k: v for k, v in dataclasses.asdict(job.options).items() if k not in ("overwrite", "batch_size")}
    inputs = [(str(s.path), s.path.stat().st_size, s.path.stat().st_mtime_ns, s.product, s.bands, s.units,
               s.dn_offset) for s in job.inputs]
    parts = {"model": provenance["model"], "weights": provenance["weights"], "options": options,
             "sampler": job.options.sampler, "generate": job.generate, "date": job.date, "inputs": inputs}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def one_line(e: BaseException) -> str:
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    first = text.strip().splitlines()[0] if text.strip() else ""
    if first and isinstance(e, (ValueError, KeyError, OSError, OutputExistsError, CheckpointError)):
        return first
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


# --- progress -----------------------------------------------------------------------------------


@dataclass
class Summary:
    total: int
    succeeded: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (scene, one-line reason)
    retried: int = 0  # tasks run again after their worker died


class Report:
    """Aggregated progress on stderr: a line per finished scene with scenes done/total, tiles/s
    and an ETA (tiles of scenes not planned yet are estimated from those planned)."""

    def __init__(self, total: int, quiet: bool):
        self.total, self.quiet = total, quiet
        self.finished = self.seen = self.planned_scenes = self.planned_tiles = self.done_tiles = 0
        self.start = self.work_start = time.monotonic()

    def begin(self) -> None:
        """Workers are ready: tiles/s counts from now."""
        self.work_start = time.monotonic()

    def planned(self, tiles: int) -> None:
        self.seen += 1
        self.planned_scenes += 1
        self.planned_tiles += tiles

    def unplanned(self, finished: bool) -> None:
        """A scene that needs no work: skipped (finished, no line) or failed (its line follows)."""
        self.seen += 1
        self.finished += finished

    def tiles(self, n: int) -> None:
        self.done_tiles += n

    def scene(self, name: str, text: str) -> None:
        self.finished += 1
        if not self.quiet:
            _err(f"[{self.finished}/{self.total}] {name}: {text} | {self._rate()}")

    def _rate(self) -> str:
        elapsed = time.monotonic() - self.work_start
        rate = self.done_tiles / elapsed if elapsed > 0 else 0.0
        mean = self.planned_tiles / self.planned_scenes if self.planned_scenes else 0.0
        left = max(0.0, self.planned_tiles - self.done_tiles + (self.total - self.seen) * mean)
        eta = _clock(left / rate) if rate > 0 else "?"
        return f"{rate:.1f} tiles/s, ETA {eta}"

    def summary(self, s: Summary) -> None:
        seconds = time.monotonic() - self.start
        parts = [f"{s.succeeded} succeeded", f"{s.skipped} skipped (already complete)", f"{len(s.failed)} failed"]
        retried = f"; {s.retried} task(s) retried after a worker died" if s.retried else ""
        _err(f"{s.total} scenes in {_clock(seconds)}: {', '.join(parts)}{retried}")
        for name, reason in s.failed:
            _err(f"failed: {name}: {reason}")


def _clock(seconds: float) -> str:
    return str(dt.timedelta(seconds=round(seconds)))


def _err(text: str) -> None:
    print(f"copgen-rt: {text}", file=sys.stderr, flush=True)


# --- the driver's side of a run, whatever runs the scenes ---------------------------------------


class Batch:
    """Plans scenes in order (skipping complete ones, failing unreadable ones), records results
    in the run manifest, prints each scene's outputs on stdout and reports progress."""

    def __init__(self, entries: Sequence[SceneEntry], make_job: Callable[[SceneEntry], SceneJob],
                 manifest: RunManifest, provenance: dict, report: Report, verbose: bool = False):
        self.entries, self.make_job, self.manifest = entries, make_job, manifest
        self.provenance, self.report, self.verbose = provenance, report, verbose
        self.summary = Summary(len(entries))
        self._running: dict[str, tuple[str, float]] = {}  # key -> (fingerprint, start)

    def jobs(self) -> Iterator[tuple[SceneEntry, SceneJob]]:
        self.report.begin()
        for entry in self.entries:
            try:
                job = self.make_job(entry)
                key = fingerprint(job, self.provenance)
                if self.manifest.complete(entry.key, key):
                    self.summary.skipped += 1
                    self.report.unplanned(finished=True)
                    continue
                check_outputs(job)
            except Exception as e:  # noqa: BLE001 - a bad scene must not stop the others
                self.report.unplanned(finished=False)
                self.fail(entry, one_line(e))
                continue
            if self.verbose:
                _err(f"{entry.name}:\n{job.describe()}")
            self._running[entry.key] = (key, time.monotonic())
            self.report.planned(len(job.plan))
            yield entry, job

    def done(self, entry: SceneEntry, job: SceneJob, result: SceneResult, ranges: int = 1) -> None:
        key, start = self._running.pop(entry.key)
        solver, steps = job.options.sampler
        seconds = time.monotonic() - start
        self.manifest.record(entry.key, {
            **self._entry(entry), "status": "done", "outputs": [str(p) for p in result.outputs],
            "tiles": result.tiles, "tiles_without_data": result.skipped, "tile_ranges": ranges,
            "seconds": round(seconds, 2), "fingerprint": key,
            "provenance": {**self.provenance, "seed": job.options.seed, "steps": steps, "solver": solver}})
        self.summary.succeeded += 1
        for path in result.outputs:
            print(path, flush=True)
        self.report.scene(entry.name, f"{result.tiles} tiles in {seconds:.1f} s")

    def fail(self, entry: SceneEntry, reason: str) -> None:
        self._running.pop(entry.key, None)
        reason = reason.removeprefix(f"{entry.scene}: ")
        self.manifest.record(entry.key, {**self._entry(entry), "status": "failed", "error": reason})
        self.summary.failed.append((entry.name, reason))
        self.report.scene(entry.name, f"FAILED: {reason}")

    @staticmethod
    def _entry(entry: SceneEntry) -> dict:
        return {"scene": str(entry.scene), "conds": list(entry.conds), "out": str(entry.out),
                "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def run_sequential(batch: Batch, pipeline: Pipeline) -> None:
    for entry, job in batch.jobs():
        try:
            result = run_scene(job, pipeline, progress=batch.report.tiles)
        except Exception as e:  # noqa: BLE001 - a bad scene must not stop the others
            batch.fail(entry, one_line(e))
        else:
            batch.done(entry, job, result)


def run(entries: Sequence[SceneEntry], make_job: Callable[[SceneEntry], SceneJob], source: PipelineSource,
        out: Path, ray_address: str | None = None, cpus_per_worker: int = 1, split_tiles: int = 64,
        quiet: bool = False, verbose: bool = False) -> Summary:
    """Run every scene (in this process, or on Ray with `ray_address`: "local" starts a local
    runtime) and print the summary. A failed scene is recorded and the others go on."""
    if ray_address is not None:
        from copgen_rt import distributed

        distributed.check_address(ray_address)
    manifest = RunManifest(Path(out).absolute() / RUN_MANIFEST)
    report = Report(len(entries), quiet)
    try:
        if ray_address is None:
            pipeline = source.load()
            batch = Batch(entries, make_job, manifest, source.provenance(pipeline), report, verbose)
            _warn_if_random(batch.provenance)
            run_sequential(batch, pipeline)
        else:
            with distributed.connect(ray_address, quiet), \
                    distributed.WorkerPool.start(source, cpus_per_worker) as pool:
                batch = Batch(entries, make_job, manifest, pool.provenance, report, verbose)
                _warn_if_random(batch.provenance)
                distributed.run_on_ray(batch, pool, split_tiles)
    finally:
        manifest.save()
    report.summary(batch.summary)
    return batch.summary


def _warn_if_random(provenance: dict) -> None:
    if provenance["random_weights"]:
        _err("RANDOM WEIGHTS: outputs are synthetic, not predictions (pass --weights for a real model)")
