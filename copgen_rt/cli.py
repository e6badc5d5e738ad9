"""The `copgen-rt` command line: thin wrappers over the Python API."""

from __future__ import annotations

import functools
import sys
import warnings
from pathlib import Path

import click

from copgen_rt import specs

# distinct exit codes, documented in the README
EXIT_INPUT, EXIT_CHECKPOINT, EXIT_OUTPUT_EXISTS, EXIT_INTERNAL = 3, 4, 5, 1


class OutputExistsError(Exception):
    pass


def _fail(code: int, message: str):
    click.echo(f"copgen-rt: error: {message}", err=True)
    sys.exit(code)


def friendly_errors(fn):
    """One line and a distinct exit code for every expected failure; no tracebacks."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from copgen_rt.weights import CheckpointError

        try:
            return fn(*args, **kwargs)
        except CheckpointError as e:
            _fail(EXIT_CHECKPOINT, str(e))
        except OutputExistsError as e:
            _fail(EXIT_OUTPUT_EXISTS, str(e))
        except (ValueError, KeyError, FileNotFoundError, IsADirectoryError, PermissionError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            _fail(EXIT_INPUT, str(msg).splitlines()[0] if str(msg) else type(e).__name__)
        except MemoryError:
            _fail(EXIT_INTERNAL, "out of memory: lower --batch-size")
        except KeyboardInterrupt:
            _fail(130, "interrupted")
        except Exception as e:  # noqa: BLE001 - last resort, still one line
            if "--debug" in sys.argv or _debug():
                raise
            first = str(e).splitlines()[0] if str(e) else ""
            _fail(EXIT_INTERNAL, f"internal error: {type(e).__name__}: {first} (set COPGEN_RT_DEBUG=1 for a traceback)")

    return wrapper


def _debug() -> bool:
    import os

    return os.environ.get("COPGEN_RT_DEBUG") == "1"


def resolve_spec(model: str, spec_json: str | None) -> specs.ModelSpec:
    if spec_json:
        return specs.from_json(spec_json)
    return specs.get(model)


model_option = click.option("--model", "--spec", "model", default="copgen-base", show_default=True,
                            help=f"model spec: {', '.join(specs.names())}")
spec_json_option = click.option("--spec-json", type=click.Path(dir_okay=False),
                                help="a custom spec.json (fixture format) instead of --model")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="copgen-rt")
def main():
    """copgen-rt: run COP-GEN multimodal Copernicus generation in production."""
    warnings.simplefilter("default")


@main.command("info")
@model_option
@spec_json_option
@friendly_errors
def info_cmd(model: str, spec_json: str | None):
    """Print the modality table of a model spec."""
    spec = resolve_spec(model, spec_json)
    click.echo(describe_spec(spec))


def describe_spec(spec: specs.ModelSpec) -> str:
    d = spec.denoiser
    lines = [f"{spec.name} ({spec.family}): embed {d.embed_dim}, depth {d.depth}, {d.num_heads} heads, "
             f"{spec.num_tokens} tokens",
             f"{'#':>2}  {'modality':<30} {'bands / classes':<28} {'GSD':>5} {'pixels':<12} "
             f"{'latent':<10} {'tokens':>6}"]
    for i, m in enumerate(spec.modalities):
        p = m.processing
        content = ",".join(m.bands) if m.bands else (
            f"{len(p.codes)} classes" if isinstance(p, specs.Classes) else p.units)
        gsd = f"{m.gsd:g}m" if m.gsd else "-"
        pix = "x".join(map(str, spec.pixel_shape(m.name)))
        lat = "x".join(map(str, m.latent_shape))
        lines.append(f"{i:>2}  {m.name:<30} {content:<28} {gsd:>5} {pix:<12} {lat:<10} {m.num_tokens:>6}")
    return "\n".join(lines)


@main.command("make-random-weights")
@model_option
@spec_json_option
@click.option("--out", required=True, type=click.Path(file_okay=False), help="output directory")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--dtype", default="fp32", show_default=True, type=click.Choice(["fp32", "fp16", "bf16"]))
@click.option("--overwrite", is_flag=True, help="replace existing files in --out")
@friendly_errors
def make_random_weights_cmd(model, spec_json, out, seed, dtype, overwrite):
    """Write a synthetic checkpoint set with the real shapes, marked random (benchmarks, demos)."""
    from copgen_rt.weights import make_random_weights, parse_dtype

    spec = resolve_spec(model, spec_json)
    _refuse_existing(Path(out) / "weights.json", overwrite)
    make_random_weights(spec, out, seed=seed, dtype=parse_dtype(dtype))
    click.echo(f"wrote random {spec.name} weights to {out} (marked random: outputs will say so)")


@main.command("convert")
@model_option
@spec_json_option
@click.option("--weights", required=True, help="weights directory (released layout) or hub id")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), help="cast (default: keep)")
@click.option("--overwrite", is_flag=True)
@friendly_errors
def convert_cmd(model, spec_json, weights, out, dtype, overwrite):
    """Check released checkpoints strictly against the spec and write them as safetensors."""
    from copgen_rt.weights import convert, parse_dtype

    spec = resolve_spec(model, spec_json)
    _refuse_existing(Path(out) / "weights.json", overwrite)
    convert(spec, weights, out, parse_dtype(dtype) if dtype else None)
    click.echo(f"wrote {out}")


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
