"""Which CPU engine is fastest on this machine kind, and at which batch (issue 23, items 2 and 4).

    python benchmarks/engines_by_batch.py [--spec copgen-base] [--rounds 3]

One process, random weights, every variant interleaved round by round (medians):
1. one denoiser call at batch 2 on each engine `backend="auto"` chooses among (OpenVINO,
   torch.compile, eager torch) against the reference's own execution (fp32 weights under bf16
   autocast, its CPU default; and plain fp32), at the native low precision and at fp32;
2. what `copgen_rt.tuning` measures on its 3-block copy of the model for the same choice, so that
   the two rankings can be compared;
3. calls per second and tiles per second at 1, 2, 4 and 8 tiles per call for the engine auto
   chooses here and for the reference's default, with the scene runner's memory cap.
Writes benchmarks/results/engines-by-batch-<cpu>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from copgen_rt import specs, tuning
from copgen_rt.backends import DenoiserBackend, scratch_denoiser
from copgen_rt.backends.torch_backend import ReferenceStyleDenoiser
from copgen_rt.device import choose, choose_engine, cpu_kind, memory_batch_limit
from copgen_rt.files import write_text
from copgen_rt.models import Denoiser

RESULTS = Path(__file__).parent / "results"


def timed(variants: dict[str, DenoiserBackend], feeds: dict[str, tuple], rounds: int) -> dict[str, float]:
    """Median seconds per call of each variant on its feed, one call each per round, after a warm-up."""
    for name, backend in variants.items():
        backend(*feeds[name])
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, backend in variants.items():
            start = time.perf_counter()
            backend(*feeds[name])
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="copgen-base")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    spec = specs.get(args.spec)
    low = choose("cpu").dtype
    precisions = [p for p in dict.fromkeys([low, "fp32"])]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Denoiser(spec).eval().requires_grad_(False)
    scratch = Path(tempfile.mkdtemp(prefix="copgen-engines-"))
    report: dict = {"cpu_kind": cpu_kind(), "spec": spec.name, "torch": str(torch.__version__),
                    "engines_batch": tuning.ENGINE_BATCH, "engines": {}, "short_model": {}, "batches": {}}

    variants: dict[str, DenoiserBackend] = {}
    for precision in precisions:
        variants[f"reference {'bf16 autocast' if precision == 'bf16' else 'fp32'}"] = ReferenceStyleDenoiser(
            model, "autocast" if precision == "bf16" else "fp32")
        for engine in choose_engine("cpu", dtype=precision).candidates:
            folder = scratch / f"{engine}-{precision}"
            folder.mkdir()
            variants[f"{engine} {precision}"] = scratch_denoiser(engine, spec, model, precision, folder)
    feed = tuning.random_inputs(spec, tuning.ENGINE_BATCH)
    report["engines"] = timed(variants, dict.fromkeys(variants, feed), args.rounds)
    print(json.dumps(report["engines"], indent=1), flush=True)

    for precision in precisions:
        measured = tuning.measure(spec, precision, choose_engine("cpu", dtype=precision).candidates)
        report["short_model"][precision] = measured.to_json()
    print(json.dumps(report["short_model"], indent=1), flush=True)

    chosen = report["short_model"][low]["engine"]
    sweep = {f"{chosen} {low}": variants[f"{chosen} {low}"],
             "reference bf16 autocast" if low == "bf16" else "reference fp32":
                 variants["reference bf16 autocast" if low == "bf16" else "reference fp32"]}
    feeds = {b: tuning.random_inputs(spec, b) for b in tuning.BATCHES}
    for b in tuning.BATCHES:
        seconds = timed(sweep, dict.fromkeys(sweep, feeds[b]), args.rounds)
        report["batches"][b] = {name: {"seconds_per_call": s, "calls_per_s": 1 / s, "tiles_per_s": b / s}
                                for name, s in seconds.items()}
        print(b, json.dumps(report["batches"][b]), flush=True)
    report["memory_batch_limit"] = memory_batch_limit(spec, "cpu")
    write(report)


def write(report: dict) -> None:
    tag = "".join(c if c.isalnum() else "-" for c in report["cpu_kind"].split(" | ")[0]).strip("-").lower()
    stem = RESULTS / f"engines-by-batch-{tag}"
    write_text(stem.with_suffix(".json"), json.dumps(report, indent=1) + "\n")
    ref = {p: report["engines"][f"reference {'bf16 autocast' if p == 'bf16' else 'fp32'}"]
           for p in ("bf16", "fp32") if f"reference {'bf16 autocast' if p == 'bf16' else 'fp32'}"
           in report["engines"]}
    lines = [f"# Engines and batch sizes: {report['spec']}, {report['cpu_kind']}", "",
             f"One denoiser call at batch {report['engines_batch']}, random weights, interleaved, "
             "medians.", "",
             "| variant | s per call | vs the reference at its precision |", "|---|---|---|"]
    for name, s in sorted(report["engines"].items(), key=lambda item: item[1]):
        precision = "bf16" if "bf16" in name else "fp32"
        lines.append(f"| {name} | {s:.3f} | {ref[precision] / s:.2f}x |")
    lines += ["", "The tuner's 3-block copy of the model (what `backend=\"auto\"` decides on):", "",
              "| precision | chosen | s per short call |", "|---|---|---|"]
    for precision, measured in report["short_model"].items():
        timings = ", ".join(f"{e} {s:.3f}" for e, s in measured["seconds"].items())
        lines.append(f"| {precision} | {measured['engine']} | {timings} |")
    lines += ["", f"Batch sweep (memory cap of the scene runner here: {report['memory_batch_limit']}):", "",
              "| tiles per call | variant | s per call | calls/s | tiles/s |", "|---|---|---|---|---|"]
    for b, rows in report["batches"].items():
        for name, row in rows.items():
            lines.append(f"| {b} | {name} | {row['seconds_per_call']:.3f} | {row['calls_per_s']:.2f} | "
                         f"{row['tiles_per_s']:.2f} |")
    write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    print(stem.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
