"""One cluster's Ray dashboard beyond its jobs, as X-Ray reads it: nodes and their use, events.

Jobs and their logs come from `RayJobs`, the platform's one Jobs API client.

Every failure to reach or understand the dashboard becomes `DashboardUnavailableError` with a message
the page shows inline. Parsers are pure functions so they are tested on recorded payloads too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from discord_ml.cluster.provider import ClusterConnection
from discord_ml.jobs.client import answer, unreachable
from discord_ml.jobs.records import job_time


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
            raise unreachable(self.base, exc) from exc
        return answer(response, self.base, path)

    async def nodes(self) -> list[NodeUsage]:
        """Every node and what it uses now, head first."""
        return parse_nodes(await self._get("/nodes?view=summary"))

    async def events(self, limit: int = 20) -> list[RayEvent]:
        """Ray's latest `limit` events, oldest first."""
        return parse_events(await self._get(f"/api/v0/cluster_events?limit={limit}"))[-limit:]
