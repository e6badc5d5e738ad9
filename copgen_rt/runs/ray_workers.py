"""Many scenes on Ray: one long-lived actor per GPU (or per `--cpus-per-worker` CPU cores), each
holding a loaded Pipeline, so weights load once per worker, not once per scene.

- Before anything loads (`check_cluster`): every node imports copgen-rt of the driver's version,
  and every output folder is one filesystem for the driver and every node (a probe file the
  driver writes and each node reads, and one each node writes and the driver reads).
- One plan for the cluster (`plan_on_worker`): the RuntimePlan is resolved in a Ray task on a
  worker ("auto" measured there where its CPU kind has not been measured yet), never on the driver,
  which samples nothing; every actor checks it can run that plan or refuses to start in one line.
- A scene with at most `split_tiles` tiles goes whole to one actor (`run_scene`).
- A larger one is split into tile ranges starting on batch boundaries: one actor first claims
  the scene's work folder (`prepare_work_dir`), the ranges go to any actors
  (`precompute_latents`: final latents into the work folder, which must be on a filesystem
  every worker sees), then one actor runs `run_scene`, which finds every tile cached and only
  decodes, blends and writes. Per-tile seeds and batches are those of a single-process run, so
  the outputs are too.
- Backpressure: at most MAX_IN_FLIGHT tasks per actor; new scenes are planned only when an
  actor has room and the follow-ups of started scenes are submitted, so the driver holds a
  bounded number of scenes. Workers write outputs themselves (atomically), each publish fenced
  by the driver's lease (`copgen_rt.runs.lease`): no worker publishes once the driver is gone.
- A task whose actor died is retried on another actor (MAX_ATTEMPTS in all). Ray restarts the
  dead actor; it gets tasks again once a health check (loading the pipeline) succeeds, and is
  given up if the check fails or takes more than RESTART_TIMEOUT_S, if Ray says it is gone, or
  at once if its node died and no live node has a free CPU for it. The run ends as soon as no
  work is left, whatever actors are still restarting.
- The head is watched: when its GCS stops answering, the run ends with ClusterLostError (one
  line, exit 11) after releasing the lease, before Ray's own timeout ends the process silently.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import logging
import math
import os
import re
import secrets
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from copgen_rt import __version__, specs
from copgen_rt.errors import (
    EXIT_CLUSTER_LOST,
    ClusterLostError,
    CopgenError,
    InputError,
    MissingDependencyError,
    OutputWriteError,
    one_line,
)
from copgen_rt.files import check_writable, fenced
from copgen_rt.pipeline import Pipeline
from copgen_rt.plan import RuntimePlan, check_runs_here
from copgen_rt.runs.batch import Batch
from copgen_rt.runs.lease import LEASE_REFRESH_S, Lease, check_lease, release_leases_of
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
HEAD_CHECKS = 3  # the head is lost after this many failed checks in a row, LEASE_REFRESH_S apart
AUTH_HINT = ("the cluster wants its auth token: set RAY_AUTH_MODE=token and give the cluster's token "
             "(~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN), see docs/cluster.md")
_ADDRESS = re.compile(r"^(local|auto|(ray://)?[\w.\-]+:\d+)$")


def _ray():
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("--ray needs Ray: pip install 'copgen-rt[distributed]'") from None
    return ray


def _serves_ray_client() -> bool:
    return importlib.util.find_spec("grpc") is not None  # what ray[client] adds to Ray


def check_address(address: str) -> None:
    if not _ADDRESS.match(address):
        client = ", ray://HOST:PORT" if _serves_ray_client() else ""
        raise ValueError(f"--ray {address!r}: not a Ray address (HOST:PORT{client} or auto); "
                         "put the scenes before --ray, or write --ray=ADDRESS")
    if address.startswith("ray://") and not _serves_ray_client():
        raise MissingDependencyError(f"--ray {address}: ray:// addresses need Ray Client (pip install "
                                     "'ray[client]'); or give the head's HOST:PORT from a cluster node")


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


def _check_auth(address: str) -> None:
    """A head with token auth refuses a driver without its token; ray.init says so only after half
    a minute of retries, and not in words a user can act on. One RPC says it at once."""
    if address == "auto" or address.startswith("ray://"):
        return
    ray = _ray()
    try:
        from ray._raylet import GcsClient  # type: ignore[attr-defined] # Ray's own GCS client: one call, no retries on auth
    except ImportError:
        return  # another Ray layout: ray.init below still reports a refused token with the hint
    try:
        GcsClient(address=address)
    except ray.exceptions.AuthenticationError:
        raise InputError(f"--ray {address}: {AUTH_HINT}") from None
    except Exception:  # noqa: BLE001 - anything else: ray.init below reports it
        return


def _supervised(lease_folder: Path) -> None:
    """Go on in a child process, this one waiting for it. Ray's core ends a driver whose node's
    raylet or whose head dies with a bare exit 1 (no Python cleanup, nothing on stderr); then this
    process releases the child's leases (its workers stop publishing), says so in one line and
    exits EXIT_CLUSTER_LOST. Any other exit of the child is passed on as it is."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        atexit.register(os.write, write, b"x")  # a normal exit (any code) says so; Ray's _exit does not
        return
    os.close(write)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the child too: it reports it
    signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGTERM))
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    if os.read(read, 1) != b"x":
        release_leases_of(pid, lease_folder)
        sys.stderr.write("copgen-rt: error: the Ray cluster was lost: Ray ended the driver (the head, or "
                         "the raylet of this node, is gone); rerun the same command once the cluster is "
                         "back (finished tiles are kept)\n")
        code = EXIT_CLUSTER_LOST
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@contextlib.contextmanager
def connect(address: str, quiet: bool = False, lease_folder: Path | None = None) -> Iterator[None]:
    """Start a local Ray runtime ("local") or join the cluster at `address`; an already
    initialised Ray (e.g. a notebook's) is used as it is and left running. Workers' own output
    stays in Ray's session logs: copgen-rt's stderr is its one-line format. `lease_folder`
    (the command line's runs): joining a cluster, the run goes on in a child process watched
    by this one (`_supervised`)."""
    check_address(address)
    ray = _ray()
    if ray.is_initialized():
        yield
        return
    if lease_folder is not None and address != "local":
        _supervised(lease_folder)
    options: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    # a task's error nobody asked for (a fenced worker's, after the run ended) is no news to print
    os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
    try:
        if address == "local":
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
            ray.init(num_cpus=cores, **options)
        else:
            _check_reachable(address)
            _check_auth(address)
            ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, TimeoutError, ray.exceptions.RayError) as e:
        hint = f"; {AUTH_HINT}" if "auth" in str(e).lower() else ""
        raise ValueError(f"--ray {address}: cannot start or join Ray ({one_line(e)}){hint}") from None
    lost = False
    try:
        yield
    except ClusterLostError:
        lost = True  # ray.shutdown would wait for the head that is gone
        raise
    finally:
        if not lost:
            ray.shutdown()


