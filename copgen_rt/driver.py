"""The driver's side of a many-scene run, whatever runs the scenes (this process or Ray): the
pipeline every worker loads, the run manifest that lets a rerun skip finished scenes, progress,
and `Batch`, which plans scenes, holds their locks and records their results.

A scene is complete when the run manifest (`copgen-run.json` in the output folder) records it as
done with the same settings (model, weight hashes, options, input files) and every output it
lists exists; complete scenes are skipped, whatever `--overwrite` says.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from copgen_rt import __version__, specs
from copgen_rt.errors import CheckpointError, one_line
from copgen_rt.files import check_writable, is_regular_file, waiting_lock, write_text
from copgen_rt.pipeline import Pipeline
from copgen_rt.plan import RuntimePlan
from copgen_rt.scenelist import SceneEntry
from copgen_rt.scenes.job import SceneJob
from copgen_rt.scenes.run import SceneResult
from copgen_rt.scenes.state import check_outputs, scene_lock
from copgen_rt.weights import RandomWeightsWarning, file_sha256, resolve_weights

RUN_MANIFEST = "copgen-run.json"
SAVE_INTERVAL_S = 2.0  # the run manifest is rewritten at most this often (and at the end)


@dataclass(frozen=True)
class PipelineSource:
    """How to load the pipeline, picklable so that every Ray worker loads its own copy of the same
    plan."""

    spec: dict  # specs.to_dict (ModelSpec itself does not pickle)
    weights: str | None  # a weights directory or hub id; None with an export
    export: str | None
    plan: RuntimePlan

    @classmethod
    def create(cls, spec: specs.ModelSpec, weights: str | None, export: str | None, plan: RuntimePlan
               ) -> PipelineSource:
        local = lambda p: str(Path(p).absolute()) if p and Path(p).exists() else p  # noqa: E731
        return cls(specs.to_dict(spec), local(weights), local(export), plan)

    def load(self) -> Pipeline:
        """The pipeline, without its RandomWeightsWarning: the driver says so once for the run."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomWeightsWarning)
            if self.export:
                return Pipeline.from_export(self.export, device=self.plan.device)
            return Pipeline.from_pretrained(specs.from_dict(self.spec), self.weights, plan=self.plan)

    def provenance(self, pipeline: Pipeline) -> dict:
        """Model and hashes of every weight file the pipeline may load (hashed once per run)."""
        if self.export:
            files = dict(pipeline.provenance.files)
        else:
            if self.weights is None:
                raise ValueError("a pipeline source needs weights or an export")
            found = resolve_weights(pipeline.spec, self.weights)
            if found.denoiser is None:
                raise CheckpointError(f"{self.weights}: no denoiser checkpoint")
            files = {"denoiser": str(found.denoiser), **{f"vae/{k}": str(p) for k, p in found.vaes.items()}}
        return {
            "model": pipeline.spec.name,
            "software": f"copgen-rt {__version__}",
            "weights": {k: file_sha256(Path(p))[:16] for k, p in sorted(files.items())},
            "random_weights": pipeline.is_random,
            "plan": self.plan.to_json(),
        }


# --- the run manifest ---------------------------------------------------------------------------


