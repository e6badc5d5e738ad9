"""`copgen-rt make-random-weights`: write a synthetic checkpoint set with the real shapes, marked random."""

from __future__ import annotations

from pathlib import Path

import click

from copgen_rt.cli.errors import friendly_errors
from copgen_rt.cli.options import model_option, spec_json_option
from copgen_rt.options import resolve_spec
from copgen_rt.scenes.state import refuse_existing


@click.command("make-random-weights")
@model_option
@spec_json_option
@click.option("--out", required=True, type=click.Path(file_okay=False), help="output directory")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--dtype", default="fp32", show_default=True, type=click.Choice(["fp32", "fp16", "bf16"]))
@click.option("--overwrite", is_flag=True, help="replace existing files in --out")
@friendly_errors
def command(model, spec_json, out, seed, dtype, overwrite):
    """Write a synthetic checkpoint set with the real shapes, marked random (benchmarks, demos)."""
    from copgen_rt.weights import make_random_weights, parse_dtype

    spec = resolve_spec(model, spec_json)
    refuse_existing([Path(out) / "weights.json"], overwrite)
    make_random_weights(spec, out, seed=seed, dtype=parse_dtype(dtype))
    click.echo(f"wrote random {spec.name} weights to {out} (marked random: outputs will say so)")
