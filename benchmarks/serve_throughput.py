"""Tiles/s of `copgen-rt serve` with 1, 4 and 16 concurrent clients against the batch command
line's path on the same machine and model, and each job's latency (p50/p95).

    python benchmarks/serve_throughput.py [--scene tile|chip] [--batch-size 4] [--jobs-per-client 2]
                                           [--engine torch --dtype fp32] [--no-pad] [--tag NAME]

The scene is the bundled chip (`chip`: 4 tiles) or its top-left footprint (`tile`: 1 tile, where
packing across requests matters most). Every job runs the `draft` preset with its own seed.

- command line: the path `copgen-rt infer` runs per scene once the model is loaded (`run_scene`
  on one pipeline, scenes one after another, as a many-scene `infer` does), in this process;
  model loading is not counted.
- server: `copgen-rt serve` as a subprocess with the same model options, warmed up with one job;
  each client posts synchronous executions one after another over HTTP on loopback. The time of
  a level is from the first request to the last answer (HTTP, queueing, reading and writing
  included).

Writes benchmarks/results/serve-throughput-CPU-SCENE[-TAG].{json,md}. Shared machines move
timings: compare ratios within one run, and see the load line in the results.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from copgen_rt import demo
from copgen_rt.bench.environment import cpu_tag, machine_load
from copgen_rt.device import cpu_name
from copgen_rt.files import write_text
from copgen_rt.options import ModelOptions
from copgen_rt.scenes.job import SceneJob, SceneOptions, SceneRequest
from copgen_rt.scenes.run import run_scene

OUT = Path(__file__).parent / "results"
CLIENTS = (1, 4, 16)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def level(name: str, tiles: int, wall: float, latencies: list[float]) -> dict:
    return {
        "name": name,
        "jobs": len(latencies),
        "tiles": tiles,
        "seconds": wall,
        "tiles_per_s": tiles / wall,
        "p50_s": statistics.median(latencies),
        "p95_s": percentile(latencies, 0.95),
    }


def command_line(scene: Path, jobs: int, args: argparse.Namespace, work: Path) -> dict:
    options = ModelOptions(engine=args.engine, dtype=args.dtype)
    spec = options.spec()
    pipeline = options.load(spec, options.plan(spec, args.batch_size))
    def plan(seed: int) -> SceneJob:
        request = SceneRequest(SceneOptions(preset="draft", seed=seed))
        return request.job(spec, str(scene), [], work / f"cli-{seed}", args.batch_size)

    run_scene(plan(-1), pipeline)  # warm-up (engines compile per batch shape)
    latencies, tiles = [], 0
    start = time.perf_counter()
    for seed in range(jobs):
        t0 = time.perf_counter()
        result = run_scene(plan(seed), pipeline)
        latencies.append(time.perf_counter() - t0)
        tiles += result.tiles
    return level(
        "command line (run_scene, one scene after another)", tiles, time.perf_counter() - start, latencies
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_levels(scene: Path, args: argparse.Namespace, work: Path) -> list[dict]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    model = [
        o for name in ("engine", "dtype") if getattr(args, name) for o in (f"--{name}", getattr(args, name))
    ]
    command = [
        sys.executable,
        "-m",
        "copgen_rt",
        "serve",
        *model,
        "--batch-size",
        str(args.batch_size),
        "--port",
        str(port),
        "--out",
        str(work / "serve"),
        "--allow-root",
        str(scene.parent),
        "--running",
        str(max(CLIENTS)),
        "--queue",
        str(4 * max(CLIENTS)),
    ]
    if args.no_pad:
        command.append("--no-pad")
    log = open(work / "serve.log", "wb")  # noqa: SIM115 - open while the server runs
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:
            if server.poll() is not None:
                raise SystemExit(f"the server exited: {(work / 'serve.log').read_text()}")
            try:
                requests.get(url + "/conformance", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.2)

        def run(seed: int) -> tuple[float, int]:
            t0 = time.perf_counter()
            response = requests.post(
                f"{url}/processes/generate/execution",
                timeout=3600,
                json={"inputs": {"scene": {"href": str(scene)}, "preset": "draft", "seed": seed}},
            )
            response.raise_for_status()
            status = requests.get(response.headers["Location"], timeout=60).json()
            return time.perf_counter() - t0, status["copgen:tiles_total"]

        run(-1)  # warm-up
        levels = []
        for clients in CLIENTS:
            jobs = clients * args.jobs_per_client
            before = requests.get(url + "/", timeout=60).json()["copgen:network_calls"]
            start = time.perf_counter()
            with cf.ThreadPoolExecutor(clients) as pool:
                results = list(pool.map(run, range(jobs)))
            wall = time.perf_counter() - start
            after = requests.get(url + "/", timeout=60).json()["copgen:network_calls"]
            entry = level(
                f"server, {clients} clients", sum(t for _, t in results), wall, [s for s, _ in results]
            )
            entry["network_calls"] = after["calls"] - before["calls"]
            entry["rows_per_call"] = (after["rows"] - before["rows"]) / max(1, entry["network_calls"])
            levels.append(entry)
            print(
                f"{entry['name']}: {entry['tiles_per_s']:.3f} tiles/s, p50 {entry['p50_s']:.2f} s, "
                f"p95 {entry['p95_s']:.2f} s, {entry['rows_per_call']:.2f} rows per call",
                flush=True,
            )
        return levels
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(30)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", choices=["tile", "chip"], default="tile")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--jobs-per-client", type=int, default=2)
    parser.add_argument("--engine")
    parser.add_argument("--dtype")
    parser.add_argument("--no-pad", action="store_true")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        scene = demo.write_tile(work / "tile.tif") if args.scene == "tile" else demo.chip_path()
        baseline = command_line(scene, max(CLIENTS) * args.jobs_per_client // 4, args, work)
        print(f"{baseline['name']}: {baseline['tiles_per_s']:.3f} tiles/s", flush=True)
        levels = server_levels(Path(scene), args, work)
    name = f"serve-throughput-{cpu_tag()}-{args.scene}" + (f"-{args.tag}" if args.tag else "")
    report = {
        "cpu": cpu_name(),
        "load": machine_load(),
        "scene": args.scene,
        "preset": "draft",
        "batch_size": args.batch_size,
        "engine": args.engine or "auto",
        "dtype": args.dtype or "auto",
        "pad": not args.no_pad,
        "command_line": baseline,
        "server": levels,
    }
    OUT.mkdir(exist_ok=True)
    write_text(OUT / f"{name}.json", json.dumps(report, indent=1) + "\n")
    lines = [
        f"`copgen-rt serve` against the command line's path, {cpu_name()}, demo model, {args.scene} scene, "
        f"draft, batch {args.batch_size}, engine {report['engine']}/{report['dtype']}, "
        f"{'padded' if report['pad'] else 'unpadded'} calls. Load: {report['load']}",
        "",
        "| run | jobs | tiles/s | vs command line | p50 latency s | p95 latency s | rows per call |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in [baseline, *levels]:
        lines.append(
            f"| {entry['name']} | {entry['jobs']} | {entry['tiles_per_s']:.3f} | "
            f"{entry['tiles_per_s'] / baseline['tiles_per_s']:.2f}x | {entry['p50_s']:.2f} | "
            f"{entry['p95_s']:.2f} | {entry.get('rows_per_call', float('nan')):.2f} |"
        )
    write_text(OUT / f"{name}.md", "\n".join(lines) + "\n")
    print(OUT / f"{name}.md")


if __name__ == "__main__":
    main()
