"""One cluster's Ray dashboard, as X-Ray reads it: nodes and their use, jobs, logs (tailed live), events.

Every failure to reach or understand the dashboard becomes `DashboardUnavailable` with a message the
page shows inline. Parsers are pure functions so they are tested on recorded payloads too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from discord_ml.cluster.provider import ClusterConnection
from discord_ml.jobs.client import job_time, plain_text
from discord_ml.xray.views import FilterError

JOB_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:")


class DashboardUnavailable(Exception):  # noqa: N818 - it reads as a state on the page
    """The cluster's dashboard could not be reached or answered nonsense."""


@dataclass(frozen=True)
class NodeUsage:
    """One Ray node and what it uses right now."""

    node_id: str
    role: str  # "head" | "worker"
    state: str
    host: str
    cpus: float  # logical CPUs Ray schedules on
    cpu_percent: float  # host CPU use
    gpus: float
    gpu_utilization: list[float]  # percent, one per GPU the node sees
    memory_used: int
    memory_total: int
    object_store_used: int


@dataclass(frozen=True)
class JobSummary:
    """One Ray job."""

    job_id: str  # the submission id when there is one: the id the Jobs API's log endpoints take
    status: str
    entrypoint: str
    message: str
    start: datetime | None
    end: datetime | None
    duration_seconds: float | None
    has_logs: bool


@dataclass(frozen=True)
class RayEvent:
    """An event Ray itself recorded (autoscaler, jobs, nodes)."""

    time: datetime | None
    severity: str
    source: str
    message: str


def parse_nodes(payload: Mapping[str, Any]) -> list[NodeUsage]:
    """Nodes from `GET /nodes?view=summary`, head first."""
    nodes = []
    for entry in payload.get("data", {}).get("summary", []):
        raylet = entry.get("raylet") or {}
        total = raylet.get("resourcesTotal") or {}
        mem = entry.get("mem") or [0, 0, 0, 0]
        nodes.append(NodeUsage(
            node_id=str(raylet.get("nodeId", "")), role="head" if raylet.get("isHeadNode") else "worker",
            state=str(raylet.get("state", "UNKNOWN")), host=str(entry.get("ip") or entry.get("hostname") or ""),
            cpus=float(total.get("CPU", 0)), cpu_percent=float(entry.get("cpu") or 0), gpus=float(total.get("GPU", 0)),
            gpu_utilization=[float(g.get("utilizationGpu") or 0) for g in entry.get("gpus") or []],
            memory_used=int(mem[3]) if len(mem) > 3 else 0, memory_total=int(mem[0]) if mem else 0,
            object_store_used=int(raylet.get("objectStoreUsedMemory") or 0),
        ))  # fmt: skip
    return sorted(nodes, key=lambda n: (n.role != "head", n.node_id))


def parse_job(entry: Mapping[str, Any], now: datetime) -> JobSummary:
    """One job of `GET /api/jobs/`."""
    start, end = job_time(entry.get("start_time")), job_time(entry.get("end_time"))
    submission = entry.get("submission_id")
    duration = ((end or now) - start).total_seconds() if start else None
    return JobSummary(
        job_id=str(submission or entry.get("job_id") or ""), status=str(entry.get("status", "UNKNOWN")),
        entrypoint=str(entry.get("entrypoint") or ""), message=str(entry.get("message") or ""), start=start,
        end=end, duration_seconds=duration, has_logs=bool(submission),
    )  # fmt: skip


def parse_jobs(payload: Any, now: datetime) -> list[JobSummary]:
    """Jobs from `GET /api/jobs/`, newest first."""
    if not isinstance(payload, list):
        raise DashboardUnavailable("the Jobs API answered something that is not a job list")
    jobs = [parse_job(entry, now) for entry in payload if isinstance(entry, Mapping)]
    oldest = datetime.min.replace(tzinfo=UTC)
    return sorted(jobs, key=lambda j: j.start or oldest, reverse=True)


