"""`copgen-rt build-engines`: TensorRT engines for an ONNX export folder."""

from __future__ import annotations

from pathlib import Path

import click

from copgen_rt.cli.errors import friendly_errors
from copgen_rt.cli.options import parse_batch_range


@click.command("build-engines")
@click.argument("folder", type=click.Path(file_okay=False, exists=True))
@click.option("--dtype", "--precision", "precision", type=click.Choice(["fp32", "fp16", "bf16"]),
              default="fp16", show_default=True, help="engine precision; --precision is its old name")
@click.option("--batch", help="MIN:OPT:MAX (default: the export's)")
@friendly_errors
def command(folder, precision, batch):
    """Build TensorRT engines for an ONNX export folder (on the GPU that will run them)."""
    from copgen_rt.export.tensorrt import build_engines

    build_engines(Path(folder), precision, list(parse_batch_range(batch)) if batch else None,
                  log=lambda m: click.echo(m, err=True))
    click.echo(f"engines in {folder}")
