"""`copgen-rt serve` over real HTTP on loopback: the server runs as a subprocess (demo model, torch
fp32, draft preset with 2 steps, the bundled chip and a 192 px crop of it), driven with
`requests` and OWSLib's OGC API - Processes client, and stopped by its PID."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import requests
from click.testing import CliRunner

from copgen_rt import demo
from copgen_rt.cli import main

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

MODEL = ["--engine", "torch", "--dtype", "fp32", "--batch-size", "4"]
QUICK = {"preset": "draft", "steps": 2, "generate": "DEM"}
ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789ab"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, out: Path, args: list[str], token: str | None = None):
        self.out, self.args, self.token = out, args, token
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = out.parent / f"{out.name}-{self.port}.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "copgen_rt",
                    "serve",
                    *MODEL,
                    "--port",
                    str(self.port),
                    "--out",
                    str(out),
                    *args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited: {self.log.read_text()}")
            try:
                if requests.get(self.url + "/conformance", headers=self.headers(), timeout=1).ok:
                    return  # (Ray Serve's proxy answers 404 until the app is deployed)
            except requests.RequestException:  # not listening yet, or too busy to answer within 1 s
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"the server did not start: {self.log.read_text()}")

    def headers(self, token: str | None = None) -> dict[str, str]:
        token = token or self.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, path: str, token: str | None = None) -> requests.Response:
        return requests.get(self.url + path, headers=self.headers(token), timeout=60)

    def post(
        self, process: str, inputs: dict, asynchronous: bool = False, token: str | None = None, **body
    ) -> requests.Response:
        headers = self.headers(token) | ({"Prefer": "respond-async"} if asynchronous else {})
        return requests.post(
            f"{self.url}/processes/{process}/execution",
            json={"inputs": inputs, **body},
            headers=headers,
            timeout=120,
        )

    def delete(self, job_id: str, token: str | None = None) -> requests.Response:
        return requests.delete(f"{self.url}/jobs/{job_id}", headers=self.headers(token), timeout=60)

    def wait(self, job_id: str, token: str | None = None, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.get(f"/jobs/{job_id}", token).json()
            if status["status"] not in ("accepted", "running"):
                return status
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} still {status['status']} after {timeout} s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """The folder the servers read: the bundled chip (9 Earth-anchored tiles) and its top-left 192 px."""
    folder = tmp_path_factory.mktemp("serve-root")
    shutil.copy(demo.chip_path(), folder / "chip.tif")
    demo.write_tile(folder / "tile.tif")
    with rasterio.open(folder / "tile.tif") as src:
        profile = src.profile | {"count": 1, "dtype": "uint8", "nodata": None}
    gap = np.zeros((1, 192, 192), np.uint8)
    gap[:, 64:128, 64:128] = 1  # a square cloud in the middle
    with rasterio.open(folder / "mask.tif", "w", **profile) as dst:
        dst.write(gap)
    return folder


@pytest.fixture(scope="module")
def server(root, tmp_path_factory, export_cache):
    s = Server(
        tmp_path_factory.mktemp("serve") / "out", ["--allow-root", str(root), "--max-upload", "2000000"]
    )
    yield s
    s.stop()


def _pixels(item: dict) -> dict[str, np.ndarray]:
    out = {}
    for asset in item["assets"].values():
        path = Path(asset["href"].removeprefix("file://"))
        with rasterio.open(path) as src:
            out[path.name] = src.read()
    return out


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


def test_landing_conformance_and_processes(server):
    from owslib.ogcapi.processes import Processes

    landing = server.get("/").json()
    assert {"conformance", "processes", "jobs"} <= {link["title"] for link in landing["links"]}
    conforms = server.get("/conformance").json()["conformsTo"]
    assert "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/core" in conforms
    assert "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/job-list" in conforms
    client = Processes(server.url)
    assert {p["id"] for p in client.processes()} == {"generate", "fill"}
    described = client.process("fill")
    assert {"scene", "cond", "mask", "preset", "steps", "seed", "samples", "dtype"} <= set(
        described["inputs"]
    )
    assert "async-execute" in described["jobControlOptions"]
    missing = server.get("/processes/nope")
    assert missing.status_code == 404 and missing.json()["detail"].startswith("no process 'nope'")


def test_sync_generate_is_infer_pixel_for_pixel(server, root, tmp_path):
    """The same inputs and options as `infer` give the same COGs (fp32, batch 4): bit for bit
    where the batches are the same; the chip's 9 Earth-anchored tiles end in a batch of 1, which
    the server pads to 4 rows and infer runs alone, so its tile agrees within fp32 rounding."""
    inputs = {"scene": {"href": str(root / "chip.tif")}, "seed": 3, **QUICK, "generate": "DEM,S1RTC"}
    response = server.post("generate", inputs)
    assert response.status_code == 200, response.text
    item = response.json()["item"]
    served = _pixels(item)
    assert set(served) == {"chip_DEM_DEM.tif", "chip_S1RTC_VV_VH.tif"}
    assert all(
        Path(a["href"].removeprefix("file://")).is_relative_to(server.out) for a in item["assets"].values()
    )
    result = CliRunner().invoke(
        main,
        [
            "infer",
            str(root / "chip.tif"),
            *MODEL,
            "--preset",
            "draft",
            "--steps",
            "2",
            "--generate",
            "DEM,S1RTC",
            "--seed",
            "3",
            "--out",
            str(tmp_path),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    by_cli = {p.name: rasterio.open(p).read() for p in tmp_path.glob("*.tif")}
    assert served.keys() == by_cli.keys()
    for name in served:
        assert np.allclose(served[name], by_cli[name], rtol=1e-5, atol=1e-4, equal_nan=True), name
        top = served[name][:, :40], by_cli[name][:, :40]  # the top 400 m or more: no pixel of the last tile
        assert np.array_equal(*top, equal_nan=True), name


def test_owslib_async_progress_results_and_dismiss(server, root):
    from owslib.ogcapi.processes import Processes

    client = Processes(server.url)
    status = client.execute(
        "generate", {"scene": {"href": f"file://{root / 'chip.tif'}"}, **QUICK}, async_=True
    )
    assert status["status"] in ("accepted", "running", "successful")
    done = server.wait(status["jobID"])
    assert done["status"] == "successful" and done["progress"] == 100
    assert done["copgen:tiles_done"] == done["copgen:tiles_total"] == 9  # 3 x 3 Earth-anchored tiles
    assert done["copgen:network_calls"] == 6  # batches of 4, 4 and 1 tiles, 2 steps
    item = server.get(f"/jobs/{status['jobID']}/results").json()["item"]
    paths = [Path(a["href"].removeprefix("file://")) for a in item["assets"].values()]
    assert paths and all(p.is_file() for p in paths)
    assert status["jobID"] in {j["jobID"] for j in server.get("/jobs").json()["jobs"]}
    dismissed = server.delete(status["jobID"]).json()
    assert dismissed["status"] == "dismissed"
    assert not any(p.exists() for p in paths)
    assert server.get(f"/jobs/{status['jobID']}/results").status_code == 410


def test_dismiss_stops_a_running_job_at_its_next_network_call(server, root):
    job = server.post(
        "generate",
        {"scene": {"href": str(root / "tile.tif")}, "preset": "draft", "steps": 200},
        asynchronous=True,
    ).json()
    deadline = time.monotonic() + 30
    while server.get(f"/jobs/{job['jobID']}").json()["copgen:network_calls"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert server.delete(job["jobID"]).json()["status"] == "dismissed"
    folder = server.out / "jobs" / job["jobID"]
    while folder.exists():  # removed once its thread stopped
        assert time.monotonic() < deadline
        time.sleep(0.05)
    status = server.get(f"/jobs/{job['jobID']}").json()
    assert status["status"] == "dismissed" and status["copgen:network_calls"] < 200


def test_inline_geotiff_and_its_size_limit(server, root):
    inline = {
        "value": base64.b64encode((root / "tile.tif").read_bytes()).decode(),
        "mediaType": "image/tiff; application=geotiff",
    }
    response = server.post("generate", {"scene": inline, "seed": 5, **QUICK}, response="raw")
    assert response.status_code == 200, response.text
    by_href = server.post("generate", {"scene": {"href": str(root / "tile.tif")}, "seed": 5, **QUICK})
    assert _same(
        {k.split("_", 1)[1]: v for k, v in _pixels(response.json()).items()},
        {k.split("_", 1)[1]: v for k, v in _pixels(by_href.json()["item"]).items()},
    )
    too_big = {"value": "A" * 3_000_000, "mediaType": "image/tiff; application=geotiff"}
    refused = server.post("generate", {"scene": too_big})
    assert refused.status_code == 413 and "limit" in refused.json()["detail"]


def test_paths_outside_the_allowed_root_are_refused(server, root, tmp_path):
    outside = tmp_path / "outside.tif"
    shutil.copy(root / "tile.tif", outside)
    link = root / "link.tif"
    link.symlink_to(outside)
    fifo = root / "fifo.tif"
    os.mkfifo(fifo)
    try:
        cases = {
            str(outside): 403,
            str(link): 403,
            f"{root}/../{root.name}/tile.tif": 403,
            str(fifo): 403,
            "http://example.com/a.tif": 403,
            str(root / "missing.tif"): 400,
        }
        for href, code in cases.items():
            response = server.post("generate", {"scene": {"href": href}, **QUICK})
            assert response.status_code == code, (href, response.text)
            detail = response.json()["detail"]
            assert "\n" not in detail and detail.startswith("scene: ")
    finally:
        link.unlink()
        fifo.unlink()


def test_fill_keeps_the_valid_pixels(server, root):
    inputs = {
        "scene": {"href": str(root / "tile.tif")},
        "mask": {"href": str(root / "mask.tif")},
        "preset": "draft",
        "steps": 2,
    }
    response = server.post("fill", inputs)
    assert response.status_code == 200, response.text
    filled = _pixels(response.json()["item"])
    assert "tile_filled_S2L2A_B04_B03_B02_B08_generated.tif" in filled
    with rasterio.open(root / "tile.tif") as src:
        red = src.read(4)  # B04, the first band of the filled 10 m group (B04 B03 B02 B08)
    out = filled["tile_filled_S2L2A_B04_B03_B02_B08.tif"]
    generated = filled["tile_filled_S2L2A_B04_B03_B02_B08_generated.tif"][0].astype(bool)
    assert generated[96, 96] and not generated[0, 0]
    assert np.array_equal(out[0][~generated], red[~generated])


@pytest.mark.parametrize(
    "inputs, status, detail",
    [
        (
            {"scene": {"href": "tile.tif"}, "steps": 0},
            400,
            "steps: expected a whole number from 1 to 1000, got 0",
        ),
        ({"scene": {"href": "tile.tif"}, "colour": 1}, 400, "unknown input 'colour' of generate"),
        (
            {"scene": {"href": "tile.tif"}, "generate": "NOPE"},
            400,
            "--generate NOPE: not a modality or product",
        ),
        (
            {"scene": {"href": "tile.tif"}, "dtype": "bf16"},
            400,
            "dtype bf16: this server runs the denoiser in fp32",
        ),
        ({}, 400, "generate needs the input 'scene'"),
    ],
)
def test_bad_inputs_get_the_command_lines_one_line(server, inputs, status, detail):
    response = server.post("generate", inputs)
    assert response.status_code == status
    assert response.json()["detail"].startswith(detail), response.text


def test_eight_concurrent_jobs_equal_sequential_ones(server, root):
    """Concurrent jobs share packed network calls; each result is what it is alone, bit for bit."""
    inputs = [{"scene": {"href": str(root / "tile.tif")}, "seed": seed, **QUICK} for seed in range(8)]
    before = server.get("/").json()["copgen:network_calls"]
    jobs = [server.post("generate", i, asynchronous=True).json()["jobID"] for i in inputs]
    concurrent = [
        _pixels(server.get(f"/jobs/{j}/results").json()["item"])
        for j in jobs
        if server.wait(j)["status"] == "successful"
    ]
    after = server.get("/").json()["copgen:network_calls"]
    assert after["rows"] - before["rows"] == 8 * 9 * 2  # 8 jobs x 9 Earth-anchored tiles x 2 steps
    assert after["calls"] - before["calls"] < 8 * 3 * 2  # packed: fewer calls than the jobs made alone
    # (each alone: batches of 4, 4 and 1 tiles, 2 steps)
    sequential = []
    for i in inputs:
        response = server.post("generate", i)
        assert response.status_code == 200, response.text
        sequential.append(_pixels(response.json()["item"]))
    assert len(concurrent) == 8
    assert all(_same(c, s) for c, s in zip(concurrent, sequential, strict=True))
    assert not _same(concurrent[0], concurrent[1])  # the seeds differ: so do the results


def test_non_loopback_host_needs_a_token(tmp_path):
    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 3
    assert "--host 0.0.0.0 is reachable from other machines: give --token or --tokens" in result.output
    inside = CliRunner().invoke(
        main, ["serve", "--allow-root", str(tmp_path), "--out", str(tmp_path / "out")]
    )
    assert inside.exit_code == 3
    assert f"--out {tmp_path / 'out'} is inside --allow-root {tmp_path}" in inside.output


@pytest.fixture(scope="module")
def tokens_server(root, tmp_path_factory, export_cache):
    folder = tmp_path_factory.mktemp("serve-tokens")
    (folder / "tokens").write_text(f"alice {ALICE}\nbob {BOB}\n")
    args = ["--allow-root", str(root), "--tokens", str(folder / "tokens"), "--queue", "1", "--running", "1"]
    s = Server(folder / "out", args, token=ALICE)
    yield s
    s.stop()


def test_clients_see_only_their_own_jobs(tokens_server, root):
    assert tokens_server.get("/jobs", token="wrong-token-0123456789").status_code == 401
    assert requests.get(tokens_server.url + "/processes", timeout=10).status_code == 401
    job = tokens_server.post("generate", {"scene": {"href": str(root / "tile.tif")}, **QUICK}).headers[
        "Location"
    ]
    job_id = job.rsplit("/", 1)[1]
    assert job_id in {j["jobID"] for j in tokens_server.get("/jobs").json()["jobs"]}
    assert job_id not in {j["jobID"] for j in tokens_server.get("/jobs", token=BOB).json()["jobs"]}
    for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/results"):
        assert tokens_server.get(path, token=BOB).status_code == 404
    assert tokens_server.delete(job_id, token=BOB).status_code == 404
    assert tokens_server.get(f"/jobs/{job_id}/results").status_code == 200


def test_queue_limit_then_restart_keeps_finished_jobs_and_fails_running_ones(tokens_server, root):
    finished = tokens_server.post("generate", {"scene": {"href": str(root / "tile.tif")}, **QUICK})
    finished_id = finished.headers["Location"].rsplit("/", 1)[1]
    long = {"scene": {"href": str(root / "tile.tif")}, "preset": "draft", "steps": 500}
    running = tokens_server.post("generate", long, asynchronous=True).json()["jobID"]
    busy = tokens_server.post("generate", long, asynchronous=True)
    assert busy.status_code == 503 and int(busy.headers["Retry-After"]) > 0
    assert "--queue 1" in busy.json()["detail"]
    deadline = time.monotonic() + 30
    while tokens_server.get(f"/jobs/{running}").json()["copgen:network_calls"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    tokens_server.stop(signal.SIGKILL)  # a crash, mid-job
    restarted = Server(tokens_server.out, tokens_server.args, token=ALICE)
    try:
        jobs = {j["jobID"]: j for j in restarted.get("/jobs").json()["jobs"]}
        assert jobs[finished_id]["status"] == "successful"
        assert restarted.get(f"/jobs/{finished_id}/results").json()["item"] == finished.json()["item"]
        assert jobs[running]["status"] == "failed"
        assert jobs[running]["message"].startswith("the server stopped while this job was queued or running")
    finally:
        restarted.stop()


@pytest.mark.skipif(
    os.environ.get("COPGEN_RT_TEST_RAY_SERVE") != "1",
    reason="starts a local Ray runtime and Ray Serve (a minute): set COPGEN_RT_TEST_RAY_SERVE=1",
)
def test_ray_serve_deployment(server, root, tmp_path):
    """`--ray`: the same routes behind Ray Serve's HTTP proxy, the same pixels as the plain server."""
    on_ray = Server(
        tmp_path / "out", ["--ray", "--replicas", "1", "--cpus-per-replica", "1", "--allow-root", str(root)]
    )
    try:
        inputs = {"scene": {"href": str(root / "chip.tif")}, "seed": 11, **QUICK}
        response = on_ray.post("generate", inputs)
        assert response.status_code == 200, response.text
        assert _same(
            _pixels(response.json()["item"]), _pixels(server.post("generate", inputs).json()["item"])
        )
        job = on_ray.post(
            "generate",
            {"scene": {"href": str(root / "tile.tif")}, "preset": "draft", "steps": 300},
            asynchronous=True,
        ).json()["jobID"]
        deadline = time.monotonic() + 60
        while on_ray.get(f"/jobs/{job}").json()["copgen:network_calls"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert on_ray.delete(job).json()["status"] == "dismissed"
        while (on_ray.out / "jobs" / job).exists():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert on_ray.get(f"/jobs/{job}").json()["copgen:network_calls"] < 300
        assert {j["jobID"] for j in on_ray.get("/jobs").json()["jobs"]} >= {job}
    finally:
        on_ray.stop()


def test_batcher_packs_pads_and_shares_failures():
    """In process: waiting calls share one padded denoiser call and get back their own rows;
    a failing call fails every job in it with the same error."""
    import threading

    import torch

    from copgen_rt.serve.batcher import Batcher

    shapes = []

    def denoiser(latents, timesteps):
        shapes.append(tuple(latents[0].shape))
        if bool((timesteps[0] < 0).any()):
            raise RuntimeError("bad timestep")
        return [x * 2 + t.view(-1, 1) for x, t in zip(latents, timesteps, strict=True)]

    batcher = Batcher(denoiser, rows=4, pad=True, gather_s=5.0)
    lock = threading.Lock()
    for _ in range(2):
        batcher.join()
    try:
        futures = [batcher.submit([torch.full((1, 3), float(i))], [torch.tensor([10.0 * i])]) for i in (1, 2)]
        results = [f.result(10) for f in futures]
        assert shapes == [(4, 3)]  # one call: both jobs' rows and two zero rows
        assert torch.equal(results[0][0], torch.full((1, 3), 12.0))
        assert torch.equal(results[1][0], torch.full((1, 3), 24.0))
        assert (batcher.stats.calls, batcher.stats.rows, batcher.stats.padded) == (1, 2, 2)
        bad = [batcher.submit([torch.zeros(1, 3)], [torch.tensor([t])]) for t in (-1.0, 1.0)]
        for future in bad:
            with pytest.raises(RuntimeError, match="bad timestep"):
                future.result(10)
        dismissed = batcher.client(lambda: True, lock)
        lock.acquire()
        with pytest.raises(Exception, match="dismissed"):
            dismissed([torch.zeros(1, 3)], [torch.zeros(1)])
        lock.release()
    finally:
        batcher.close()
