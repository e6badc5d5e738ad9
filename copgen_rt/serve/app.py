"""The HTTP routes: OGC API - Processes - Part 1: Core (1.0), with the job-list and dismiss
conformance classes, on FastAPI (what Ray Serve's HTTP proxy runs, `command`).

Errors are OGC exception documents (RFC 7807: type, title, status, detail) whose detail is the
command line's one-line message.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from copgen_rt.errors import EXIT_BUSY, EXIT_INPUT, EXIT_OUTPUT_EXISTS, command_line_report
from copgen_rt.serve.auth import Tokens
from copgen_rt.serve.inputs import PROCESS_INPUTS, InputRefused
from copgen_rt.serve.jobs import Job, JobStatus
from copgen_rt.serve.service import QueueFull, Service

EXCEPTIONS = "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/"
CONFORMANCE = [
    f"http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/{c}"
    for c in ("core", "json", "job-list", "dismiss", "ogc-process-description")
]
PROCESS_TITLES = {
    "generate": "Generate the missing modalities of a scene (copgen-rt infer, one scene)",
    "fill": "Fill the gaps of a scene (copgen-rt fill)",
}
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
BODY_SLACK = 64 << 10  # JSON around the inline rasters


class OgcError(Exception):
    def __init__(self, status: int, kind: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.kind, self.detail, self.headers = status, kind, detail, headers or {}


def exception_response(
    status: int, kind: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {
            "type": EXCEPTIONS + kind if "/" not in kind else kind,
            "title": kind,
            "status": status,
            "detail": detail,
        },
        status_code=status,
        headers=headers,
        media_type="application/problem+json",
    )


def failure(e: BaseException) -> OgcError:
    """An exception as the command line would say it, with an HTTP status."""
    if isinstance(e, InputRefused):
        return OgcError(e.status, "forbidden-input" if e.status == 403 else "payload-too-large", str(e))
    if isinstance(e, QueueFull):
        return OgcError(503, "server-busy", str(e))
    code, message = command_line_report(e)
    if code == EXIT_INPUT:
        return OgcError(400, "InvalidParameterValue", message)
    if code in (EXIT_OUTPUT_EXISTS, EXIT_BUSY):
        return OgcError(409, "conflict", message)
    return OgcError(500, "server-error", message)


def create_app(service: Service, tokens: Tokens) -> FastAPI:
    app = FastAPI(
        title="copgen-rt",
        description="COP-GEN over OGC API - Processes",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api",
    )

    @app.exception_handler(OgcError)
    async def ogc_error(request: Request, e: OgcError) -> JSONResponse:
        return exception_response(e.status, e.kind, e.detail, e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        kind = "no-such-resource" if e.status_code == 404 else "http-error"
        return exception_response(e.status_code, kind, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        return exception_response(400, "InvalidParameterValue", str(e.errors()[0].get("msg", "bad request")))

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Any:
        if tokens.required:
            client = tokens.client(request.headers.get("authorization"))
            if client is None:
                return exception_response(
                    401,
                    "unauthorized",
                    "this server needs a bearer token (Authorization: Bearer TOKEN)",
                    {"WWW-Authenticate": "Bearer"},
                )
            request.state.owner = tokens.owner(client)
        else:
            request.state.owner = ""
        return await call_next(request)

    def base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def link(href: str, rel: str, title: str, kind: str = "application/json") -> dict[str, str]:
        return {"href": href, "rel": rel, "type": kind, "title": title}

    @app.get("/")
    def landing(request: Request) -> dict:
        b = base(request)
        return {
            "title": "copgen-rt",
            "description": f"COP-GEN ({service.pipeline.spec.name}) over OGC API - Processes",
            "copgen:network_calls": dataclasses.asdict(service.batcher.stats),  # how well calls were packed
            "links": [
                link(f"{b}/", "self", "this document"),
                link(
                    f"{b}/api",
                    "service-desc",
                    "the API definition",
                    "application/vnd.oai.openapi+json;version=3.0",
                ),
                link(f"{b}/conformance", "http://www.opengis.net/def/rel/ogc/1.0/conformance", "conformance"),
                link(f"{b}/processes", "http://www.opengis.net/def/rel/ogc/1.0/processes", "processes"),
                link(f"{b}/jobs", "http://www.opengis.net/def/rel/ogc/1.0/job-list", "jobs"),
            ],
        }

    @app.get("/conformance")
    def conformance() -> dict:
        return {"conformsTo": CONFORMANCE}

    def summary(request: Request, process: str) -> dict:
        return {
            "id": process,
            "title": PROCESS_TITLES[process],
            "version": "1.0.0",
            "jobControlOptions": ["sync-execute", "async-execute", "dismiss"],
            "outputTransmission": ["value"],
            "links": [link(f"{base(request)}/processes/{process}", "self", "process description")],
        }

    @app.get("/processes")
    def processes(request: Request) -> dict:
        return {
            "processes": [summary(request, p) for p in PROCESS_INPUTS],
            "links": [link(f"{base(request)}/processes", "self", "processes")],
        }

    @app.get("/processes/{process}")
    def process_description(request: Request, process: str) -> dict:
        table = _process_inputs(process)
        return summary(request, process) | {
            "description": PROCESS_TITLES[process],
            "inputs": {
                name: {
                    "title": name,
                    "description": spec.description,
                    "schema": spec.schema,
                    "minOccurs": 1 if spec.required else 0,
                    "maxOccurs": 1,
                }
                for name, spec in table.items()
            },
            "outputs": {
                "item": {
                    "title": "STAC Item of the outputs",
                    "description": "one asset per COG written "
                    "under the server's --out, as `copgen-rt infer`/`fill` writes them",
                    "schema": {"type": "object", "contentMediaType": "application/geo+json"},
                }
            },
        }

    @app.post("/processes/{process}/execution")
    async def execute(request: Request, process: str) -> JSONResponse:
        _process_inputs(process)
        body = await _json_body(request, service.settings.max_upload_bytes * 4 // 3 + BODY_SLACK)
        if not isinstance(body, dict):
            raise OgcError(400, "InvalidParameterValue", 'the body must be a JSON object with "inputs"')
        response = body.get("response", "document")
        if response not in ("document", "raw"):
            raise OgcError(
                400, "InvalidParameterValue", f"response: expected document or raw, got {response!r}"
            )
        asynchronous = "respond-async" in request.headers.get("prefer", "")
        try:
            job = await run_in_threadpool(
                service.submit, process, body.get("inputs", {}), request.state.owner
            )
        except Exception as e:  # noqa: BLE001 - bad inputs and a full queue, as one line
            error = failure(e)
            if isinstance(e, QueueFull):
                error.headers["Retry-After"] = str(service.settings.retry_after_s)
            raise error from None
        location = f"{base(request)}/jobs/{job.id}"
        if asynchronous:
            return JSONResponse(
                status_info(request, job),
                status_code=201,
                headers={"Location": location, "Preference-Applied": "respond-async"},
            )
        job = await run_in_threadpool(service.wait, job.id)
        if job.status != JobStatus.SUCCESSFUL:
            raise _job_failure(job)
        assert job.item is not None
        content = job.item if response == "raw" else {"item": job.item}
        return JSONResponse(
            content,
            headers={"Location": location},
            media_type="application/geo+json" if response == "raw" else "application/json",
        )

    @app.get("/jobs")
    def jobs(request: Request) -> dict:
        return {
            "jobs": [status_info(request, j) for j in service.list(request.state.owner or None)],
            "links": [link(f"{base(request)}/jobs", "self", "jobs")],
        }

    @app.get("/jobs/{job_id}")
    def job_status(request: Request, job_id: str) -> dict:
        return status_info(request, _job(request, job_id))

    @app.get("/jobs/{job_id}/results")
    def job_results(request: Request, job_id: str) -> dict:
        job = _job(request, job_id)
        if job.status in (JobStatus.ACCEPTED, JobStatus.RUNNING):
            raise OgcError(
                404, "result-not-ready", f"job {job_id} is {job.status}; its results are not ready"
            )
        if job.status != JobStatus.SUCCESSFUL:
            raise _job_failure(job)
        assert job.item is not None
        return {"item": job.item}

    @app.delete("/jobs/{job_id}")
    def dismiss(request: Request, job_id: str) -> dict:
        return status_info(request, service.dismiss(_job(request, job_id)))

    def _job(request: Request, job_id: str) -> Job:
        job = service.get(job_id, request.state.owner or None) if JOB_ID.match(job_id) else None
        if job is None:
            raise OgcError(404, "no-such-job", f"no job {job_id[:64]}")
        return job

    def status_info(request: Request, job: Job) -> dict:
        b = base(request)
        links = [link(f"{b}/jobs/{job.id}", "self", "status")]
        if job.status == JobStatus.SUCCESSFUL:
            links.append(
                link(
                    f"{b}/jobs/{job.id}/results", "http://www.opengis.net/def/rel/ogc/1.0/results", "results"
                )
            )
        return {
            "jobID": job.id,
            "processID": job.process,
            "type": "process",
            "status": str(job.status),
            "message": job.message,
            "created": job.created,
            "started": job.started,
            "finished": job.finished,
            "progress": job.progress,
            "copgen:tiles_done": round(job.tiles_done, 3),
            "copgen:tiles_total": job.tiles_total,
            "copgen:network_calls": job.calls_done,
            "links": links,
        }

    return app


def _process_inputs(process: str) -> dict:
    if process not in PROCESS_INPUTS:
        raise OgcError(
            404, "no-such-process", f"no process {process[:64]!r}; processes: {', '.join(PROCESS_INPUTS)}"
        )
    return PROCESS_INPUTS[process]


def _job_failure(job: Job) -> OgcError:
    if job.status == JobStatus.DISMISSED:
        return OgcError(410, "job-dismissed", f"job {job.id} was dismissed")
    return OgcError(500, "job-failed", job.message)


async def _json_body(request: Request, limit: int) -> Any:
    """The request's JSON, refused past `limit` bytes before more is read."""
    size = int(request.headers.get("content-length") or 0)
    if size > limit:
        raise OgcError(
            413,
            "payload-too-large",
            f"request body of {size} bytes, more than this server's "
            f"limit of {limit} (inline rasters: --max-upload)",
        )
    chunks, read = [], 0
    async for chunk in request.stream():
        read += len(chunk)
        if read > limit:
            raise OgcError(
                413,
                "payload-too-large",
                f"request body larger than this server's limit of {limit} "
                "bytes (inline rasters: --max-upload)",
            )
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks) or b"{}")
    except (ValueError, UnicodeDecodeError) as e:
        raise OgcError(
            400, "InvalidParameterValue", f"the body is not JSON ({str(e).splitlines()[0][:80]})"
        ) from None
