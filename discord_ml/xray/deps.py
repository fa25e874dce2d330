"""What every route needs: the service, the caller's identity, validated filters, the CSRF check."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import Depends, Query, Request
from fastapi.templating import Jinja2Templates

from discord_ml.cluster.usage import money
from discord_ml.xray.auth import Identity, check_csrf, identify
from discord_ml.xray.service import XRayService
from discord_ml.xray.views import Filters, human_age


def get_service(request: Request) -> XRayService:
    """The app's XRayService (a FastAPI dependency)."""
    return request.app.state.service


Service = Annotated[XRayService, Depends(get_service)]


def current_user(request: Request, service: Service) -> Identity:
    """Who is asking, from the proxy's headers or the local user (a FastAPI dependency)."""
    return identify(request.headers, service.config)


User = Annotated[Identity, Depends(current_user)]


def chosen_filters(
    owner: Annotated[str | None, Query(description="Only clusters of this owner.")] = None,
    team: Annotated[str | None, Query(description="Only clusters of this team.")] = None,
    status: Annotated[str | None, Query(description="Only clusters in this status (pending, ready, ...).")] = None,
) -> Filters:
    """The clusters page's filters from the query string, validated (a FastAPI dependency)."""
    return Filters.parse(owner, team, status)


Chosen = Annotated[Filters, Depends(chosen_filters)]


async def csrf_checked(request: Request, user: User, service: Service) -> Identity:
    """The caller, once the request carries their CSRF token (header, or form field without JavaScript)."""
    token = request.headers.get("x-csrf-token")
    if token is None and request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        token = (parse_qs((await request.body()).decode()).get("csrf_token") or [None])[0]
    check_csrf(user, service.config.secret, token, origin=request.headers.get("origin"),
               host=request.headers.get("host"))  # fmt: skip
    return user


Actor = Annotated[Identity, Depends(csrf_checked)]


def gib(value: float) -> str:
    """Bytes as GiB with one decimal, for the templates."""
    return f"{value / 2**30:.1f} GiB"


def since(moment: datetime) -> str:
    """How long ago `moment` was, like `age`."""
    return human_age((datetime.now(UTC) - moment).total_seconds())


def make_templates(directory: str) -> Jinja2Templates:
    """Jinja2 templates with X-Ray's filters."""
    templates = Jinja2Templates(directory=directory)
    templates.env.filters["age"] = human_age
    templates.env.filters["since"] = since
    templates.env.filters["money"] = money
    templates.env.filters["bytes"] = gib
    return templates
