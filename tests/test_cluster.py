"""--ray on a real two-node Ray cluster: a head and a second raylet started as separate `ray start`
processes (own temp folders), and the driver (`copgen-rt infer --ray`), all inside a network
namespace of the test's own that has only `lo` up, so no traffic leaves loopback (Ray looks for the
host's external address even with --node-ip-address=127.0.0.1). The cluster uses token auth with a
token of its own. Needs root and `ip netns` (CI runs as root); skipped with the reason elsewhere."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scene_helpers import RAY, smooth_s2, write_raster

from copgen_rt.runs.record import RUN_MANIFEST

pytestmark = RAY  # never beside the other Ray tests: its kill tests wait on timeouts
psutil = pytest.importorskip("psutil")
pytest.importorskip("ray")

PORT = 6379  # the head's GCS port: free, the namespace is the test's own
RAY = [sys.executable, "-m", "ray.scripts.scripts"]
START_TIMEOUT_S = 90


class Cluster:
    """A head and a second raylet in the network namespace `namespace`, stopped by PID."""

    def __init__(self, namespace: str, root: Path):
        self.namespace, self.root = namespace, root
        self.address = f"127.0.0.1:{PORT}"
        self.token = root / "auth_token"
        self.token.write_text(secrets.token_hex(32))
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token),
                    "RAY_USAGE_STATS_ENABLED": "0"}
        self.nodes: dict[str, subprocess.Popen] = {}

    def netns(self, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *args]

    def start_node(self, name: str, *args: str) -> None:
        log = (self.root / f"{name}.log").open("w")
        self.nodes[name] = subprocess.Popen(
            self.netns([*RAY, "start", "--block", "--temp-dir", str(self.root / name), "--num-cpus", "1",
                        "--node-ip-address=127.0.0.1", "--disable-usage-stats", *args]),
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_for_nodes(self, count: int) -> None:
        probe = (f"import ray; ray.init(address='{self.address}', logging_level='ERROR', "
                 "log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()))")
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for name, node in self.nodes.items():
                if node.poll() is not None:
                    log = (self.root / f"{name}.log").read_text()[-2000:]
                    raise RuntimeError(f"ray start ({name}) exited: {log}")
            r = subprocess.run(self.netns([sys.executable, "-c", probe]), env=self.env, capture_output=True,
                               text=True, timeout=60)
            if r.returncode == 0 and r.stdout.strip().splitlines()[-1:] == [str(count)]:
                return
            time.sleep(1)
        raise RuntimeError(f"the cluster did not get {count} nodes in {START_TIMEOUT_S} s")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill one node's processes, its `ray start` and everything it started, by PID."""
        node = self.nodes.pop(name, None)
        if node is None or node.poll() is not None:
            return
        try:
            procs = [psutil.Process(node.pid), *psutil.Process(node.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for p in procs:
            with _gone():
                p.send_signal(sig)
        psutil.wait_procs(procs, timeout=30)
        node.wait(timeout=30)

    def command(self, args: tuple[str, ...], address: str | None) -> list[str]:
        return self.netns([sys.executable, "-m", "copgen_rt", "infer", *args, "--preset", "draft",
                           "--engine", "torch", "--generate", "DEM", "--ray", address or self.address])

    def infer(self, *args: str, timeout: float = 240, env: dict | None = None, address: str | None = None
              ) -> subprocess.CompletedProcess:
        """The driver, inside the namespace."""
        return subprocess.run(self.command(args, address), env=env or self.env, capture_output=True,
                              text=True, timeout=timeout)

    def driver(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.command(args, None), env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)


class _gone:
    def __enter__(self):
        return self

    def __exit__(self, kind, *_):
        return kind is not None and issubclass(kind, psutil.NoSuchProcess)


def _namespace_or_skip() -> str:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("a real Ray cluster needs root and `ip netns` (to keep its traffic on loopback)")
    name = f"copgen-test-{secrets.token_hex(4)}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot make a network namespace: {made.stderr.strip()}")
    up = subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], capture_output=True,
                        text=True)
    if up.returncode != 0:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        pytest.skip(f"cannot bring up loopback in a network namespace: {up.stderr.strip()}")
    return name


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    namespace = _namespace_or_skip()
    root = Path(tempfile.mkdtemp(prefix="cg-ray-"))  # short: Ray's socket paths must fit 107 bytes
    c = Cluster(namespace, root)
    try:
        c.start_node("head", "--head", f"--port={PORT}", "--include-dashboard=false")
        c.wait_for_nodes(1)
        for worker in ("w1", "w2"):  # two: the head test needs one after the node test killed w1
            c.start_node(worker, f"--address={c.address}")
        c.wait_for_nodes(3)
        yield c
    finally:
        for name in list(c.nodes):
            c.kill(name)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("scenes")
    return [write_raster(folder / f"s{i}.tif", smooth_s2(120, 120, seed=i)) for i in range(4)]


