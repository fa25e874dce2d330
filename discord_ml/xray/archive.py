"""Deleted clusters and their archived job logs: pages and JSON, read from the log store."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from discord_ml.cluster.archive import LogStore
from discord_ml.jobs.client import check_job_id
from discord_ml.xray.deps import Service, User
from discord_ml.xray.pages import render

Days = Annotated[int, Query(ge=1, le=365, description="Deleted within this many days.")]
pages = APIRouter(default_response_class=HTMLResponse, include_in_schema=False)
api = APIRouter(prefix="/api")


async def _archived(days: int) -> list[Any]:
    return await run_in_threadpool(lambda: LogStore().clusters(since=timedelta(days=days)))


async def _job(key: str, job_id: str) -> tuple[Any, Any, str]:
    """The archive, its job and the job's log. Raises LookupError."""
    store = LogStore()
    archive = await run_in_threadpool(store.cluster, key)
    job = next((j for j in archive.jobs if j.job_id == check_job_id(job_id)), None)
    if job is None:
        raise LookupError(f"no job {job_id!r} in the archive of {archive.name}")
    text = await run_in_threadpool(store.log, key, job_id) if job.log_saved else ""
    return archive, job, text


@pages.get("/archive")
async def archive_page(request: Request, service: Service, user: User, days: Days = 7) -> HTMLResponse:
    return render(request, "archive.html", service, user, archives=await _archived(days), days=days)


@pages.get("/archive/{key}/jobs/{job_id}")
async def archived_job_page(request: Request, service: Service, user: User, key: str, job_id: str) -> HTMLResponse:
    archive, job, text = await _job(key, job_id)
    return render(request, "archived_job.html", service, user, archive=archive, job=job, log=text)


@api.get("/archive")
async def archived_clusters(user: User, days: Days = 7) -> Any:
    """Clusters deleted within `days`, newest first, each with its jobs."""
    return jsonable_encoder({"days": days, "clusters": await _archived(days)})


@api.get("/archive/{key}/jobs/{job_id}/logs", response_class=PlainTextResponse)
async def archived_job_log(user: User, key: str, job_id: str) -> PlainTextResponse:
    """An archived job's whole log, as a download."""
    archive, _, text = await _job(key, job_id)
    return PlainTextResponse(
        text, headers={"Content-Disposition": f'attachment; filename="{archive.name}-{job_id}.log"'}
    )
