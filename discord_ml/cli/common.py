"""What the `dml` commands share: options, output, errors. Light imports only (start-up speed)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from discord_ml.cluster.names import sanitize_label_value

if TYPE_CHECKING:
    from discord_ml.cluster.provider import ClusterInfo, ClusterProvider

USAGE_ERROR = 2

Backend = Annotated[
    str | None, typer.Option("--backend", "-b", help="local or kuberay (default: DML_BACKEND, else local).")
]
Namespace = Annotated[
    str | None, typer.Option("--namespace", "-n", help="Kubernetes namespace (default: DML_NAMESPACE).")
]
Output = Annotated[str, typer.Option("--output", "-o", help="table or json.")]


def fail(message: str) -> NoReturn:
    """Print `error: message` on stderr and exit 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(USAGE_ERROR)


def current_owner() -> str:
    """The current user as a label value."""
    from discord_ml.settings import get_settings

    return sanitize_label_value(get_settings().owner)


def provider(backend: str | None) -> ClusterProvider:
    """The provider for `backend`, or exit 2 with the reason."""
    from discord_ml.cluster.backends import get_provider
    from discord_ml.cluster.provider import ClusterError

    try:
        return get_provider(backend)
    except (ValueError, ClusterError) as exc:
        fail(str(exc))


def get_cluster(name: str, namespace: str | None, backend: str | None) -> ClusterInfo:
    """One cluster, or exit 2 saying it does not exist."""
    from discord_ml.cluster.provider import ClusterNotFoundError

    try:
        return provider(backend).get(name, namespace=namespace)
    except ClusterNotFoundError as exc:
        fail(str(exc))


def require_owner(info: ClusterInfo, force: bool, action: str) -> None:
    """Exit 2 unless the current user owns the cluster or passed --force (an admin's override)."""
    me = current_owner()
    if info.owner != me and not force:
        fail(f"cluster {info.name!r} is owned by {info.owner!r}, not {me!r}; pass --force to {action} anyway")


def age(created: datetime) -> str:
    """`3m`, `2h`, `5d` since `created`."""
    seconds = int((datetime.now(UTC) - created).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def info_dict(info: ClusterInfo) -> dict[str, Any]:
    """A cluster as JSON-ready data."""
    return info.as_json()


def wait_for_interrupt(tick: Callable[[], None] | None = None, *, every: float = 5.0) -> None:
    """Block until Ctrl-C or SIGTERM, calling `tick` every `every` seconds (it may end the wait by raising)."""
    # The handler raises rather than setting an Event: a handler that takes a lock can deadlock with
    # the main thread it interrupts.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while True:
            time.sleep(every)
            if tick is not None:
                tick()
    except KeyboardInterrupt:
        return


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A rich table on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def print_json(data: Any) -> None:
    """Indented JSON on stdout."""
    typer.echo(json.dumps(data, indent=2, default=str))


def check_output(output: str, allowed: Sequence[str] = ("table", "json")) -> None:
    """Exit 2 for an unknown -o value."""
    if output not in allowed:
        fail(f"--output {output!r} is not supported; use one of: {', '.join(allowed)}")
