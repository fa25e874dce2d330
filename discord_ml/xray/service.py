"""What X-Ray does, apart from HTTP: gather clusters from every backend, read one cluster's dashboard,
delete a cluster, attach a notebook. The routes in `app` call these and render the results.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool

from discord_ml.cluster.activity import idle_seconds, read_activity
from discord_ml.cluster.duration import human_age
from discord_ml.cluster.lifecycle import RunStatuses
from discord_ml.cluster.names import sanitize_label_value
from discord_ml.cluster.provider import (
    ClusterConnection,
    ClusterError,
    ClusterEvent,
    ClusterInfo,
    ClusterNotFoundError,
    ClusterProvider,
)
from discord_ml.jobs.client import DashboardUnavailableError, JobInfo, RayJobs
from discord_ml.xray.auth import Identity, authorize
from discord_ml.xray.config import XRayConfig
from discord_ml.xray.dashboard import NodeUsage, RayDashboard, RayEvent
from discord_ml.xray.notebooks import NotebookSessions
from discord_ml.xray.views import ClusterRow, Filters, cluster_path, cluster_row, cluster_rows

if TYPE_CHECKING:
    from discord_ml.cluster.kuberay.notebooks import KubeRayNotebooks, NotebookPod


@dataclass
class ClusterList:
    """The clusters page: rows, and what could not be listed (a backend down)."""

    rows: list[ClusterRow]
    total: int
    problems: list[str]
    filters: Filters
    generated: datetime


@dataclass
class ClusterDetail:
    """The cluster page: each section carries its own error so one failure does not blank the page."""

    cluster: ClusterRow
    nodes: list[NodeUsage] = field(default_factory=list[NodeUsage])
    jobs: list[JobInfo] = field(default_factory=list[JobInfo])
    ray_events: list[RayEvent] = field(default_factory=list[RayEvent])
    events: list[ClusterEvent] = field(default_factory=list[ClusterEvent])
    dashboard_error: str | None = None
    events_error: str | None = None
    notebook_url: str | None = None
    notebook_pods: list[NotebookPod] = field(default_factory=list)  # kuberay: next to the cluster
    notebooks_error: str | None = None
    activity: str = ""  # "in use: Ray job x running" or "idle for 12m (idle timeout 30m)"


@dataclass(frozen=True)
class NotebookLaunch:
    """What "Launch notebook" started: a local JupyterLab (its URL) or a notebook pod (how to open it)."""

    started_by: str
    url: str | None = None
    pod: str | None = None
    status: str | None = None
    open_with: str | None = None  # the command that forwards the pod to the user's laptop


class XRayService:
    """Clusters of the configured backends, seen by one user at a time."""

    def __init__(self, config: XRayConfig, providers: Mapping[str, ClusterProvider], run_statuses: RunStatuses,
                 notebooks_root: Path) -> None:  # fmt: skip
        self.config = config
        self.providers = dict(providers)
        self.run_statuses = run_statuses
        self.notebooks = NotebookSessions(notebooks_root, host=config.notebook_host)

    def provider(self, backend: str) -> ClusterProvider:
        """The provider of a served backend. Raises ClusterNotFoundError for another."""
        try:
            return self.providers[backend]
        except KeyError:
            raise ClusterNotFoundError(
                f"backend {backend!r} is not served here; X-Ray shows: {', '.join(self.providers)} (DML_XRAY_BACKENDS)"
            ) from None

    async def list_clusters(self, filters: Filters, identity: Identity) -> ClusterList:
        """Every backend's clusters, listed concurrently; a failing backend becomes a problem line."""

        async def one(backend: str, provider: ClusterProvider) -> list[ClusterInfo] | str:
            try:
                return await run_in_threadpool(provider.list)
            except (ClusterError, OSError) as exc:
                return f"{backend}: clusters could not be listed: {exc}"

        results = await asyncio.gather(*(one(b, p) for b, p in self.providers.items()))
        clusters = [c for r in results if not isinstance(r, str) for c in r]
        problems = [r for r in results if isinstance(r, str)]
        statuses = await self._statuses(clusters)
        now = datetime.now(UTC)
        rows = cluster_rows(clusters, filters, now=now, run_statuses=statuses, dagster_url=self.config.dagster_url,
                            identity=identity)  # fmt: skip
        return ClusterList(rows, len(clusters), problems, filters, now)

    async def _statuses(self, clusters: list[ClusterInfo]) -> dict[str, str | None]:
        run_ids = {c.run_id for c in clusters if c.run_id}
        if not run_ids:
            return {}
        try:
            return await run_in_threadpool(self.run_statuses, run_ids)
        except Exception:  # badges are a nicety: a broken run storage must not break the page
            return {}

    async def get(self, backend: str, namespace: str, name: str) -> ClusterInfo:
        """One cluster. Raises ClusterNotFoundError."""
        provider = self.provider(backend)
        return await run_in_threadpool(lambda: provider.get(name, namespace=namespace))

    async def row(self, cluster: ClusterInfo, identity: Identity) -> ClusterRow:
        """One cluster's row, with its run's status."""
        return cluster_row(cluster, now=datetime.now(UTC), run_statuses=await self._statuses([cluster]),
                           dagster_url=self.config.dagster_url, identity=identity)  # fmt: skip

    async def connection(self, cluster: ClusterInfo) -> ClusterConnection:
        """How to reach the cluster's dashboard. Raises DashboardUnavailableError (not ready, no route)."""
        provider = self.provider(cluster.backend)
        try:
            return await run_in_threadpool(lambda: provider.connect(cluster.name, namespace=cluster.namespace))
        except ClusterError as exc:
            raise DashboardUnavailableError(f"Ray dashboard not available: {exc}") from exc

    async def jobs(self, cluster: ClusterInfo) -> RayJobs:
        """The cluster's Jobs API (its methods block: call them in a thread)."""
        return RayJobs.of(await self.connection(cluster), timeout=5.0)

    async def detail(self, backend: str, namespace: str, name: str, identity: Identity) -> ClusterDetail:
        """Everything the cluster page shows, read concurrently."""
        cluster = await self.get(backend, namespace, name)
        detail = ClusterDetail(await self.row(cluster, identity))
        provider = self.provider(backend)
        notebook = self.notebooks.get(detail.cluster.key)
        detail.notebook_url = notebook.url if notebook else None

        async def provider_events() -> None:
            try:
                detail.events = await run_in_threadpool(lambda: provider.events(name, namespace=namespace))
            except ClusterError as exc:
                detail.events_error = f"events could not be read: {exc}"

        async def from_dashboard() -> None:
            try:
                connection = await self.connection(cluster)
                dashboard, jobs = RayDashboard(connection, timeout=5.0), RayJobs.of(connection, timeout=5.0)
                detail.nodes, detail.jobs, detail.ray_events = await asyncio.gather(
                    dashboard.nodes(), run_in_threadpool(jobs.list), dashboard.events()
                )
            except (DashboardUnavailableError, LookupError) as exc:
                detail.dashboard_error = str(exc) if isinstance(exc, DashboardUnavailableError) else f"not found: {exc}"
            await activity(None if detail.dashboard_error else detail.jobs)

        async def notebook_pods() -> None:
            notebooks = self._pod_notebooks(provider)
            if notebooks is None:
                return
            try:
                detail.notebook_pods = await run_in_threadpool(lambda: notebooks.list(name, namespace=namespace))
            except ClusterError as exc:
                detail.notebooks_error = f"notebook pods could not be listed: {exc}"

        async def activity(jobs: list[JobInfo] | None) -> None:
            now = datetime.now(UTC)
            seen = await run_in_threadpool(lambda: read_activity(provider, cluster, now=now, timeout=5.0, jobs=jobs))
            idle = idle_seconds(cluster, seen, now)
            timeout = cluster.idle_timeout_seconds
            limit = f"idle timeout {human_age(timeout)}" if timeout else "no idle timeout"
            detail.activity = (
                f"in use: {', '.join(seen.busy)}" if idle is None else f"idle for {human_age(idle)} ({limit})"
            )

        await asyncio.gather(provider_events(), from_dashboard(), notebook_pods())
        return detail

    @staticmethod
    def _pod_notebooks(provider: ClusterProvider) -> KubeRayNotebooks | None:
        """Notebook pods, where the backend runs notebooks next to the cluster (kuberay)."""
        if getattr(provider, "backend", "") != "kuberay":
            return None
        from discord_ml.cluster.kuberay.notebooks import KubeRayNotebooks
        from discord_ml.cluster.kuberay.provider import KubeRayProvider

        return KubeRayNotebooks(provider) if isinstance(provider, KubeRayProvider) else None

    async def delete(self, backend: str, namespace: str, name: str, identity: Identity) -> ClusterInfo:
        """Delete a cluster the user owns (or any, for an admin), and its notebook.

        Raises:
            ForbiddenError: not the owner nor an admin.
        """
        cluster = await self.get(backend, namespace, name)
        authorize(identity, cluster, "delete", self.config)
        provider = self.provider(backend)
        await run_in_threadpool(lambda: provider.delete(name, namespace=namespace))
        await run_in_threadpool(self.notebooks.stop, cluster_path(cluster))
        return cluster

    async def notebook(self, backend: str, namespace: str, name: str, identity: Identity) -> NotebookLaunch:
        """JupyterLab attached to the cluster: on kuberay the user's notebook pod next to it (created or
        found), elsewhere the cluster's JupyterLab run by X-Ray (the running one, or a new one).

        Raises:
            ForbiddenError: not the owner nor an admin (a notebook holds the cluster's token).
            DashboardUnavailableError: the cluster is not ready (local).
        """
        cluster = await self.get(backend, namespace, name)
        authorize(identity, cluster, "attach a notebook to", self.config)
        provider = self.provider(backend)
        notebooks = self._pod_notebooks(provider)
        if notebooks is not None:
            owner = sanitize_label_value(identity.user)
            pod = await run_in_threadpool(lambda: notebooks.launch(name, namespace=namespace, owner=owner))
            return NotebookLaunch(identity.user, pod=pod.name, status=pod.phase,
                                  open_with=f"dml notebook {name} -n {namespace} -b {backend}")  # fmt: skip
        try:
            connection = await run_in_threadpool(lambda: provider.connect(name, namespace=namespace))
        except ClusterError as exc:
            raise DashboardUnavailableError(f"no notebook: {exc}") from exc
        session = await run_in_threadpool(
            lambda: self.notebooks.launch(cluster_path(cluster), name, connection, identity.user, namespace=namespace)
        )
        return NotebookLaunch(session.started_by, url=session.url)
