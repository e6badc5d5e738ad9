"""`copgen-rt serve`: `generate` and `fill` over OGC API - Processes, one loaded model shared by
many processing chains (copgen_rt.serve; docs/serve.md)."""

from __future__ import annotations

from pathlib import Path

import click

from copgen_rt.cli.errors import friendly_errors
from copgen_rt.cli.options import (
    MAX_ENGINE_BATCH,
    device_option,
    dtype_option,
    engine_option,
    export_option,
    run_model_option,
    spec_json_option,
    weights_option,
)


@click.command("serve")
@run_model_option
@spec_json_option
@weights_option
@export_option
@engine_option
@device_option
@dtype_option
@click.option(
    "--batch-size",
    type=click.IntRange(1, MAX_ENGINE_BATCH),
    help="tiles per network call, packed across jobs (default: as infer's)",
)
@click.option(
    "--no-pad",
    is_flag=True,
    help="run partly filled network calls at their own size: faster when few jobs run, but a "
    "job's fp32 result then depends on what shares its calls, up to rounding",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="address to listen on; anything but loopback needs --token or --tokens",
)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--out",
    default="copgen-serve",
    show_default=True,
    type=click.Path(file_okay=False),
    help="where jobs write their outputs (OUT/jobs/JOB_ID) and the job store",
)
@click.option(
    "--allow-root",
    "allow_roots",
    multiple=True,
    type=click.Path(file_okay=False, exists=True),
    help="a folder whose files clients may name as inputs (repeatable; default: none, inline only)",
)
@click.option(
    "--token",
    envvar="COPGEN_RT_SERVE_TOKEN",
    help="bearer token every client must send (or COPGEN_RT_SERVE_TOKEN)",
)
@click.option(
    "--tokens",
    "tokens_file",
    type=click.Path(dir_okay=False),
    help="per-client tokens, one 'NAME TOKEN' per line: a client sees only its own jobs",
)
@click.option(
    "--max-upload",
    default=16 << 20,
    show_default=True,
    type=click.IntRange(0),
    help="largest inline GeoTIFF in bytes",
)
@click.option(
    "--running",
    default=8,
    show_default=True,
    type=click.IntRange(1, 1024),
    help="jobs sampling at once (their network calls packed together)",
)
@click.option(
    "--queue",
    default=32,
    show_default=True,
    type=click.IntRange(1),
    help="jobs queued or running at once; past it, 503 with Retry-After",
)
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    metavar="[ADDRESS]",
    help="serve from Ray Serve replicas: a local runtime, or the cluster at ADDRESS (HOST:PORT or auto)",
)
@click.option(
    "--replicas",
    type=click.IntRange(1),
    help="with --ray (default: one per GPU of the cluster, else one per --cpus-per-replica cores)",
)
@click.option(
    "--cpus-per-replica",
    default=4,
    show_default=True,
    type=click.IntRange(1),
    help="with --ray and no GPU: CPU cores per replica",
)
@friendly_errors
def command(
    model,
    spec_json,
    weights,
    export,
    engine,
    device,
    dtype,
    batch_size,
    no_pad,
    host,
    port,
    out,
    allow_roots,
    token,
    tokens_file,
    max_upload,
    running,
    queue,
    ray_address,
    replicas,
    cpus_per_replica,
):
    """Serve `generate` (infer, one scene) and `fill` over OGC API - Processes (docs/serve.md)."""
    try:
        import uvicorn
    except ImportError:
        raise ImportError("copgen-rt serve needs the serve extra: pip install 'copgen-rt[serve]'") from None

    from copgen_rt.files import check_writable
    from copgen_rt.options import ModelOptions
    from copgen_rt.serve.app import create_app
    from copgen_rt.serve.auth import Tokens, is_loopback
    from copgen_rt.serve.service import ServeSettings, Service

    tokens = Tokens.of(token, tokens_file)
    if not is_loopback(host) and not tokens.required:
        raise ValueError(
            f"--host {host} is reachable from other machines: give --token or --tokens "
            "(or serve on 127.0.0.1)"
        )
    inside = [r for r in allow_roots if Path(out).resolve().is_relative_to(Path(r).resolve())]
    if inside:
        raise ValueError(
            f"--out {out} is inside --allow-root {inside[0]}: clients could name other jobs' "
            "outputs as inputs; give an --out outside it"
        )
    check_writable(Path(out))
    options = ModelOptions(model, spec_json, weights, export, engine, device, dtype)
    options.check()
    spec = options.spec()
    plan = options.plan(spec, batch_size)
    batch = plan.batch_size
    settings = ServeSettings(
        Path(out),
        tuple(Path(r).resolve() for r in allow_roots),
        max_upload,
        running,
        queue,
        batch,
        not no_pad,
        plan.dtype,
    )
    if ray_address is not None:
        from copgen_rt.serve.ray_serve import serve_on_ray

        return serve_on_ray(
            ray_address, options.source(spec, plan), settings, tokens, host, port, replicas, cpus_per_replica
        )
    pipeline = options.load(spec, plan)
    service = Service(pipeline, settings)
    if service.restarted:
        click.echo(
            f"copgen-rt: {service.restarted} jobs of the previous server were unfinished: marked failed",
            err=True,
        )
    click.echo(f"copgen-rt: serving {spec.name} on http://{host}:{port} (batch {batch}, out {out})", err=True)
    try:
        uvicorn.run(
            create_app(service, tokens),
            host=host,
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=5,
        )
    finally:
        service.close()