# --- the cluster's preconditions ------------------------------------------------------------------


def node_identity() -> dict:
    """Which node and which software a task or an actor runs on (recorded per scene)."""
    import ray

    return {"node_id": ray.get_runtime_context().get_node_id(), "hostname": socket.gethostname(),
            "software": f"copgen-rt {__version__}"}


def _node_probe(folders: Sequence[str], token: str) -> dict:
    """On one node: its identity, whether it reads the driver's probe file in each folder, and a
    probe file of its own there for the driver to read."""
    seen = {}
    identity = node_identity()
    for folder in folders:
        probe = Path(folder) / f".copgen-probe-{token}"
        try:
            seen[folder] = probe.read_text() == token
            (Path(folder) / f".copgen-probe-{token}-{identity['node_id'][:12]}").write_text(token)
        except OSError:
            seen[folder] = False
    return {**identity, "seen": seen}


def check_cluster(folders: Sequence[Path], timeout_s: float = 120.0) -> list[dict]:
    """One task on every live node, before anything loads: the same copgen-rt there, and every
    folder in `folders` (output and work folders) one filesystem for the driver and every node.
    Returns the nodes' identities."""
    ray = _ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    token = secrets.token_hex(8)
    names = sorted({str(Path(f).absolute()) for f in folders if _writable(Path(f))})
    probes = [Path(f) / f".copgen-probe-{token}" for f in names]
    for probe in probes:
        probe.write_text(token)
    probe_task = ray.remote(_node_probe)
    try:
        refs = {n["NodeManagerAddress"] + " " + n["NodeID"][:12]: probe_task.options(
            num_cpus=0, max_retries=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(names, token)
            for n in nodes}
        answers = []
        for where, ref in refs.items():
            try:
                answers.append(ray.get(ref, timeout=timeout_s))
            except ray.exceptions.TaskUnschedulableError:
                continue  # the node died since ray.nodes() listed it: not part of the run
            except ray.exceptions.RayError as e:
                text = str(e)
                if "No module named 'copgen_rt'" in text or "copgen_rt" in text and "ModuleNotFound" in text:
                    raise MissingDependencyError(f"Ray node {where}: copgen-rt is not installed there "
                                                 "(every node needs the same install)") from None
                raise CopgenError(f"Ray node {where} cannot run copgen-rt tasks "
                                  f"({one_line(getattr(e, 'cause', None) or e)})") from None
        for a in answers:
            where = f"Ray node {a['hostname']} ({a['node_id'][:12]})"
            if a["software"] != f"copgen-rt {__version__}":
                raise MissingDependencyError(f"{where} has {a['software']}, the driver copgen-rt "
                                             f"{__version__}: install the same version on every node")
            for folder, seen in a["seen"].items():
                back = Path(folder) / f".copgen-probe-{token}-{a['node_id'][:12]}"
                if not seen or not back.exists():
                    raise InputError(f"{folder}: not the same folder on {where} as here: output and work "
                                     "folders must be on a filesystem every node shares")
        return answers
    finally:
        for probe in probes:
            for p in probe.parent.glob(f"{probe.name}*"):
                with contextlib.suppress(OSError):
                    p.unlink()


def _writable(folder: Path) -> bool:
    """A folder that cannot be written is no cluster matter: its scenes fail alone, in one line."""
    try:
        check_writable(folder)
    except OutputWriteError:
        return False
    return True


def _worker_resources(device: str | None, cpus_per_worker: int) -> dict:
    ray = _ray()
    wants_gpu = device is None or device.startswith("cuda")
    gpus = int(ray.cluster_resources().get("GPU", 0)) if wants_gpu else 0
    return {"num_cpus": cpus_per_worker, "num_gpus": 1 if gpus else 0}


def _resolve_plan(model: Any, spec: dict, batch_size: int | None) -> RuntimePlan:
    return model.plan(specs.from_dict(spec), batch_size)


def plan_on_worker(model: Any, spec: specs.ModelSpec, batch_size: int | None, cpus_per_worker: int = 1
                   ) -> RuntimePlan:
    """The run's RuntimePlan (a ModelOptions' `plan`), resolved by a Ray task on a worker as its
    actors will be placed: "auto" measured there if not yet measured for that CPU kind."""
    ray = _ray()
    resources = _worker_resources(model.device, cpus_per_worker)
    task = ray.remote(_resolve_plan).options(**resources, max_retries=1)
    return _get(task.remote(model, specs.to_dict(spec), batch_size))


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
    """A Ray actor: checks it can run the driver's plan and loads the pipeline on first use
    (again after a restart), then runs scenes and tile ranges of scenes, each publish fenced by
    the driver's lease."""

    def __init__(self, source: PipelineSource, threads: int, lease: str | None):
        self.source, self.threads, self.lease = source, threads, lease
        self.pipeline: Pipeline | None = None

    def _loaded(self) -> Pipeline:
        if self.pipeline is None:
            import torch

            if self.source.software != f"copgen-rt {__version__}":
                raise MissingDependencyError(f"this node has copgen-rt {__version__}, the driver "
                                             f"{self.source.software}")
            check_runs_here(self.source.plan)
            torch.set_num_threads(self.threads)
            self.pipeline = self.source.load()
        return self.pipeline

    def _fence(self) -> contextlib.AbstractContextManager[None]:
        lease = self.lease
        return contextlib.nullcontext() if lease is None else fenced(lambda: check_lease(lease))

    def provenance(self) -> dict:
        return {**self.source.provenance(self._loaded()), "node": node_identity()}

    def warm(self) -> None:
        self._loaded()

    def prepare(self, job: PortableJob) -> None:
        with self._fence():
            prepare_work_dir(job.build(), self._loaded())

    def precompute(self, job: PortableJob, start: int, stop: int) -> int:
        with self._fence():
            return precompute_latents(job.build(), self._loaded(), start, stop)

    def run(self, job: PortableJob) -> SceneResult:
        with self._fence():
            return run_scene(job.build(), self._loaded(), locked=True)  # the driver holds the lock


class WorkerPool:
    """The actors, started with the pipeline loaded, each one's provenance and node, and the run's
    provenance (the first actor's: every actor runs the same plan)."""

    def __init__(self, actors: list, provenances: list[dict], cpus_per_worker: int):
        self.actors, self.provenances, self.cpus_per_worker = actors, provenances, cpus_per_worker

    @property
    def provenance(self) -> dict:
        return {k: v for k, v in self.provenances[0].items() if k != "node"}

    @classmethod
    def start(cls, source: PipelineSource, cpus_per_worker: int = 1, lease: Lease | None = None
              ) -> WorkerPool:
        ray = _ray()
        resources = _worker_resources(source.plan.device, cpus_per_worker)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        if not resources["num_gpus"] and cpus_per_worker > cpus:
            raise ValueError(f"--cpus-per-worker {cpus_per_worker}: the Ray cluster has {cpus} CPU(s) "
                             "in all; no worker could ever start")
        gpus = int(ray.cluster_resources().get("GPU", 0))
        count = gpus if resources["num_gpus"] else cpus // cpus_per_worker
        actor = ray.remote(SceneWorker).options(**resources, max_restarts=MAX_RESTARTS, max_task_retries=0)
        actors = [actor.remote(source, cpus_per_worker, lease and str(lease.path)) for _ in range(count)]
        pool = cls(actors, [], cpus_per_worker)
        try:
            pool.provenances = _get([a.provenance.remote() for a in actors], lease)
        except BaseException:
            pool.close()
            raise
        return pool

    def close(self) -> None:
        ray = _ray()
        for a in self.actors:
            with contextlib.suppress(Exception):
                ray.kill(a, no_restart=True)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _get(refs, lease: Lease | None = None):
    """ray.get, with a task's own exception raised as itself (one line, no remote traceback), an
    actor that could not start as one line, and the lease refreshed while waiting."""
    ray = _ray()
    pending = refs if isinstance(refs, list) else [refs]
    try:
        while True:
            _, waiting = ray.wait(pending, num_returns=len(pending), timeout=LEASE_REFRESH_S)
            if lease is not None:
                lease.refresh()
            if not waiting:
                return ray.get(refs)
    except ray.exceptions.RayTaskError as e:
        cause = e.cause if isinstance(e.cause, Exception) else RuntimeError(one_line(e))
        raise cause from None
    except ray.exceptions.RayActorError as e:
        raise CopgenError(f"a Ray worker could not start ({one_line(e)}); its log is in the "
                               "session folder of its node (ray start --temp-dir)") from None


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


def run_on_ray(batch: Batch, pool: WorkerPool, split_tiles: int = 64, lease: Lease | None = None) -> None:
    _Scheduler(batch, pool, split_tiles, lease).run()


class _HeadWatch:
    """Whether the head's GCS still answers: a TCP connection, LEASE_REFRESH_S apart at most."""

    def __init__(self, gcs_address: str):
        host, _, port = gcs_address.rpartition(":")
        self.address, self.target, self.failures = gcs_address, (host, int(port)), 0

    def check(self) -> None:
        try:
            socket.create_connection(self.target, timeout=LEASE_REFRESH_S).close()
            self.failures = 0
        except OSError as e:
            self.failures += 1
            # refused: nothing listens there any more; a timeout may be a slow network
            if isinstance(e, ConnectionRefusedError) or self.failures >= HEAD_CHECKS:
                raise ClusterLostError(f"the Ray head at {self.address} stopped answering "
                                       f"({e.strerror or type(e).__name__}): scenes not finished are not "
                                       "recorded; rerun the same command once the cluster is back "
                                       "(finished tiles are kept)") from None


class _Scheduler:
    def __init__(self, batch: Batch, pool: WorkerPool, split_tiles: int, lease: Lease | None):
        self.ray = _ray()
        self.batch, self.pool, self.split_tiles, self.lease = batch, pool, split_tiles, lease
        self.head = _HeadWatch(self.ray.get_runtime_context().gcs_address)
        self.jobs = batch.jobs()
        self.ready: deque[_Task] = deque()  # follow-ups of started scenes first, then new scenes
        self.running: dict[Any, tuple[_Task | None, int]] = {}  # ref -> (task, None for a probe; actor)
        n = len(pool.actors)
        self.load = [0] * n
        self.restarting: dict[int, float] = {}  # actor -> deadline: no tasks until a probe answers
        self.placeable: set[int] = set()  # restarting actors seen with room for them on a live node
        self.gone = [False] * n  # dead for good

    def run(self) -> None:
        while self._submit() or self._working():
            done, _ = self.ray.wait(list(self.running), num_returns=1, timeout=LEASE_REFRESH_S)
            self._keep_alive()  # first: the calls below that ask the head would wait for it for a minute
            for ref in done:
                self._collect(ref)
            self._give_up_slow_restarts()

    def _working(self) -> bool:
        """Whether a task (not a restart probe) is running: probes alone do not keep the run."""
        return any(task is not None for task, _ in self.running.values())

    def _keep_alive(self) -> None:
        self.head.check()
        if self.lease is not None:
            self.lease.refresh()

    def _node(self, actor: int) -> dict:
        return self.pool.provenances[actor].get("node", {})

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
            self.restarting.pop(actor, None)
            self.placeable.discard(actor)
        elif not task.scene.failed:
            self._advance(task, value, actor)

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
        """Give up a restarting actor past its deadline, or at once where its node died and no
        live node has room for it (Ray would keep it pending for ever)."""
        if not self.restarting:
            return
        now = time.monotonic()
        alive = {n["NodeID"] for n in self.ray.nodes() if n.get("Alive")}
        room = self.ray.available_resources().get("CPU", 0) >= self.pool.cpus_per_worker
        for ref, (task, actor) in list(self.running.items()):
            if task is None and (self.restarting[actor] < now or not self._placeable(actor, alive, room)):
                del self.running[ref]
                self.load[actor] -= 1
                self._give_up(actor)

    def _placeable(self, actor: int, alive: set[str], room: bool) -> bool:
        """Whether Ray can bring the actor back: its node lives (a crashed worker process is
        restarted there), or, decided once when its node is seen dead, a live node had room."""
        if self._node(actor).get("node_id") in alive or actor in self.placeable:
            return True
        if room:
            self.placeable.add(actor)
        return room

    def _give_up(self, actor: int) -> None:
        self.restarting.pop(actor, None)
        self.placeable.discard(actor)
        self.gone[actor] = True
        with contextlib.suppress(Exception):  # on a dead node, Ray may have forgotten it already
            self.ray.kill(self.pool.actors[actor], no_restart=True)

    def _retry(self, task: _Task, actor: int, error: Exception) -> None:
        if task.scene.failed:
            return
        if task.attempts < MAX_ATTEMPTS:
            self.batch.summary.retried += 1
            self.ready.appendleft(replace(task, attempts=task.attempts + 1, avoid=actor))
        else:
            self._fail(task.scene, f"its worker died {MAX_ATTEMPTS} times ({one_line(error)})")

    def _advance(self, task: _Task, value, actor: int) -> None:
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
            self.batch.done(scene.entry, scene.job, value, ranges=len(scene.ranges) or 1,
                            worker=self.pool.provenances[actor])

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
