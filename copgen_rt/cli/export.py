"""`copgen-rt export`: the denoiser and each VAE encoder/decoder to ONNX (and TensorRT engines)."""

from __future__ import annotations

from pathlib import Path

import click

from copgen_rt.cli.errors import friendly_errors
from copgen_rt.cli.options import parse_batch_range, spec_json_option
from copgen_rt.options import ModelOptions
from copgen_rt.scenes.state import refuse_existing


@click.command("export")
@click.option("--model", "--spec", "model", default=None,
              help="model spec (default: copgen-demo without --weights, copgen-base with)")
@spec_json_option
@click.option("--weights", help="weights directory or hub id (default: the bundled random demo model)")
@click.option("--format", "fmt", type=click.Choice(["onnx", "tensorrt"]), default="onnx", show_default=True)
@click.option("--dtype", "--precision", "precision", type=click.Choice(["fp32", "fp16", "bf16", "int8"]),
              default="fp32", show_default=True,
              help="engine precision (ONNX graphs are fp32; fp16/bf16 apply to TensorRT engines; int8 "
                   "writes a Q/DQ denoiser calibrated on a draft run, docs/gpu.md); --precision is its "
                   "old name")
@click.option("--batch", default="1:4:16", show_default=True, help="dynamic batch MIN:OPT:MAX")
@click.option("--modalities", help="VAEs to export (default: every VAE found), comma-separated")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True)
@friendly_errors
def command(model, spec_json, weights, fmt, precision, batch, modalities, out, overwrite):
    """Export the denoiser and each VAE encoder/decoder to ONNX (and TensorRT engines)."""
    from copgen_rt import demo
    from copgen_rt.export.onnx import export_weights, require_onnx
    from copgen_rt.export.tensorrt import build_engines, build_plan, require_tensorrt
    from copgen_rt.files import output_folder
    from copgen_rt.weights import resolve_weights

    batch_range = parse_batch_range(batch)
    if fmt == "onnx" and precision not in ("fp32", "int8"):
        raise ValueError("ONNX graphs are exported in fp32 (or int8 Q/DQ); use --format tensorrt for "
                         "fp16/bf16 engines")
    if fmt == "tensorrt":
        require_tensorrt()  # fail before the (long) export
    spec = ModelOptions(model, spec_json, weights).spec()
    refuse_existing([Path(out) / "manifest.json"], overwrite)
    require_onnx()  # before anything is made in --out
    for folder in ("vae_encoder", "vae_decoder"):  # a link planted there is refused before the export
        output_folder(Path(out) / folder, below=Path(out))
    files = resolve_weights(spec, weights or demo.demo_weights())
    names = [m.strip() for m in modalities.split(",")] if modalities else None
    manifest = export_weights(spec, files, Path(out), names, batch_range,
                              progress=lambda name: click.echo(f"exporting {name}", err=True))
    if precision == "int8":
        from copgen_rt.export.int8 import export_int8

        manifest = export_int8(spec, weights or demo.demo_weights(), Path(out), manifest)
    manifest.tensorrt = build_plan(manifest, "fp32" if fmt == "onnx" and precision != "int8" else precision,
                                   list(batch_range))
    manifest.save(Path(out))
    for c in manifest.components:
        reference = c.parity.get("reference", "torch")
        click.echo(f"{c.file}: parity {c.parity.get('max_rel_err', float('nan')):.1e} vs {reference}")
    if fmt == "tensorrt":
        build_engines(Path(out), precision, list(batch_range), log=lambda m: click.echo(m, err=True))
    click.echo(f"wrote {out}")
