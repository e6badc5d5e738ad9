"""Many scenes on Ray: one long-lived actor per GPU (or per `--cpus-per-worker` CPU cores), each
holding a loaded Pipeline, so weights load once per worker, not once per scene.

- A scene with at most `split_tiles` tiles goes whole to one actor (`run_scene`).
- A larger one is split into tile ranges starting on batch boundaries: one actor first claims
  the scene's work folder (`prepare_work_dir`), the ranges go to any actors
  (`precompute_latents`: final latents into the work folder, which must be on a filesystem
  every worker sees), then one actor runs `run_scene`, which finds every tile cached and only
  decodes, blends and writes. Per-tile seeds and batches are those of a single-process run, so
  the outputs are too.
- Backpressure: at most MAX_IN_FLIGHT tasks per actor; new scenes are planned only when an
  actor has room and the follow-ups of started scenes are submitted, so the driver holds a
  bounded number of scenes. Workers write outputs themselves (atomically).
- A task whose actor died is retried on another actor (MAX_ATTEMPTS in all). Ray restarts the
  dead actor; it gets tasks again once a health check (loading the pipeline) succeeds, and is
  given up if the check fails or takes more than RESTART_TIMEOUT_S, or Ray says it is gone.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import socket
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from copgen_rt import specs
from copgen_rt.errors import one_line
from copgen_rt.pipeline import Pipeline
from copgen_rt.runs.batch import Batch
from copgen_rt.runs.scenelist import SceneEntry
from copgen_rt.runs.source import PipelineSource
from copgen_rt.scenes.inputs.scene_input import SceneInput
from copgen_rt.scenes.job import SceneJob, SceneOptions
from copgen_rt.scenes.run import SceneResult, precompute_latents, run_scene
from copgen_rt.scenes.state import prepare_work_dir

MAX_IN_FLIGHT = 2  # tasks per actor: one running and one queued, so no actor waits for the driver
MAX_ATTEMPTS = 3  # per task: a scene that keeps killing its worker fails alone
MAX_RESTARTS = -1  # Ray restarts a dead actor as often as needed: MAX_ATTEMPTS bounds the deaths
RESTART_TIMEOUT_S = 600.0  # a dead actor that has not reloaded the pipeline by then is given up
_ADDRESS = re.compile(r"^(local|auto|(ray://)?[\w.\-]+:\d+)$")


def _ray():
    try:
        import ray
    except ImportError:
        raise ImportError("--ray needs Ray: pip install 'copgen-rt[distributed]'") from None
    return ray


def check_address(address: str) -> None:
    if not _ADDRESS.match(address):
        raise ValueError(f"--ray {address!r}: not a Ray address (HOST:PORT, ray://HOST:PORT or auto); "
                         "put the scenes before --ray, or write --ray=ADDRESS")


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a head that does not answer: ray.init retries a dead address for minutes."""
    if address == "auto" or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ValueError(f"--ray {address}: no Ray head answers there ({e.strerror or type(e).__name__}); "
                         "start one with `ray start --head`") from None


@contextlib.contextmanager
def connect(address: str, quiet: bool = False) -> Iterator[None]:
    """Start a local Ray runtime ("local") or join the cluster at `address`; an already
    initialised Ray (e.g. a notebook's) is used as it is and left running."""
    ray = _ray()
    if ray.is_initialized():
        yield
        return
    options: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.ERROR,
                                   log_to_driver=not quiet)
    try:
        if address == "local":
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
            ray.init(num_cpus=cores, **options)
        else:
            _check_reachable(address)
            ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, TimeoutError) as e:
        raise ValueError(f"--ray {address}: cannot start or join Ray ({one_line(e)})") from None
    try:
        yield
    finally:
        ray.shutdown()


@dataclass(frozen=True)
class PortableJob:
    """A SceneJob as it travels to workers (ModelSpec does not pickle; its dict form does)."""

    spec: dict
    inputs: tuple[SceneInput, ...]
    out_dir: Path
    options: SceneOptions

    @classmethod
    def of(cls, job: SceneJob) -> PortableJob:
        return cls(specs.to_dict(job.spec), tuple(job.inputs), job.out_dir, job.options)

    def build(self) -> SceneJob:
        return SceneJob(specs.from_dict(self.spec), list(self.inputs), self.out_dir, self.options)


