"""The service behind the routes: a bounded queue of jobs, one thread per running job (each runs
`run_scene` as `infer` does, its denoiser calls packed with the other jobs' by the `Batcher`),
dismissal at the next network call, and the job store.

Each job writes into its own folder, --out/jobs/JOB_ID (private, made by us: `own_folder`),
with the command line's file-safety rules (`copgen_rt.files`, through `run_scene`).
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import json
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from copgen_rt.errors import command_line_report
from copgen_rt.files import own_folder
from copgen_rt.pipeline import Pipeline
from copgen_rt.scenes.job import SceneJob
from copgen_rt.scenes.run import run_scene
from copgen_rt.serve.batcher import Batcher, JobDismissed
from copgen_rt.serve.inputs import RasterInputs, plan_job, read_inputs, summary
from copgen_rt.serve.jobs import RESTARTED, Job, JobStatus, JobStore, new_job_id, now

PROGRESS_SAVE_S = 0.5  # progress is written to the store at most this often


class QueueFull(Exception):
    """More jobs queued or running than --queue allows (HTTP 503 with Retry-After)."""


@dataclass(frozen=True)
class ServeSettings:
    out: Path
    allow_roots: tuple[Path, ...] = ()
    max_upload_bytes: int = 16 << 20
    running: int = 8  # jobs sampling at once, their network calls packed together
    queue: int = 32  # jobs queued or running at once; more are refused with 503
    batch_size: int = 8  # tiles (rows) per network call
    pad: bool = True  # every network call at batch_size rows: results independent of other jobs
    dtype: str | None = None  # the denoiser precision of the loaded model
    retry_after_s: int = 10


@dataclass
class _Active:
    job: Job
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


class Service:
    def __init__(self, pipeline: Pipeline, settings: ServeSettings, recover: bool = True):
        """`recover`: jobs a previous server left queued or running become failed (False for a
        Ray Serve replica: the others' jobs are running)."""
        self.pipeline, self.settings = pipeline, settings
        self.jobs_folder = own_folder(Path(settings.out) / "jobs")
        self.store = JobStore(Path(settings.out))
        self.restarted = self.store.fail_unfinished() if recover else 0
        self.rasters = RasterInputs(settings.allow_roots, settings.max_upload_bytes)
        self.batcher = Batcher(pipeline.denoiser, settings.batch_size, settings.pad)
        self.host_lock = threading.Lock()
        self.executor = cf.ThreadPoolExecutor(max_workers=settings.running, thread_name_prefix="copgen-job")
        self._active: dict[str, _Active] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    # --- what the routes call -----------------------------------------------------------------

    def submit(self, process: str, body_inputs: Any, owner: str) -> Job:
        """Plan the job (bad inputs fail here, with the command line's line) and queue it."""
        inputs = read_inputs(process, body_inputs)
        job = Job(new_job_id(), process, owner, JobStatus.ACCEPTED, now(), summary(inputs))
        with self._lock:
            if len(self._active) >= self.settings.queue:
                raise QueueFull(
                    f"{len(self._active)} jobs are queued or running, this server's limit "
                    f"(--queue {self.settings.queue}); retry later"
                )
            active = self._active[job.id] = _Active(job)
        try:
            folder = own_folder(self.jobs_folder / job.id)
            scene_job = plan_job(
                self.pipeline.spec,
                process,
                inputs,
                self.rasters,
                folder,
                self.settings.batch_size,
                self.settings.dtype,
            )
            scene_job.check_memory()
            job.tiles_total = len(scene_job.plan)
            self.store.add(job)
        except BaseException:
            with self._lock:
                del self._active[job.id]
            shutil.rmtree(self.jobs_folder / job.id, ignore_errors=True)
            raise
        self.executor.submit(self._run, active, scene_job)
        return job

    def wait(self, job_id: str) -> Job:
        with self._lock:
            active = self._active.get(job_id)
        if active is not None:
            active.done.wait()
        job = self.store.get(job_id)
        assert job is not None  # submitted jobs stay in the store
        return job

    def get(self, job_id: str, owner: str | None) -> Job | None:
        """A job of `owner` (any owner with None); None for another's, as for a missing one."""
        with self._lock:
            active = self._active.get(job_id)
        job = active.job if active is not None else self.store.get(job_id)
        if job is None or (owner is not None and job.owner != owner):
            return None
        return job

    def list(self, owner: str | None) -> list[Job]:
        with self._lock:
            active = {j: a.job for j, a in self._active.items()}
        return [active.get(job.id, job) for job in self.store.list(owner)]

    def dismiss(self, job: Job) -> Job:
        """Stop a queued or running job at its next network call; drop a finished one's outputs."""
        with self._lock:
            active = self._active.get(job.id)
        if active is not None:
            active.cancel.set()
            active.job.status, active.job.message = JobStatus.DISMISSED, "dismissed by the client"
            active.job.finished = now()
            self.store.save(active.job)
            return active.job
        if job.status == JobStatus.DISMISSED:
            return job
        unfinished = not job.status.finished  # running on another replica: it stops at its next call
        job.status, job.message, job.item = JobStatus.DISMISSED, "dismissed by the client", None
        job.finished = job.finished or now()
        self.store.save(job)
        if not unfinished:
            shutil.rmtree(self.jobs_folder / job.id, ignore_errors=True)
        return job

    def close(self) -> None:
        """Stop every job at its next network call: they fail with the reason (not dismissed)."""
        self._stopping.set()
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.batcher.close()
        self.store.close()

    # --- a job's thread -----------------------------------------------------------------------

    def _cancelled(self, active: _Active) -> bool:
        """Dismissed here, or through another replica (which can only write the store)."""
        return self._stopping.is_set() or active.cancel.is_set() or self.store.dismissed(active.job.id)

    def _run(self, active: _Active, scene_job: SceneJob) -> None:
        job = active.job
        if self._cancelled(active):  # dismissed while queued
            return self._finish(active)
        client = self.batcher.client(lambda: self._cancelled(active), self.host_lock)
        view = copy.copy(self.pipeline)  # shares the VAEs; only the denoiser is the job's own
        view.denoiser = client
        job.status, job.started = JobStatus.RUNNING, now()
        self.store.save(job)
        saved = time.monotonic()

        def progress(tiles: float) -> None:
            nonlocal saved
            job.tiles_done += tiles
            job.calls_done = client.calls
            if time.monotonic() - saved > PROGRESS_SAVE_S:
                self.store.save_progress(job)
                saved = time.monotonic()

        self.batcher.join()
        self.host_lock.acquire()
        try:
            result = run_scene(scene_job, view, progress=progress)
            job.item = _item_with_local_hrefs(scene_job.stac_item)
            job.tiles_done, job.calls_done = float(job.tiles_total), client.calls
            job.status, job.message = JobStatus.SUCCESSFUL, f"{len(result.outputs)} outputs"
        except JobDismissed:
            pass
        except Exception as e:  # noqa: BLE001 - the job fails with the command line's line
            job.status, job.message = JobStatus.FAILED, command_line_report(e)[1]
        finally:
            self.host_lock.release()
            self.batcher.leave()
        self._finish(active)

    def _finish(self, active: _Active) -> None:
        job = active.job
        if active.cancel.is_set() or self.store.dismissed(job.id):
            job.status, job.message, job.item = JobStatus.DISMISSED, "dismissed by the client", None
            shutil.rmtree(self.jobs_folder / job.id, ignore_errors=True)
        elif self._stopping.is_set() and job.status != JobStatus.SUCCESSFUL:
            job.status, job.message = JobStatus.FAILED, RESTARTED
            shutil.rmtree(self.jobs_folder / job.id, ignore_errors=True)
        job.finished = job.finished or now()
        self.store.save(job)
        with self._lock:
            del self._active[job.id]
        active.done.set()


def _item_with_local_hrefs(path: Path) -> dict:
    """The run's STAC Item with every asset href an absolute file:// URI (the COGs under --out)."""
    item = json.loads(path.read_text())
    for asset in item.get("assets", {}).values():
        asset["href"] = (path.parent / asset["href"]).resolve().as_uri()
    item["links"] = [
        link for link in item.get("links", []) if link.get("rel") not in ("self", "root", "parent")
    ]
    return item
