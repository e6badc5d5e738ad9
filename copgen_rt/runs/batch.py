"""The driver's side of a many-scene run, whatever runs the scenes (this process or Ray workers):
`Batch` plans scenes in order, skips complete ones, holds their locks and records their results."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable, Iterator, Sequence

from copgen_rt.errors import one_line
from copgen_rt.runs.record import RunManifest
from copgen_rt.runs.report import Report, Summary, say
from copgen_rt.runs.scenelist import SceneEntry
from copgen_rt.scenes.job import SceneJob
from copgen_rt.scenes.run import SceneResult
from copgen_rt.scenes.state import check_outputs, outputs_intact, remove_leftover_staging, run_key, scene_lock


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
        self._running: dict[str, tuple[str, float]] = {}  # key -> (run key, start)
        self._locks: dict[str, contextlib.ExitStack] = {}  # key -> the held scene lock (`scene_lock`)
        self._jobs: dict[str, SceneJob] = {}  # key -> the job of a locked scene

    def jobs(self) -> Iterator[tuple[SceneEntry, SceneJob]]:
        self.report.begin()
        for entry in self.entries:
            try:
                job = self.make_job(entry)
                key = run_key(job, self.provenance["files"], self.provenance["engine"])
                if self.manifest.done(entry.key, key) and outputs_intact(job, key):
                    self.summary.skipped += 1
                    self.report.unplanned(finished=True)
                    continue
                check_outputs(job)
                lock = contextlib.ExitStack()
                lock.enter_context(scene_lock(job))  # held until done or fail: workers run unlocked
                self._locks[entry.key] = lock
                self._jobs[entry.key] = job
                remove_leftover_staging(job)
            except Exception as e:  # noqa: BLE001 - a bad scene must not stop the others
                self.report.unplanned(finished=False)
                self.fail(entry, one_line(e))
                continue
            if self.verbose:
                say(f"{entry.name}:\n{job.describe()}")
            self._running[entry.key] = (key, time.monotonic())
            self.report.planned(len(job.plan))
            yield entry, job

    def done(self, entry: SceneEntry, job: SceneJob, result: SceneResult, ranges: int = 1,
             worker: dict | None = None) -> None:
        """Record a finished scene; `worker`: the provenance of the Ray worker that wrote it, with
        its node."""
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
                "run_key": key,
                "provenance": {**(worker or self.provenance), "seed": job.options.seed, "steps": steps,
                               "solver": solver},
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
        """Release the scene's lock, first removing what killed writers left (its tasks are over)."""
        job = self._jobs.pop(entry.key, None)
        if job is not None:
            remove_leftover_staging(job)
        lock = self._locks.pop(entry.key, None)
        if lock is not None:
            lock.close()

    def close(self) -> None:
        """Release the locks of scenes still running (the run was interrupted)."""
        for lock in self._locks.values():
            lock.close()
        self._locks.clear()
        self._jobs.clear()

    @staticmethod
    def _entry(entry: SceneEntry) -> dict:
        return {
            "scene": str(entry.scene),
            "conds": list(entry.conds),
            "out": str(entry.out),
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
