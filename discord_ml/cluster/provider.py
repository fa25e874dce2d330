"""The one cluster interface: the CLI, the Dagster resource and X-Ray use nothing else.

Backends (`local`, `kuberay`) implement `ClusterProvider`; callers get `ClusterInfo` snapshots
and a `ClusterConnection` (dashboard URL + auth headers) for the Ray Jobs API.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from discord_ml.cluster.spec import ClusterSpec


class ClusterStatus(StrEnum):
    """Where a cluster is in its life."""

    PENDING = "pending"  # created, not ready yet (pods pending, raylets starting)
    READY = "ready"  # head and all desired workers up; jobs can be submitted
    FAILED = "failed"  # it will not become ready without intervention
    DEAD = "dead"  # registered but its processes/pods are gone
    DELETING = "deleting"


class ClusterError(RuntimeError):
    """Base class of cluster backend errors."""


class ClusterNotFoundError(ClusterError, LookupError):
    """No cluster of that name (in that namespace)."""


class ClusterExistsError(ClusterError):
    """A cluster of that name already exists."""


class ClusterNotReadyError(ClusterError, TimeoutError):
    """A cluster did not become ready in time; the message says why (the pending reason)."""


class ClusterUnavailableError(ClusterError):
    """The backend cannot be reached or used at all (no kubeconfig, API down, credentials rejected)."""


class ClusterForbiddenError(ClusterError):
    """The backend refused one call to this identity; the message names the verb and resource."""


class CapacityError(ClusterError):
    """A cluster cannot fit (quota or nodes); the message says what is short and by how much."""


@dataclass(frozen=True, kw_only=True)
class ClusterIdentity:
    """What names a cluster and whom it belongs to, in every view of it (provider, X-Ray, usage)."""

    name: str
    namespace: str
    backend: str
    owner: str
    team: str
    purpose: str
    gpu_pool: str
    gpu_type: str

    def identity(self) -> dict[str, str]:
        """These fields by name, to build another view of the same cluster."""
        return {f.name: getattr(self, f.name) for f in fields(ClusterIdentity)}


@dataclass(frozen=True, kw_only=True)
class ClusterInfo(ClusterIdentity):
    """A snapshot of one cluster, whatever the backend."""

    gpus_per_worker: int
    workers_ready: int
    workers_desired: int
    status: ClusterStatus
    reason: str
    created: datetime
    dashboard_url: str | None
    labels: Mapping[str, str] = field(default_factory=dict[str, str])
    ttl_seconds: int | None = None
    # Whether the process that created the cluster still runs, where the backend can tell (local);
    # a Dagster run's cluster whose creator is gone belongs to a run worker that crashed.
    creator_alive: bool | None = None
    head_cpu: float = 0.0  # CPUs requested by the head (usage and cost)
    worker_cpu: float = 0.0  # CPUs requested by each worker
    idle_timeout_seconds: int | None = None  # the sweeper deletes it after this long idle; None: never
    last_active: datetime | None = None  # the last heartbeat of a Dagster step holding it

    @property
    def run_id(self) -> str | None:
        """The Dagster run that owns this cluster, if any."""
        return self.labels.get("dagster.io/run-id")

    def expired(self, now: datetime) -> bool:
        """Whether the cluster has outlived its TTL."""
        return self.ttl_seconds is not None and (now - self.created).total_seconds() > self.ttl_seconds

    def as_json(self) -> dict[str, Any]:
        """The snapshot as JSON-ready data (`dml cluster get -o json`, the log archive)."""
        return {
            **self.identity(), "gpus_per_worker": self.gpus_per_worker, "workers_ready": self.workers_ready,
            "workers_desired": self.workers_desired, "status": str(self.status), "reason": self.reason,
            "created": self.created.isoformat(), "dashboard_url": self.dashboard_url, "labels": dict(self.labels),
            "ttl_seconds": self.ttl_seconds, "head_cpu": self.head_cpu, "worker_cpu": self.worker_cpu,
            "idle_timeout_seconds": self.idle_timeout_seconds,
            "last_active": self.last_active.isoformat() if self.last_active else None,
        }  # fmt: skip


@dataclass(frozen=True)
class ClusterConnection:
    """How to reach a ready cluster's dashboard / Jobs API."""

    dashboard_url: str
    headers: Mapping[str, str]
    address: str | None = None  # GCS address, where the backend exposes one (local)
    token_path: str | None = None  # the token as an owner-only file, where the backend keeps one (local)

    @property
    def token(self) -> str:
        """The cluster's auth token (the bearer of `headers`)."""
        return self.headers["Authorization"].removeprefix("Bearer ")


