"""`dml ui`: serve X-Ray, the dashboard of every Ray cluster."""

from __future__ import annotations

import ipaddress
import socket
from typing import Annotated

import typer

from discord_ml.cli.common import fail


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def ui(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.", min=1, max=65535)] = 8080,
    backend: Annotated[
        list[str] | None,
        typer.Option("--backend", "-b", help="Backend to show (repeatable; default: DML_XRAY_BACKENDS, DML_BACKEND)."),
    ] = None,
    auth: Annotated[
        str | None, typer.Option("--auth", help="local (the local user) or header (a trusted proxy header).")
    ] = None,
) -> None:
    """Serve X-Ray: every cluster, its nodes, jobs and live logs; delete clusters, launch notebooks.

    In `local` auth mode every request acts as you, so X-Ray only listens on a loopback address;
    behind an authenticating proxy use --auth header (DML_XRAY_AUTH=header).

    Example: dml ui --port 8080
    """
    from pydantic import ValidationError

    from discord_ml.xray.config import XRayConfig

    try:
        config = XRayConfig.from_env(auth=auth, backends=tuple(backend) if backend else None)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(p) for p in problem["loc"])
        fail(f"X-Ray setting {field} = {problem.get('input')!r}: {problem['msg']}")
    if config.auth == "local" and not _loopback(host):
        fail(
            f"--host {host} with auth 'local' would let anyone who reaches it act as {config.local_user}; "
            "listen on 127.0.0.1, or put X-Ray behind an authenticating proxy with --auth header"
        )
    import uvicorn

    from discord_ml.xray.app import create_app

    try:
        app = create_app(config)
    except ValueError as exc:  # an unknown backend name
        fail(str(exc))
    typer.echo(f"X-Ray on http://{host}:{port} (auth {config.auth}, backends {', '.join(config.backends)})")
    uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=False)