def _records(out: Path) -> dict:
    return json.loads((out / RUN_MANIFEST).read_text())["scenes"]


def test_two_nodes_run_every_scene(cluster, scenes, tmp_path):
    out = tmp_path / "out"
    r = cluster.infer(*map(str, scenes), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "4 succeeded" in r.stderr and "Traceback" not in r.stderr
    records = _records(out)
    assert all(rec["status"] == "done" for rec in records.values())
    assert len(list(out.glob("*_DEM_DEM.tif"))) == 4 and not list(out.glob(".copgen-tmp-*"))
    nodes = {rec["provenance"]["node"]["node_id"] for rec in records.values()}
    assert len(nodes) >= 2  # several nodes ran scenes, each scene recorded with its own node
    assert len({json.dumps(rec["provenance"]["plan"], sort_keys=True) for rec in records.values()}) == 1

    # the run record says every scene is done and the outputs are intact: no actor, no cluster
    again = cluster.infer(*map(str, scenes), "--out", str(out), address="127.0.0.1:1")
    assert again.returncode == 0, again.stderr
    assert "0 succeeded, 4 skipped" in again.stderr


def test_a_driver_without_the_cluster_token_is_told_so(cluster, scenes, tmp_path):
    env = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token either
    r = cluster.infer(str(scenes[0]), "--out", str(tmp_path / "out"), env=env, timeout=120)
    assert r.returncode == 3, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "RAY_AUTH_MODE=token" in lines[0], r.stderr


def _wait_for(condition, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_a_lost_worker_node_ends_the_run_when_the_work_is_done(cluster, tmp_path):
    scenes = [write_raster(tmp_path / f"n{i}.tif", smooth_s2(120, 120, seed=10 + i)) for i in range(6)]
    out = tmp_path / "out"
    driver = cluster.driver(*map(str, scenes), "--out", str(out))
    _wait_for(lambda: any(out.glob("*_DEM_DEM.tif")) or driver.poll() is not None)
    cluster.kill("w1")  # kill -9 of its raylet and every process it started
    killed = time.monotonic()
    _, stderr = driver.communicate(timeout=300)
    assert driver.returncode == 0, stderr
    assert "6 succeeded" in stderr and "retried after a worker died" in stderr
    assert time.monotonic() - killed < 150  # no wait for an actor that no live node can host
    assert len(list(out.glob("*_DEM_DEM.tif"))) == 6
    assert not list(out.glob(".copgen-tmp-*")) and not list(out.glob(".copgen-lease-*"))


def test_a_lost_head_ends_the_driver_in_one_line_and_fences_the_workers(cluster, tmp_path):
    scenes = [write_raster(tmp_path / f"h{i}.tif", smooth_s2(200, 230, seed=20 + i)) for i in range(8)]
    out = tmp_path / "out"
    driver = cluster.driver(*map(str, scenes), "--out", str(out))
    _wait_for(lambda: any(out.glob("*_DEM_DEM.tif")) or driver.poll() is not None)
    started = time.monotonic()
    cluster.kill("head")
    _, stderr = driver.communicate(timeout=120)
    ended = time.time()
    assert time.monotonic() - started < 60  # the driver's own watch, not Ray's minute without its head
    assert driver.returncode == 11, stderr
    errors = [line for line in stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and ("Ray head" in errors[0] or "Ray cluster was lost" in errors[0]), stderr
    assert "Traceback" not in stderr
    assert not list(out.glob(".copgen-lease-*"))
    time.sleep(8)  # the surviving worker finishes its scene (about 5 s): it must not publish it
    late = [p.name for p in out.iterdir() if not p.name.startswith(".copgen-") and p.stat().st_mtime > ended]
    assert late == [], late
