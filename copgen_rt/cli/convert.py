"""`copgen-rt convert`: check released checkpoints strictly and write them as safetensors."""

from __future__ import annotations

from pathlib import Path

import click

from copgen_rt.cli.errors import friendly_errors
from copgen_rt.cli.options import model_option, spec_json_option
from copgen_rt.options import resolve_spec
from copgen_rt.scenes.state import refuse_existing


@click.command("convert")
@model_option
@spec_json_option
@click.option("--weights", required=True, help="weights directory (released layout) or hub id")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), help="cast (default: keep)")
@click.option("--overwrite", is_flag=True)
@friendly_errors
def command(model, spec_json, weights, out, dtype, overwrite):
    """Check released checkpoints strictly against the spec and write them as safetensors."""
    from copgen_rt.weights import convert, parse_dtype

    spec = resolve_spec(model, spec_json)
    refuse_existing([Path(out) / "weights.json"], overwrite)
    convert(spec, weights, out, parse_dtype(dtype) if dtype else None)
    click.echo(f"wrote {out}")
