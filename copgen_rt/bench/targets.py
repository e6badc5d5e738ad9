"""The targets of issues 18 and 23, each checked against what a bench run measured."""

from __future__ import annotations

from copgen_rt import specs, tuning
from copgen_rt.bench.calls import auto_variant
from copgen_rt.device import choose_engine


def check_targets(results: dict, device: str) -> list[dict]:
    """Each target with its measured value: met or missed (per-call ones where copgen-base ran)."""
    targets: list[dict] = []

    def add(name: str, value: float | None, goal: float, unit: str = "x") -> None:
        if value is not None:
            targets.append({"target": name, "value": value, "goal": goal, "met": value >= goal, "unit": unit})

    spec = specs.get("copgen-base")
    base = {r["variant"]: r for r in results["denoiser"] if r["spec"] == spec.name}
    if base:
        auto, fp32 = auto_variant(device, spec), auto_variant(device, spec, "fp32")
        ratio = lambda a, b: base[b]["ms"] / base[a]["ms"] if a in base and b in base else None  # noqa: E731
        add(f"automatic engine ({auto}) vs the reference's CPU default, per call",
            ratio(auto, "eager-reference"), 1.5)
        if auto in base:
            add("automatic engine, fraction of the same precision's GEMM limit",
                base[auto]["fraction_of_limit"], 0.85, "")
        add(f"fp32 ({fp32}) vs the reference's fp32, per call", ratio(fp32, "eager-reference-fp32"), 1.8)
        per_tile = {r["batch"]: r["ms"] / r["batch"] for r in results.get("batches", [])
                    if r["spec"] == spec.name and r["variant"] == auto}
        measured = tuning.measured_choice(spec, choose_engine(device), measure=False)[1]
        batch = tuning.default_batch_size(spec, device, measured)
        if batch in per_tile:
            add(f"the default batch ({batch} tiles per call) vs the fastest measured, tiles per second",
                min(per_tile.values()) / per_tile[batch], 0.95, "")
    scenes = [r for r in results.get("scenes", []) if r["engine"] == "auto"]
    for row in scenes:
        add(f"scene {row['side_px']} px, automatic engine vs reference-style eager, km2/s",
            row.get("speedup_vs_eager-reference"), 1.4)
        add(f"scene {row['side_px']} px, automatic engine, share of wall time in network calls",
            row["network_share"], 0.95, "")
    if len(scenes) > 1 and scenes[1].get("compiles") is not None:
        targets.append({"target": "a second run compiles nothing (compiles in the second auto scene process)",
                        "value": scenes[1]["compiles"], "goal": 0, "met": scenes[1]["compiles"] == 0,
                        "unit": ""})
    return targets