class SceneWorker:
    """A Ray actor: loads the pipeline on first use (again after a restart), then runs scenes
    and tile ranges of scenes."""

    def __init__(self, source: PipelineSource, threads: int):
        self.source, self.threads = source, threads
        self.pipeline: Pipeline | None = None

    def _loaded(self) -> Pipeline:
        if self.pipeline is None:
            import torch

            torch.set_num_threads(self.threads)
            self.pipeline = self.source.load()
        return self.pipeline

    def provenance(self) -> dict:
        return self.source.provenance(self._loaded())

    def warm(self) -> None:
        self._loaded()

    def prepare(self, job: PortableJob) -> None:
        prepare_work_dir(job.build(), self._loaded())

    def precompute(self, job: PortableJob, start: int, stop: int) -> int:
        return precompute_latents(job.build(), self._loaded(), start, stop)

    def run(self, job: PortableJob) -> SceneResult:
        return run_scene(job.build(), self._loaded(), locked=True)  # the driver holds the lock


class WorkerPool:
    """The actors, started with the pipeline loaded, and the run's provenance (from one of them)."""

    def __init__(self, actors: list, provenance: dict):
        self.actors, self.provenance = actors, provenance

    @classmethod
    def start(cls, source: PipelineSource, cpus_per_worker: int = 1) -> WorkerPool:
        ray = _ray()
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0)) if source.plan.device.startswith("cuda") else 0
        cpus = int(resources.get("CPU", 1))
        if not gpus and cpus_per_worker > cpus:
            raise ValueError(f"--cpus-per-worker {cpus_per_worker}: the Ray cluster has {cpus} CPU(s) "
                             "in all; no worker could ever start")
        count = gpus or cpus // cpus_per_worker
        actor = ray.remote(SceneWorker).options(num_cpus=cpus_per_worker, num_gpus=1 if gpus else 0,
                                                max_restarts=MAX_RESTARTS, max_task_retries=0)
        actors = [actor.remote(source, cpus_per_worker) for _ in range(count)]
        pool = cls(actors, {})
        try:
            refs = [actors[0].provenance.remote()] + [a.warm.remote() for a in actors[1:]]
            pool.provenance = _get(refs)[0]
        except BaseException:
            pool.close()
            raise
        return pool

    def close(self) -> None:
        ray = _ray()
        for a in self.actors:
            ray.kill(a, no_restart=True)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _get(refs):
    """ray.get, with a task's own exception raised as itself (one line, no remote traceback)."""
    ray = _ray()
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as e:
        cause = e.cause if isinstance(e.cause, Exception) else RuntimeError(one_line(e))
        raise cause from None


# --- scheduling ---------------------------------------------------------------------------------


def tile_ranges(tiles: int, batch_size: int, split_tiles: int) -> list[tuple[int, int]]:
    """About equal ranges of at most ~split_tiles tiles, each starting on a batch boundary;
    [] when the scene goes whole to one worker."""
    if tiles <= split_tiles:
        return []
    parts = math.ceil(tiles / split_tiles)
    size = math.ceil(math.ceil(tiles / parts) / batch_size) * batch_size
    ranges = [(start, min(start + size, tiles)) for start in range(0, tiles, size)]
    return ranges if len(ranges) > 1 else []


@dataclass(eq=False)
class _Scene:
    entry: SceneEntry
    job: SceneJob
    ref: Any  # the PortableJob in the object store
    ranges: list[tuple[int, int]]
    pending: int = 0  # ranges not finished yet
    failed: bool = False


@dataclass
class _Task:
    scene: _Scene
    kind: str  # "run" (the whole scene, or the final blend of a split one), "prepare", "precompute"
    span: tuple[int, int] = (0, 0)
    attempts: int = 1
    avoid: int | None = None  # the actor it failed on


def run_on_ray(batch: Batch, pool: WorkerPool, split_tiles: int = 64) -> None:
    _Scheduler(batch, pool, split_tiles).run()


