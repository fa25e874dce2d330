"""The HTML pages and the fragments their script re-fetches to refresh in place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from discord_ml.cluster.archive import LogStore
from discord_ml.cluster.provider import ClusterNotFoundError
from discord_ml.jobs.client import check_job_id
from discord_ml.xray.auth import Identity, csrf_token
from discord_ml.xray.deps import Chosen, Service, User, make_templates
from discord_ml.xray.service import XRayService

CLUSTER = "/{backend}/{namespace}/{name}"
templates = make_templates(str(Path(__file__).parent / "templates"))
router = APIRouter(default_response_class=HTMLResponse, include_in_schema=False)


def render(request: Request, name: str, service: XRayService, user: Identity, **context: Any) -> HTMLResponse:
    """A page from its template, with what every page needs: the user, the CSRF token, the refresh interval."""
    refresh_ms = int(service.config.refresh_seconds * 1000)
    return templates.TemplateResponse(
        request, name, {"user": user, "csrf": csrf_token(user, service.config.secret), "refresh_ms": refresh_ms,
                        **context},
    )  # fmt: skip


@router.get("/")
async def clusters_page(request: Request, service: Service, user: User, chosen: Chosen) -> HTMLResponse:
    listing = await service.list_clusters(chosen, user)
    return render(request, "clusters.html", service, user, listing=listing, backends=list(service.providers))


@router.get("/fragments/clusters")
async def clusters_fragment(request: Request, service: Service, user: User, chosen: Chosen) -> HTMLResponse:
    return render(request, "cluster_rows.html", service, user, listing=await service.list_clusters(chosen, user))


@router.get("/clusters" + CLUSTER)
async def cluster_page(request: Request, service: Service, user: User, backend: str, namespace: str,
                       name: str) -> HTMLResponse:  # fmt: skip
    detail = await service.detail(backend, namespace, name, user)
    return render(request, "cluster.html", service, user, detail=detail, c=detail.cluster)


@router.get("/fragments/clusters" + CLUSTER)
async def cluster_fragment(request: Request, service: Service, user: User, backend: str, namespace: str,
                           name: str) -> HTMLResponse:  # fmt: skip
    detail = await service.detail(backend, namespace, name, user)
    return render(request, "cluster_panels.html", service, user, detail=detail, c=detail.cluster)


@router.get("/clusters" + CLUSTER + "/jobs/{job_id}")
async def job_page(request: Request, service: Service, user: User, backend: str, namespace: str, name: str,
                   job_id: str) -> Response:  # fmt: skip
    """A job's live log; a deleted cluster's job redirects to its archive."""
    try:
        cluster = await service.get(backend, namespace, name)
    except ClusterNotFoundError:
        found = await run_in_threadpool(LogStore().find_job, check_job_id(job_id))
        if found is None:
            raise
        return RedirectResponse(f"/archive/{found[0].key}/jobs/{job_id}", status_code=303)
    jobs = await service.jobs(cluster)
    job = await run_in_threadpool(lambda: jobs.status(job_id=check_job_id(job_id)))
    return render(request, "job.html", service, user, c=await service.row(cluster, user), job=job)
