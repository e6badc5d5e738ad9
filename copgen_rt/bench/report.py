"""A bench run's reports: the JSON results, a markdown table per section and an SVG bar chart."""

from __future__ import annotations

import json
from pathlib import Path

from copgen_rt.bench.gemm import rate_ranges
from copgen_rt.files import write_text


def write_reports(results: dict, out_dir: Path) -> Path:
    """bench-<machine>.json, .md and .svg in `out_dir`; returns their common stem."""
    out_dir.mkdir(parents=True, exist_ok=True)
    env = results["environment"]
    stem = out_dir / f"bench-{env['machine']}"
    write_text(stem.with_suffix(".json"), json.dumps(results, indent=1) + "\n")
    gemm = results["gemm"]
    lines = [
        f"# copgen-rt bench ({env['cpu']}, {env['device']}, {env['threads']} threads)",
        "",
        f"Engines before measuring: {env['engine_choice']}. On CPUs `engine=\"auto\"` then runs the "
        "denoiser on the engine it measures fastest (below).",
        "",
        f"Machine load (shared machine; compare ratios within this run): before `{results['load_before']}`, "
        f"after `{results['load_after']}`.",
        "",
        "GEMM limit per precision (best of every engine at the shapes "
        f"{', '.join(f'{k} {v[0]}x{v[1]}x{v[2]}' for k, v in gemm['shapes'].items())}), GFLOP/s:",
        "",
        "| precision | limit | engine: min-max over shapes |",
        "|---|---|---|",
    ]
    for precision, engines in gemm["rates"].items():
        lines.append(f"| {precision} | {gemm['limits'][precision]:.0f} | {rate_ranges(engines)} |")
    lines += [
        "",
        f"numpy BLAS: {gemm.get('numpy_blas')}",
        "",
        "| spec | variant | precision | batch | ms | GFLOP/s | of limit | rel. err vs fp32 | build s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["denoiser"]:
        lines.append(
            f"| {r['spec']} | {r['variant']} | {r['precision']} | {r['batch']} | {r['ms']:.1f} | "
            f"{r['gflops']:.1f} | {r['fraction_of_limit']:.0%} | {r['rel_err_vs_fp32']:.1e} | "
            f"{r['build_s']:.1f} |"
        )
    lines += [
        "",
        "Calls per batch size (the automatic engine and the reference's default):",
        "",
        "| spec | variant | tiles per call | s per call | calls/s | tiles/s |",
        "|---|---|---|---|---|---|",
    ]
    for r in results.get("batches", []):
        lines.append(f"| {r['spec']} | {r['variant']} | {r['batch']} | {r['ms'] / 1e3:.3f} | "
                     f"{1e3 / r['ms']:.2f} | {r['batch'] * 1e3 / r['ms']:.2f} |")
    lines += ["", "What `engine=\"auto\"` measured on its 3-block copy of the model (s per call at batch 2; "
              "the chosen engine's s per tile by batch):", ""]
    for dtype, measured in results.get("tuning", {}).items():
        timed = ", ".join(f"{e} {s:.3f}" for e, s in measured["seconds"].items())
        per_tile = ", ".join(f"{b}: {s:.3f}" for b, s in measured["per_tile"].items())
        failed = "".join(f"; {e} could not run: {why}" for e, why in measured["failed"].items())
        failed += "".join(f"; {e} not measured: {why}" for e, why in measured.get("skipped", {}).items())
        lines.append(f"- {dtype}: **{measured['engine']}** ({timed}; per tile {per_tile}){failed}")
    lines += [
        "",
        "| spec | engine | preset | s/tile | vs auto exact | vs reference, same preset | "
        "drift from auto exact |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["presets"]:
        vs_ref = _times(r['speedup_vs_reference'])
        lines.append(
            f"| {r['spec']} | {r['engine']} | {r['preset']} | {r['seconds_per_tile']:.2f} | "
            f"{r['speedup_vs_auto_exact']:.2f}x | {vs_ref} | {r['drift_from_exact']:.1e} |"
        )
    lines += [
        "",
        "| scene | engine | tiles | wall s | network share | km2/s | vs reference | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["scenes"]:
        lines.append(
            f"| {r['side_px']} px ({r['spec']}, {r['preset']}) | {r['engine']} | {r['tiles']} | "
            f"{r['wall_s']:.1f} | {r['network_share']:.1%} | {r['km2_per_s']:.3f} | "
            f"{_times(r['speedup_vs_eager-reference'])} | {r['peak_rss_mb']:.0f} |"
        )
    lines += ["", "| target | measured | goal | |", "|---|---|---|---|"]
    for t in results.get("targets", []):
        lines.append(
            f"| {t['target']} | {t['value']:.2f}{t['unit']} | {t['goal']}{t['unit']} | "
            f"{'met' if t['met'] else '**missed**'} |"
        )
    lines += [""] + [f"Note: {note}" for note in results.get("notes", [])]
    write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    write_text(stem.with_suffix(".svg"), _svg_bars(results["denoiser"]))
    return stem


def _times(ratio: float | None) -> str:
    return f"{ratio:.2f}x" if ratio is not None else "-"


def _svg_bars(rows: list[dict]) -> str:
    """Fraction of the GEMM limit per (spec, variant, batch) as a horizontal bar chart."""
    height = 22 * len(rows) + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="760" height="{height}" font-family="sans-serif" '
        'font-size="12">',
        '<text x="10" y="18">denoiser forward: fraction of the GEMM limit of its precision</text>',
    ]
    for i, r in enumerate(rows):
        y = 30 + 22 * i
        width = max(1.0, 400 * min(r["fraction_of_limit"], 1.5))
        parts.append(f'<text x="10" y="{y + 14}">{r["spec"]} {r["variant"]} b{r["batch"]}</text>')
        parts.append(f'<rect x="320" y="{y}" width="{width:.0f}" height="16" fill="#4a7ab5"/>')
        parts.append(f'<text x="{325 + width:.0f}" y="{y + 13}">{r["fraction_of_limit"]:.0%}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