class _Scheduler:
    def __init__(self, batch: Batch, pool: WorkerPool, split_tiles: int):
        self.ray = _ray()
        self.batch, self.pool, self.split_tiles = batch, pool, split_tiles
        self.jobs = batch.jobs()
        self.ready: deque[_Task] = deque()  # follow-ups of started scenes first, then new scenes
        self.running: dict[Any, tuple[_Task | None, int]] = {}  # ref -> (task, None for a probe; actor)
        n = len(pool.actors)
        self.load = [0] * n
        self.restarting: dict[int, float] = {}  # actor -> deadline: no tasks until a probe answers
        self.gone = [False] * n  # dead for good

    def run(self) -> None:
        while self._submit() or self.running:
            timeout = 10.0 if self.restarting else None  # to check restart deadlines
            done, _ = self.ray.wait(list(self.running), num_returns=1, timeout=timeout)
            for ref in done:
                self._collect(ref)
            self._give_up_slow_restarts()

    def _submit(self) -> bool:
        """Fill the actors' free slots; False when nothing is left to submit."""
        while True:
            if all(self.gone):
                self._fail_everything_left("every Ray worker died")
                return False
            while self.ready and self.ready[0].scene.failed:
                self.ready.popleft()
            if not self.ready and not self._plan_next():
                return False
            actor = self._pick(self.ready[0].avoid)
            if actor is None:
                return True
            self._send(actor, self.ready.popleft())

    def _plan_next(self) -> bool:
        upcoming = next(self.jobs, None)
        if upcoming is None:
            return False
        entry, job = upcoming
        ranges = tile_ranges(len(job.plan), job.options.batch_size, self.split_tiles)
        scene = _Scene(entry, job, self.ray.put(PortableJob.of(job)), ranges)
        self.ready.append(_Task(scene, "prepare" if ranges else "run"))
        return True

    def _pick(self, avoid: int | None) -> int | None:
        free = [i for i, n in enumerate(self.load)
                if n < MAX_IN_FLIGHT and i not in self.restarting and not self.gone[i]]
        if not free:
            return None
        return min(free, key=lambda i: (i == avoid, self.load[i]))

    def _send(self, actor: int, task: _Task | None) -> None:
        a = self.pool.actors[actor]
        if task is None:  # unlike tasks, the probe waits (retries) while Ray restarts the actor
            ref = a.warm.options(max_task_retries=-1).remote()
        elif task.kind == "prepare":
            ref = a.prepare.remote(task.scene.ref)
        elif task.kind == "precompute":
            ref = a.precompute.remote(task.scene.ref, *task.span)
        else:
            ref = a.run.remote(task.scene.ref)
        self.running[ref] = (task, actor)
        self.load[actor] += 1

    def _collect(self, ref) -> None:
        exceptions = self.ray.exceptions
        task, actor = self.running.pop(ref)
        self.load[actor] -= 1
        try:
            value = self.ray.get(ref)
        except exceptions.RayError as e:
            if task is None:  # the probe failed: the actor cannot come back (e.g. cannot load)
                self._give_up(actor)
            elif isinstance(e, (exceptions.RayActorError, exceptions.WorkerCrashedError)):
                self._worker_died(actor, e)
                self._retry(task, actor, e)
            else:  # the task itself failed: the scene's fault
                task_error = isinstance(e, exceptions.RayTaskError) and isinstance(e.cause, Exception)
                cause = e.cause if task_error else e
                self._fail(task.scene, one_line(cause))
            return
        if task is None:
            self.restarting.pop(actor)
        elif not task.scene.failed:
            self._advance(task, value)

    def _worker_died(self, actor: int, error: Exception) -> None:
        """Send the actor no task until a probe finds it restarted: a task sent while Ray is
        still restarting it would fail too, and use up an attempt for nothing."""
        if self.gone[actor]:
            return
        if isinstance(error, self.ray.exceptions.ActorDiedError):
            self._give_up(actor)
        elif actor not in self.restarting:
            self.restarting[actor] = time.monotonic() + RESTART_TIMEOUT_S
            self._send(actor, None)

    def _give_up_slow_restarts(self) -> None:
        now = time.monotonic()
        for ref, (task, actor) in list(self.running.items()):
            if task is None and self.restarting[actor] < now:
                del self.running[ref]
                self.load[actor] -= 1
                self._give_up(actor)

    def _give_up(self, actor: int) -> None:
        self.restarting.pop(actor, None)
        self.gone[actor] = True
        self.ray.kill(self.pool.actors[actor], no_restart=True)

    def _retry(self, task: _Task, actor: int, error: Exception) -> None:
        if task.scene.failed:
            return
        if task.attempts < MAX_ATTEMPTS:
            self.batch.summary.retried += 1
            self.ready.appendleft(replace(task, attempts=task.attempts + 1, avoid=actor))
        else:
            self._fail(task.scene, f"its worker died {MAX_ATTEMPTS} times ({one_line(error)})")

    def _advance(self, task: _Task, value) -> None:
        scene = task.scene
        if task.kind == "prepare":
            scene.pending = len(scene.ranges)
            self.ready.extendleft(_Task(scene, "precompute", span) for span in reversed(scene.ranges))
        elif task.kind == "precompute":
            self.batch.report.tiles(task.span[1] - task.span[0])
            scene.pending -= 1
            if scene.pending == 0:
                self.ready.appendleft(_Task(scene, "run"))
        else:
            if not scene.ranges:
                self.batch.report.tiles(value.tiles)
            self.batch.done(scene.entry, scene.job, value, ranges=len(scene.ranges) or 1)

    def _fail(self, scene: _Scene, reason: str) -> None:
        if not scene.failed:
            scene.failed = True
            self.batch.fail(scene.entry, reason)

    def _fail_everything_left(self, reason: str) -> None:
        for task in list(self.ready) + [t for t, _ in self.running.values() if t is not None]:
            self._fail(task.scene, reason)
        self.ready.clear()
        self.running.clear()
        for entry, _ in self.jobs:
            self.batch.fail(entry, reason)