@dataclass(frozen=True)
class ClusterEvent:
    """Something that happened to a cluster or one of its nodes/pods (newest last in lists)."""

    time: datetime | None
    type: str  # "Normal" or "Warning", as Kubernetes events
    source: str  # the node or pod it is about
    reason: str
    message: str


Progress = Callable[[ClusterInfo], None]


def poll_until_ready(
    get: Callable[[], ClusterInfo],
    *,
    what: str,
    timeout: float,
    interval: float,
    on_progress: Progress | None = None,
    ready: Callable[[ClusterInfo], bool] = lambda info: info.status == ClusterStatus.READY,
) -> ClusterInfo:
    """Poll `get` until `ready`; report each change of status or reason; fail on DEAD/FAILED or timeout.

    Raises:
        ClusterNotReadyError: naming `what` and the last reason the backend gave.
    """
    deadline = time.monotonic() + timeout
    last: tuple[str, str] | None = None
    while True:
        info = get()
        if on_progress is not None and (info.status, info.reason) != last:
            on_progress(info)
        last = (info.status, info.reason)
        if ready(info):
            return info
        if info.status in (ClusterStatus.DEAD, ClusterStatus.FAILED):
            raise ClusterNotReadyError(
                f"{what} {'failed' if info.status == ClusterStatus.FAILED else 'is dead'}: {info.reason}"
            )
        if time.monotonic() >= deadline:
            raise ClusterNotReadyError(f"{what} not ready after {timeout:.0f}s: {info.reason or info.status}")
        time.sleep(interval)


@runtime_checkable
class ClusterProvider(Protocol):
    """Create, wait for, inspect, list and delete Ray clusters on one backend."""

    backend: str

    def preflight(self, spec: ClusterSpec) -> list[str]:
        """What keeps the cluster from fitting now (quota headroom, node capacity); empty when it fits.
        Reads only; creates nothing."""
        ...

    def create(self, spec: ClusterSpec) -> ClusterInfo:
        """Start creating the cluster described by `spec` (returns before it is ready).

        Raises:
            ClusterExistsError: a cluster of that name exists.
        """
        ...

    def wait_ready(self, name: str, *, namespace: str | None = None, timeout: float = 600.0,
                   on_progress: Progress | None = None) -> ClusterInfo:  # fmt: skip
        """Block until the cluster is READY; report each status change to `on_progress`.

        Raises:
            ClusterNotReadyError: on timeout or failure, with the pending/failure reason.
        """
        ...

    def get(self, name: str, *, namespace: str | None = None) -> ClusterInfo:
        """One cluster.

        Raises:
            ClusterNotFoundError: no such cluster.
        """
        ...

    def list(self, selector: Mapping[str, str] | None = None, *, namespace: str | None = None) -> list[ClusterInfo]:
        """Clusters whose labels include `selector` (all namespaces when `namespace` is None)."""
        ...

    def delete(self, name: str, *, namespace: str | None = None) -> None:
        """Delete the cluster and everything it started; a missing cluster is not an error."""
        ...

    def connect(self, name: str, *, namespace: str | None = None) -> ClusterConnection:
        """Dashboard URL and auth headers for the Ray Jobs API of a ready cluster."""
        ...

    def touch(self, name: str, *, namespace: str | None = None) -> None:
        """Record that something (a Dagster step) is using the cluster now: idle reaping waits."""
        ...

    def events(self, name: str, *, namespace: str | None = None, limit: int = 20) -> list[ClusterEvent]:
        """The cluster's most recent events (scheduling failures, node exits), oldest first.

        Raises:
            ClusterNotFoundError: no such cluster.
        """
        ...

    def notebooks(self, name: str, *, namespace: str | None = None) -> list[tuple[str, str]]:
        """(JupyterLab URL, token) of each running notebook attached to the cluster, reachable from
        here: what the idle reaper asks whether a kernel is busy."""
        ...


def require_capacity(provider: ClusterProvider, spec: ClusterSpec) -> None:
    """Refuse a cluster that cannot fit, before anything is created.

    Raises:
        CapacityError: naming each shortfall and what to do.
    """
    short = provider.preflight(spec)
    if short:
        raise CapacityError(
            f"cluster {spec.cluster_name!r} cannot fit now: {'; '.join(short)}. Lower the workers or their size, "
            "pick another pool, or ask for more quota; to create it anyway and let it wait, allow pending "
            "(--allow-pending, or allow_pending in the resource's config)"
        )
