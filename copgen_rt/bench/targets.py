"""The issue-18 targets, each checked against what a bench run measured."""

from __future__ import annotations

from copgen_rt.bench.calls import auto_variant


def check_targets(results: dict, device: str) -> list[dict]:
    """The issue-18 targets, each with its measured value: met or missed."""
    from copgen_rt.backends.openvino_backend import STATIC_BATCH_PRECISIONS

    base = {r["variant"]: r for r in results["denoiser"] if r["spec"] == "copgen-base"}
    auto = auto_variant(device)
    targets = []

    def add(name: str, value: float | None, goal: float, unit: str = "x") -> None:
        if value is not None:
            targets.append({"target": name, "value": value, "goal": goal, "met": value >= goal, "unit": unit})

    ratio = lambda a, b: base[b]["ms"] / base[a]["ms"] if a in base and b in base else None  # noqa: E731
    add(
        f"automatic engine ({auto}) vs the reference's CPU default, per call",
        ratio(auto, "eager-reference"),
        1.5,
    )
    if auto in base:
        add(
            "automatic engine, fraction of the same precision's GEMM limit",
            base[auto]["fraction_of_limit"],
            0.85,
            "",
        )
    fp32 = "openvino-fp32" + ("-static" if "fp32" in STATIC_BATCH_PRECISIONS else "")
    add(f"fp32 ({fp32}) vs the reference's fp32, per call", ratio(fp32, "eager-reference-fp32"), 1.8)
    scenes = results.get("scenes", [])
    for row in (r for r in scenes if r["engine"] == "auto"):
        add(
            f"scene {row['side_px']} px, automatic engine vs reference-style eager, km2/s",
            row.get("speedup_vs_eager-reference"),
            1.4,
        )
        add(
            f"scene {row['side_px']} px, automatic engine, share of wall time in network calls",
            row["network_share"],
            0.95,
            "",
        )
    later = [r for r in scenes if r["engine"] == "auto"][1:]
    if later and later[0].get("compiles") is not None:
        targets.append(
            {
                "target": "a second run compiles nothing (compiles in the second auto scene process)",
                "value": later[0]["compiles"],
                "goal": 0,
                "met": later[0]["compiles"] == 0,
                "unit": "",
            }
        )
    return targets
