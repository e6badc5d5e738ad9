"""`copgen-rt bench`: GEMM limits, denoiser calls per engine and precision, presets and scenes."""

from __future__ import annotations

from pathlib import Path

import click

from copgen_rt.cli.errors import friendly_errors


@click.command("bench")
@click.option("--device", default=None, help="cpu or cuda (default: cuda if available)")
@click.option("--quick", is_flag=True, help="a smoke run on the tiny model (seconds)")
@click.option("--base-only", is_flag=True, help="skip the tiny and mid-size per-call tables")
@click.option("--out", default="benchmarks/results", show_default=True, type=click.Path(file_okay=False))
@friendly_errors
def command(device, quick, base_only, out):
    """Measure GEMM limits, denoiser calls per engine/precision, presets and scenes on this machine."""
    from copgen_rt import bench
    from copgen_rt.device import choose

    results = bench.run(Path(out), device=choose(device).device, quick=quick, base_only=base_only,
                        log=lambda line: click.echo(line, err=True))
    click.echo(str(bench.write_reports(results, Path(out)).with_suffix(".md")))
