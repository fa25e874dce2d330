"""The JSON API under /api: each page's data for scripts, live logs as server-sent events, the actions."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from discord_ml.jobs.client import DashboardUnavailableError, check_job_id
from discord_ml.xray.auth import csrf_token
from discord_ml.xray.deps import Actor, Chosen, Service, User

CLUSTER = "/clusters/{backend}/{namespace}/{name}"
router = APIRouter(prefix="/api")


def _wants_html(request: Request) -> bool:
    """A plain form post (no JavaScript) wants a page back, not JSON."""
    return "text/html" in request.headers.get("accept", "") and "x-csrf-token" not in request.headers


@router.get("/me")
def me(service: Service, user: User) -> dict[str, Any]:
    """Who you are, and the CSRF token scripts send as X-CSRF-Token on POSTs."""
    return {"user": user.user, "groups": sorted(user.groups), "admin": user.admin,
            "csrf_token": csrf_token(user, service.config.secret)}  # fmt: skip


@router.get("/clusters")
async def clusters(service: Service, user: User, chosen: Chosen) -> JSONResponse:
    """Clusters of every backend, newest first, filtered by owner, team and status."""
    listing = await service.list_clusters(chosen, user)
    # rows are plain JSON already: skipping jsonable_encoder makes 1,000 rows 3x faster (bench/xray.py)
    return JSONResponse({"clusters": [r.to_json() for r in listing.rows], "total": listing.total,
                         "problems": listing.problems, "filters": chosen.query(),
                         "generated": listing.generated.isoformat()})  # fmt: skip


@router.get(CLUSTER)
async def cluster(service: Service, user: User, backend: str, namespace: str, name: str) -> dict[str, Any]:
    """One cluster with its nodes' use, jobs and events; `dashboard_error` says why a dashboard part is missing."""
    return jsonable_encoder(await service.detail(backend, namespace, name, user))


@router.get(CLUSTER + "/jobs/{job_id}")
async def job(service: Service, user: User, backend: str, namespace: str, name: str, job_id: str) -> dict[str, Any]:
    """One Ray job's status and timing."""
    jobs = await service.jobs(await service.get(backend, namespace, name))
    return jsonable_encoder(await run_in_threadpool(lambda: jobs.status(job_id=check_job_id(job_id))))


@router.get(CLUSTER + "/jobs/{job_id}/logs", response_class=PlainTextResponse)
async def job_logs(service: Service, user: User, backend: str, namespace: str, name: str,
                   job_id: str) -> PlainTextResponse:  # fmt: skip
    """The job's whole log so far, as a download."""
    jobs = await service.jobs(await service.get(backend, namespace, name))
    text = await run_in_threadpool(lambda: jobs.logs(job_id=check_job_id(job_id)))
    return PlainTextResponse(text, headers={"Content-Disposition": f'attachment; filename="{name}-{job_id}.log"'})


@router.get(CLUSTER + "/jobs/{job_id}/logs/stream")
async def job_log_stream(service: Service, user: User, backend: str, namespace: str, name: str,
                         job_id: str) -> Response:  # fmt: skip
    """Server-sent events: one `data` per log line as the job prints it, then `end` with the final status."""
    jobs = await service.jobs(await service.get(backend, namespace, name))
    # a 404 now, not a stream that never starts
    await run_in_threadpool(lambda: jobs.status(job_id=check_job_id(job_id)))

    async def stream() -> AsyncIterator[str]:
        yield "retry: 3000\n\n"
        try:
            async for line in jobs.lines(job_id=job_id, heartbeat=15.0):
                yield ": keep-alive\n\n" if line is None else f"data: {line.replace(chr(13), '')}\n\n"
        except DashboardUnavailableError as exc:
            yield f"event: problem\ndata: {exc}\n\n"
        try:
            status = (await run_in_threadpool(lambda: jobs.status(job_id=job_id))).status
        except (DashboardUnavailableError, LookupError):
            status = "UNKNOWN"
        yield f"event: end\ndata: {json.dumps({'status': status})}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip


@router.post(CLUSTER + "/delete")
async def delete(request: Request, service: Service, user: Actor, backend: str, namespace: str, name: str) -> Response:
    """Delete the cluster: its owner or an admin only; CSRF token required."""
    gone = await service.delete(backend, namespace, name, user)
    if _wants_html(request):
        return RedirectResponse("/", status_code=303)
    return JSONResponse({"deleted": f"{gone.backend}/{gone.namespace}/{gone.name}", "by": user.user})


@router.post(CLUSTER + "/notebook")
async def notebook(request: Request, service: Service, user: Actor, backend: str, namespace: str,
                   name: str) -> Response:  # fmt: skip
    """Start (or find) JupyterLab attached to the cluster: owner or admin only. Answers its URL, or on
    kuberay the notebook pod and the command that opens it."""
    launched = await service.notebook(backend, namespace, name, user)
    if _wants_html(request):
        return RedirectResponse(launched.url or f"/clusters/{backend}/{namespace}/{name}", status_code=303)
    return JSONResponse({k: v for k, v in dataclasses.asdict(launched).items() if v is not None})