class RunManifest:
    """`copgen-run.json`: per scene its status, outputs, provenance, settings and error."""

    def __init__(self, path: Path):
        self.path = path
        self.scenes = self._read()
        self._changed: set[str] = set()
        self._saved = 0.0

    def _read(self) -> dict[str, dict]:
        if not os.path.lexists(self.path):
            return {}
        if not is_regular_file(self.path):
            raise ValueError(f"{self.path}: not a plain file (a link?); move it away")
        try:
            return dict(json.loads(self.path.read_text())["scenes"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"{self.path}: not a copgen-rt run manifest ({type(e).__name__}); move it away"
            ) from None

    def complete(self, key: str, fingerprint: str) -> bool:
        record = self.scenes.get(key, {})
        return (
            record.get("status") == "done"
            and record.get("fingerprint") == fingerprint
            and all(Path(p).exists() for p in record.get("outputs", [None]))
        )

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
        check_writable(self.path.parent)
        with waiting_lock(self.path.with_name(f".{self.path.name}.lock")):
            merged = {**self._read(), **{k: self.scenes[k] for k in self._changed}}
            write_text(
                self.path,
                json.dumps({"software": f"copgen-rt {__version__}", "scenes": merged}, indent=1) + "\n",
            )
        self.scenes, self._changed, self._saved = merged, set(), time.monotonic()


def fingerprint(job: SceneJob, provenance: dict) -> str:
    """Everything that decides a scene's outputs, the batch size aside (it only changes rounding,
    and its default depends on free memory)."""
    options = {
        k: v for k, v in dataclasses.asdict(job.options).items() if k not in ("overwrite", "batch_size")
    }
    inputs = [
        (
            str(s.path),
            s.path.stat().st_size,
            s.path.stat().st_mtime_ns,
            s.product,
            s.bands,
            s.units,
            s.dn_offset,
        )
        for s in job.inputs
    ]
    parts = {
        "model": provenance["model"],
        "weights": provenance["weights"],
        "options": options,
        "sampler": job.options.sampler,
        "generate": job.generate,
        "date": job.date,
        "inputs": inputs,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


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
        self.finished = self.seen = self.planned_scenes = self.planned_tiles = 0
        self.done_tiles = 0.0
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

    def tiles(self, n: float) -> None:
        self.done_tiles += n

    def scene(self, name: str, text: str) -> None:
        self.finished += 1
        if not self.quiet:
            say(f"[{self.finished}/{self.total}] {name}: {text} | {self._rate()}")

    def _rate(self) -> str:
        elapsed = time.monotonic() - self.work_start
        rate = self.done_tiles / elapsed if elapsed > 0 else 0.0
        mean = self.planned_tiles / self.planned_scenes if self.planned_scenes else 0.0
        left = max(0.0, self.planned_tiles - self.done_tiles + (self.total - self.seen) * mean)
        eta = _clock(left / rate) if rate > 0 else "?"
        return f"{rate:.1f} tiles/s, ETA {eta}"

    def summary(self, s: Summary) -> None:
        seconds = time.monotonic() - self.start
        parts = [
            f"{s.succeeded} succeeded",
            f"{s.skipped} skipped (already complete)",
            f"{len(s.failed)} failed",
        ]
        retried = f"; {s.retried} task(s) retried after a worker died" if s.retried else ""
        say(f"{s.total} scenes in {_clock(seconds)}: {', '.join(parts)}{retried}")
        for name, reason in s.failed:
            say(f"failed: {name}: {reason}")


def _clock(seconds: float) -> str:
    return str(dt.timedelta(seconds=round(seconds)))


def say(text: str) -> None:
    print(f"copgen-rt: {text}", file=sys.stderr, flush=True)


# --- the driver's side of a run, whatever runs the scenes ---------------------------------------


class Batch:
    """Plans scenes in order (skipping complete ones, failing unreadable ones), records results
    in the run manifest, prints each scene's outputs on stdout and reports progress."""

    def __init__(
        self,
        entries: Sequence[SceneEntry],
        make_job: Callable[[SceneEntry], SceneJob],
        manifest: RunManifest,
        provenance: dict,
        report: Report,
        verbose: bool = False,
    ):
        self.entries, self.make_job, self.manifest = entries, make_job, manifest
        self.provenance, self.report, self.verbose = provenance, report, verbose
        self.summary = Summary(len(entries))
        self._running: dict[str, tuple[str, float]] = {}  # key -> (fingerprint, start)
        self._locks: dict[str, contextlib.ExitStack] = {}  # key -> the held scene lock (`scene_lock`)

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
                lock = contextlib.ExitStack()
                lock.enter_context(scene_lock(job))  # held until done or fail: workers run unlocked
                self._locks[entry.key] = lock
            except Exception as e:  # noqa: BLE001 - a bad scene must not stop the others
                self.report.unplanned(finished=False)
                self.fail(entry, one_line(e))
                continue
            if self.verbose:
                say(f"{entry.name}:\n{job.describe()}")
            self._running[entry.key] = (key, time.monotonic())
            self.report.planned(len(job.plan))
            yield entry, job

    def done(self, entry: SceneEntry, job: SceneJob, result: SceneResult, ranges: int = 1) -> None:
        key, start = self._running.pop(entry.key)
        self._unlock(entry)
        solver, steps = job.options.sampler
        seconds = time.monotonic() - start
        self.manifest.record(
            entry.key,
            {
                **self._entry(entry),
                "status": "done",
                "outputs": [str(p) for p in result.outputs],
                "tiles": result.tiles,
                "tiles_without_data": result.skipped,
                "tile_ranges": ranges,
                "seconds": round(seconds, 2),
                "fingerprint": key,
                "provenance": {**self.provenance, "seed": job.options.seed, "steps": steps, "solver": solver},
            },
        )
        self.summary.succeeded += 1
        for path in result.outputs:
            print(path, flush=True)
        self.report.scene(entry.name, f"{result.tiles} tiles in {seconds:.1f} s")

    def fail(self, entry: SceneEntry, reason: str) -> None:
        self._running.pop(entry.key, None)
        self._unlock(entry)
        reason = reason.removeprefix(f"{entry.scene}: ")
        self.manifest.record(entry.key, {**self._entry(entry), "status": "failed", "error": reason})
        self.summary.failed.append((entry.name, reason))
        self.report.scene(entry.name, f"FAILED: {reason}")

    def _unlock(self, entry: SceneEntry) -> None:
        lock = self._locks.pop(entry.key, None)
        if lock is not None:
            lock.close()

    def close(self) -> None:
        """Release the locks of scenes still running (the run was interrupted)."""
        for lock in self._locks.values():
            lock.close()
        self._locks.clear()

    @staticmethod
    def _entry(entry: SceneEntry) -> dict:
        return {
            "scene": str(entry.scene),
            "conds": list(entry.conds),
            "out": str(entry.out),
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
