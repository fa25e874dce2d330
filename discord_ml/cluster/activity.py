"""Whether a cluster is in use: a Ray job pending or running, a notebook kernel busy, or a Dagster step
holding it (its heartbeat is fresh). The sweeper reaps a cluster only when none holds, and X-Ray says
how long it has been idle.

Notebooks are found where they run: JupyterLab pods next to a kuberay cluster (reached through the
provider's port-forward with their lab token), and local JupyterLabs that recorded themselves under
`$DML_HOME/notebooks/` (X-Ray's and `dml notebook`'s).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from discord_ml.cluster.provider import ClusterInfo, ClusterProvider
from discord_ml.settings import get_settings

if TYPE_CHECKING:
    from discord_ml.jobs.records import JobInfo

HEARTBEAT_S = 60.0  # how often a Dagster step holding a cluster says so
HEARTBEAT_GRACE = timedelta(seconds=3 * HEARTBEAT_S)  # a step missing three beats is gone
BUSY_JOB_STATES = ("PENDING", "RUNNING")


@dataclass(frozen=True)
class Activity:
    """What uses a cluster now, and the latest sign of use."""

    busy: list[str] = field(default_factory=list[str])
    last: datetime | None = None
    problems: list[str] = field(default_factory=list[str])  # what could not be read


def notebook_record_dir(namespace: str, name: str) -> Path:
    """Where local JupyterLabs attached to a cluster record their URL and token."""
    return get_settings().home / "notebooks" / f"{namespace}.{name}"


def record_notebook(namespace: str, name: str, *, url: str, token: str, pid: int) -> Path:
    """Record a local JupyterLab (its server, token and process) so the sweeper can see its kernels."""
    from discord_ml.cluster.attach import write_private

    directory = notebook_record_dir(namespace, name)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{pid}.json"
    write_private(path, json.dumps({"url": url, "token": token, "pid": pid}))
    return path


def local_notebooks(namespace: str, name: str) -> Iterator[tuple[str, str]]:
    """(URL, token) of the local JupyterLabs recorded for a cluster that still run."""
    from discord_ml.cluster.attach import live_record

    for path in sorted(notebook_record_dir(namespace, name).glob("*.json")):
        record = live_record(path)  # None once its JupyterLab is gone
        if record is not None:
            yield str(record["url"]), str(record["token"])


def _kernels(client: Any, base: str, token: str) -> list[dict[str, Any]]:
    response = client.get(f"{base.rstrip('/')}/api/kernels", headers={"Authorization": f"token {token}"})
    response.raise_for_status()
    return [k for k in response.json() if isinstance(k, dict)]


def _iso(value: Any) -> datetime | None:
    """Jupyter's ISO 8601 `last_activity`."""
    if isinstance(value, str) and value:
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return None


def read_activity(provider: ClusterProvider, cluster: ClusterInfo, *, now: datetime, timeout: float = 10.0,
                  jobs: Sequence[JobInfo] | None = None) -> Activity:  # fmt: skip
    """Ask the cluster's Jobs API (unless its `jobs` were just read) and its notebooks what is going on.
    Parts that cannot be read are listed in `problems` and count as not busy (a dead cluster must still
    be reapable)."""
    import httpx

    from discord_ml.jobs.client import RayJobs

    busy: list[str] = []
    seen: list[datetime] = [cluster.created, *([cluster.last_active] if cluster.last_active else [])]
    problems: list[str] = []
    if cluster.last_active and now - cluster.last_active < HEARTBEAT_GRACE:
        busy.append(f"a Dagster step (heartbeat {int((now - cluster.last_active).total_seconds())}s ago)")
    try:
        if jobs is None:
            jobs = RayJobs.of(provider.connect(cluster.name, namespace=cluster.namespace), timeout=timeout).list()
        for job in jobs:
            if job.status in BUSY_JOB_STATES:
                busy.append(f"Ray job {job.job_id} {job.status.lower()}")
            seen += [t for t in (job.start, job.end) if t]
    except Exception as exc:  # reported; an unreadable dashboard is not a busy one
        problems.append(f"Ray jobs could not be read: {type(exc).__name__}: {exc}")
    with httpx.Client(timeout=timeout) as client:
        for base, token in _notebooks(provider, cluster, problems):
            try:
                for kernel in _kernels(client, base, token):
                    if kernel.get("execution_state") == "busy":
                        busy.append(f"notebook kernel {kernel.get('id', '?')[:8]} busy")
                    seen += [t for t in (_iso(kernel.get("last_activity")),) if t]
            except Exception as exc:  # as above
                problems.append(f"notebook kernels could not be read: {type(exc).__name__}: {exc}")
    return Activity(busy, max(seen), problems)


def _notebooks(provider: ClusterProvider, cluster: ClusterInfo, problems: list[str]) -> list[tuple[str, str]]:
    """(JupyterLab URL, token) of every notebook attached to the cluster, as its backend finds them."""
    try:
        return provider.notebooks(cluster.name, namespace=cluster.namespace)
    except Exception as exc:  # reported like the rest
        problems.append(f"notebooks could not be listed: {type(exc).__name__}: {exc}")
        return []


def idle_seconds(cluster: ClusterInfo, activity: Activity, now: datetime) -> float | None:
    """How long the cluster has been idle; None while something uses it."""
    if activity.busy:
        return None
    return max(0.0, (now - (activity.last or cluster.created)).total_seconds())
