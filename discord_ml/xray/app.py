"""The X-Ray web app: server-rendered pages (`pages`), their JSON twins under /api (`api`), live logs over SSE.

`create_app` wires a service (clusters of the configured backends) to the routes and maps every
error to a clear answer: JSON under /api and /fragments, a page elsewhere.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from discord_ml.cluster.lifecycle import RunStatuses
from discord_ml.cluster.provider import ClusterError, ClusterNotFoundError, ClusterProvider
from discord_ml.jobs.client import DashboardUnavailableError, InvalidJobIdError
from discord_ml.orchestration.run_statuses import from_environment
from discord_ml.xray import api, archive, pages, usage_pages
from discord_ml.xray.auth import AuthError, ForbiddenError
from discord_ml.xray.config import XRayConfig
from discord_ml.xray.notebooks import NotebookError
from discord_ml.xray.service import XRayService
from discord_ml.xray.views import FilterError

ERRORS: list[tuple[type[Exception], int, str]] = [
    (AuthError, 401, "not signed in"),
    (ForbiddenError, 403, "forbidden"),
    (FilterError, 422, "bad parameter"),
    (InvalidJobIdError, 422, "bad parameter"),
    (ClusterNotFoundError, 404, "not found"),
    (LookupError, 404, "not found"),
    (DashboardUnavailableError, 409, "cluster dashboard unavailable"),
    (NotebookError, 502, "notebook did not start"),
    (ClusterError, 502, "backend error"),
]


def create_app(config: XRayConfig | None = None, *, providers: Mapping[str, ClusterProvider] | None = None,
               run_statuses: RunStatuses | None = None, notebooks_root: Path | None = None) -> FastAPI:  # fmt: skip
    """The app for `config` (default: from the environment); providers default to the configured backends.

    Raises:
        ValueError: a configured backend is not known.
    """
    from discord_ml.cluster.backends import get_provider
    from discord_ml.settings import get_settings

    config = config or XRayConfig.from_env()
    providers = providers if providers is not None else {b: get_provider(b) for b in config.backends}
    service = XRayService(config, providers, run_statuses or from_environment(),
                          notebooks_root or get_settings().home / "xray-notebooks")  # fmt: skip

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        service.notebooks.stop_all()

    app = FastAPI(title="X-Ray", description="Every Ray cluster: owner, machine type, status, jobs, logs.",
                  lifespan=lifespan)  # fmt: skip
    app.state.service = service
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(pages.router)
    app.include_router(api.router)
    app.include_router(archive.pages)
    app.include_router(archive.api)
    app.include_router(usage_pages.pages)
    app.include_router(usage_pages.api)
    for error, status, title in ERRORS:
        app.add_exception_handler(error, _handler(status, title))
    return app


def _handler(status: int, title: str) -> Any:
    async def handle(request: Request, exc: Exception) -> Response:
        message = str(exc.args[0]) if exc.args else title
        if request.url.path.startswith(("/api/", "/fragments/")):
            return JSONResponse({"error": title, "detail": message}, status_code=status)
        return pages.templates.TemplateResponse(
            request, "error.html", {"title": title, "message": message, "user": None}, status_code=status
        )

    return handle