def parse_events(payload: Mapping[str, Any]) -> list[RayEvent]:
    """Events from `GET /api/v0/cluster_events`, oldest first."""
    items = payload.get("data", {}).get("result", {}).get("result", [])
    events = []
    for item in items:
        when = item.get("time")
        try:
            at = datetime.fromisoformat(when).astimezone(UTC) if isinstance(when, str) else job_time(when)
        except ValueError:
            at = None
        events.append(RayEvent(at, str(item.get("severity", "INFO")), str(item.get("source_type", "")),
                               str(item.get("message", ""))))  # fmt: skip
    return sorted(events, key=lambda e: e.time or datetime.min.replace(tzinfo=UTC))


def check_job_id(job_id: str) -> str:
    """Refuse ids that could not be a Ray submission id (they end up in dashboard URLs).

    Raises:
        FilterError: naming the id and what is allowed.
    """
    if not job_id or len(job_id) > 128 or not set(job_id) <= JOB_ID_CHARS:
        raise FilterError(
            f"job id {job_id!r} is not valid: use the id shown on the cluster page (letters, digits, _-.:)"
        )
    return job_id


class RayDashboard:
    """Async client of one cluster's dashboard."""

    def __init__(self, connection: ClusterConnection, *, timeout: float = 5.0) -> None:
        self.base = connection.dashboard_url.rstrip("/")
        self.headers = dict(connection.headers)
        self.timeout = timeout

    async def _get(self, path: str) -> Any:
        try:
            async with httpx.AsyncClient(timeout=self.timeout, headers=self.headers) as client:
                response = await client.get(self.base + path)
        except httpx.HTTPError as exc:
            raise DashboardUnavailable(f"Ray dashboard {self.base} unreachable: {exc or type(exc).__name__}") from exc
        if response.status_code == 404:
            raise LookupError(f"{path} is not on this cluster's dashboard")
        if response.status_code >= 400:
            raise DashboardUnavailable(f"Ray dashboard {self.base}{path} answered HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError as exc:
            raise DashboardUnavailable(f"Ray dashboard {self.base}{path} answered non-JSON") from exc

    async def nodes(self) -> list[NodeUsage]:
        return parse_nodes(await self._get("/nodes?view=summary"))

    async def jobs(self) -> list[JobSummary]:
        return parse_jobs(await self._get("/api/jobs/"), datetime.now(UTC))

    async def job(self, job_id: str) -> JobSummary:
        """One job. Raises LookupError when the cluster has no such job."""
        try:
            payload = await self._get(f"/api/jobs/{quote(check_job_id(job_id))}")
        except LookupError:
            raise LookupError(f"no Ray job {job_id!r} on this cluster; the cluster page lists its jobs") from None
        return parse_job(payload, datetime.now(UTC))

    async def events(self, limit: int = 20) -> list[RayEvent]:
        return parse_events(await self._get(f"/api/v0/cluster_events?limit={limit}"))[-limit:]

    async def logs(self, job_id: str) -> str:
        """Everything the job printed so far. Raises LookupError when there is no such job."""
        payload = await self._get(f"/api/jobs/{quote(check_job_id(job_id))}/logs")
        return plain_text(str(payload.get("logs", ""))) if isinstance(payload, Mapping) else ""

    async def tail(self, job_id: str, *, heartbeat: float = 15.0) -> AsyncIterator[str | None]:
        """Log lines as the job prints them (from the start), until the job ends; None every
        `heartbeat` seconds of silence, so the caller can keep its own connection alive."""
        import aiohttp  # ray[default] depends on it; httpx has no websockets

        url = f"{self.base.replace('http', 'ws', 1)}/api/jobs/{quote(check_job_id(job_id))}/logs/tail"
        pending = ""
        try:
            async with aiohttp.ClientSession(headers=self.headers) as session, session.ws_connect(url) as ws:
                while True:
                    try:
                        message = await ws.receive(timeout=heartbeat)
                    except TimeoutError:
                        yield None
                        continue
                    if message.type != aiohttp.WSMsgType.TEXT:
                        break
                    *lines, pending = (pending + str(message.data)).split("\n")
                    for line in lines:
                        yield plain_text(line)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise DashboardUnavailable(f"log tail of job {job_id} on {self.base} failed: {exc}") from exc
        if pending:
            yield plain_text(pending)
