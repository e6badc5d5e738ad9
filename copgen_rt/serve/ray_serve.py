"""`copgen-rt serve --ray [ADDRESS]`: the same routes on Ray Serve replicas (one per GPU, else one
per --cpus-per-replica cores), behind Ray Serve's HTTP proxy.

Each replica loads its own pipeline and runs its own batcher and queue; they share the job store
and the output folder (--out must be one folder every replica's node sees: a shared filesystem
beyond one node). A status or results request may reach any replica (they read the store); a
dismissal reaching another replica than the job's is written to the store, and the job's replica
stops it at its next network call.
"""

from __future__ import annotations

import signal
import sys
import time
import warnings
from dataclasses import replace

from fastapi import FastAPI

from copgen_rt.runs.report import say
from copgen_rt.runs.source import PipelineSource
from copgen_rt.serve.app import create_app
from copgen_rt.serve.auth import Tokens
from copgen_rt.serve.jobs import JobStore
from copgen_rt.serve.service import ServeSettings, Service


class CopgenReplica:
    """One replica: its pipeline, batcher and job threads; the app is built on the replica."""

    def __init__(self, source: PipelineSource, settings: ServeSettings, tokens: Tokens):
        self.service = Service(source.load(), settings, recover=False)
        self.tokens = tokens

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self.service, self.tokens)

    def __del__(self) -> None:
        self.service.close()


def serve_on_ray(
    address: str,
    source: PipelineSource,
    settings: ServeSettings,
    tokens: Tokens,
    host: str,
    port: int,
    replicas: int | None,
    cpus_per_replica: int,
) -> None:
    """Deploy and serve until interrupted."""
    import ray

    with warnings.catch_warnings():  # Ray Serve's own pydantic deprecations, not the user's concern
        warnings.simplefilter("ignore", DeprecationWarning)
        from ray import serve

    store = JobStore(settings.out)  # jobs a previous server left unfinished: failed, once, here
    failed = store.fail_unfinished()
    store.close()
    if failed:
        say(f"{failed} jobs of the previous server were unfinished: marked failed")
    if address == "local":  # a runtime of our own: no dashboard to start and leave behind
        ray.init(log_to_driver=False, include_dashboard=False)
    else:
        ray.init(address=address, log_to_driver=False)
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if replicas is None:
        replicas = gpus or max(1, int(resources.get("CPU", 1)) // cpus_per_replica)
    actor = {"num_gpus": 1} if gpus else {"num_cpus": cpus_per_replica}
    serve.start(http_options={"host": host, "port": port})
    deployment = serve.deployment(
        name="copgen-rt",
        num_replicas=replicas,
        ray_actor_options=actor,
        # sync executions hold a request for a whole job: status calls must not queue behind them
        max_ongoing_requests=settings.queue + 64,
    )(serve.ingress()(CopgenReplica))
    serve.run(
        deployment.bind(source, replace(settings, out=settings.out.resolve()), tokens),
        name="copgen-rt",
        route_prefix="/",
    )
    say(f"serving on Ray ({replicas} replicas, {actor}) at http://{host}:{port}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a plain kill also shuts the deployment down
    try:
        while True:
            time.sleep(3600)
    finally:
        serve.shutdown()
        ray.shutdown()
