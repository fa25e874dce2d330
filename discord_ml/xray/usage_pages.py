"""The Usage page: CPU-hours, GPU-hours and estimated cost by owner or team over a chosen window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from discord_ml.cluster.usage import gather, totals
from discord_ml.xray.deps import Service, User
from discord_ml.xray.pages import render
from discord_ml.xray.service import XRayService

Days = Annotated[int, Query(ge=1, le=365, description="The window: this many days back from now.")]
By = Annotated[Literal["owner", "team"], Query(description="Group by owner or team.")]
pages = APIRouter(default_response_class=HTMLResponse, include_in_schema=False)
api = APIRouter(prefix="/api")


async def _report(service: XRayService, days: int, by: str) -> dict[str, Any]:
    until = datetime.now(UTC)
    clusters, problems = await run_in_threadpool(gather, service.providers, since=timedelta(days=days), until=until)
    rows = totals(clusters, by)
    # The plot shows cost where any cluster has a price, else GPU-hours, else CPU-hours.
    measure = (
        "cost" if any(r["cost"] for r in rows) else "gpu_hours" if any(r["gpu_hours"] for r in rows) else "cpu_hours"
    )
    top = max((r[measure] or 0.0 for r in rows), default=0.0) or 1.0
    return {"by": by, "days": days, "since": (until - timedelta(days=days)).isoformat(), "until": until.isoformat(),
            "totals": rows, "clusters": [c.to_json() for c in clusters], "problems": problems, "measure": measure,
            "scale": top}  # fmt: skip


@pages.get("/usage")
async def usage_page(request: Request, service: Service, user: User, days: Days = 7, by: By = "owner") -> HTMLResponse:
    return render(request, "usage.html", service, user, report=await _report(service, days, by))


@api.get("/usage")
async def usage(service: Service, user: User, days: Days = 7, by: By = "owner") -> dict[str, Any]:
    """Totals by owner or team over the last `days`, with each cluster's share of the window."""
    report = await _report(service, days, by)
    return {k: v for k, v in report.items() if k != "scale"}
