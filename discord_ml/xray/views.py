"""Pure page models: what each page and its JSON twin show, built from provider snapshots.

No I/O here: the app gathers clusters, run statuses and dashboard payloads, these functions shape them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

from discord_ml.cluster.duration import human_age
from discord_ml.cluster.lifecycle import staleness
from discord_ml.cluster.provider import ClusterIdentity, ClusterInfo, ClusterStatus
from discord_ml.xray.auth import Identity

_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
STATUSES = tuple(s.value for s in ClusterStatus)


class FilterError(ValueError):
    """A filter parameter is not valid; the message names it, its value and the fix."""


@dataclass(frozen=True)
class Filters:
    """The clusters page's filters; empty strings match everything."""

    owner: str = ""
    team: str = ""
    status: str = ""

    @classmethod
    def parse(cls, owner: str | None, team: str | None, status: str | None) -> Filters:
        """Validate query parameters.

        Raises:
            FilterError: a value no cluster could ever have.
        """
        owner, team, status = (owner or "").strip(), (team or "").strip(), (status or "").strip().lower()
        for name, value in (("owner", owner), ("team", team)):
            if value and not _LABEL_VALUE.match(value):
                raise FilterError(
                    f"{name} {value!r} is not a valid label value: use up to 63 letters, digits, '-', '_' "
                    "or '.', starting and ending with a letter or digit"
                )
        if status and status not in STATUSES:
            raise FilterError(f"status {status!r} is not known; use one of: {', '.join(STATUSES)}")
        return cls(owner, team, status)

    def match(self, cluster: ClusterInfo) -> bool:
        """Whether a cluster passes every chosen filter."""
        return ((not self.owner or cluster.owner == self.owner) and (not self.team or cluster.team == self.team)
                and (not self.status or cluster.status.value == self.status))  # fmt: skip

    def query(self) -> dict[str, str]:
        """The filters as query parameters (the links that keep them)."""
        return {k: v for k, v in asdict(self).items() if v}


@dataclass(frozen=True)
class Badge:
    """An idle/orphan marker on a cluster row."""

    kind: str  # "expired" | "orphaned" | "crashed"
    reason: str


@dataclass(frozen=True, kw_only=True)
class ClusterRow(ClusterIdentity):
    """One cluster as the clusters page and /api/clusters show it."""

    key: str
    gpus: int
    gpu_label: str
    workers_ready: int
    workers_desired: int
    status: str
    reason: str
    created: str
    age_seconds: int
    age: str
    ttl_seconds: int | None
    dashboard_url: str | None
    run_id: str | None
    run_status: str | None
    dagster_run_url: str | None
    href: str
    may_manage: bool
    badges: list[Badge] = field(default_factory=list[Badge])
    price_per_hour: float | None = None  # estimated, from the pool catalog; None: the pool has no price
    cost_so_far: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def cluster_path(cluster: ClusterInfo) -> str:
    """The cluster's path under X-Ray's pages and API: /<backend>/<namespace>/<name>."""
    return "/".join(quote(part, safe="") for part in (cluster.backend, cluster.namespace, cluster.name))


def gpu_label(cluster: ClusterInfo) -> tuple[int, str]:
    """Total GPUs and "a100 × 8" (or "cpu" for a CPU pool)."""
    total = cluster.gpus_per_worker * cluster.workers_desired
    if not total or cluster.gpu_type in ("", "none"):
        return 0, "cpu"
    return total, f"{cluster.gpu_type} × {total}"


def cluster_row(cluster: ClusterInfo, *, now: datetime, run_statuses: Mapping[str, str | None], dagster_url: str,
                identity: Identity) -> ClusterRow:  # fmt: skip
    """The row of one cluster; `run_statuses` holds the status of each known run id (absent: unknown)."""
    run_id = cluster.run_id
    known = run_id is not None and run_id in run_statuses
    stale = staleness(cluster, run_statuses, now)
    gpus, label = gpu_label(cluster)
    age = (now - cluster.created).total_seconds()
    price = _price(cluster)
    return ClusterRow(
        **cluster.identity(), key=cluster_path(cluster), gpus=gpus, gpu_label=label,
        workers_ready=cluster.workers_ready,
        workers_desired=cluster.workers_desired, status=cluster.status.value, reason=cluster.reason,
        created=cluster.created.isoformat(), age_seconds=int(age), age=human_age(age),
        ttl_seconds=cluster.ttl_seconds, dashboard_url=cluster.dashboard_url, run_id=run_id,
        run_status=(run_statuses.get(run_id) or "missing") if known and run_id else None,
        dagster_run_url=f"{dagster_url.rstrip('/')}/runs/{quote(run_id)}" if run_id else None,
        href=f"/clusters/{cluster_path(cluster)}", may_manage=identity.may_manage(cluster),
        badges=[Badge(stale.kind, stale.reason)] if stale else [], price_per_hour=price,
        cost_so_far=None if price is None else price * max(age, 0) / 3600,
    )  # fmt: skip


def _price(cluster: ClusterInfo) -> float | None:
    from discord_ml.cluster.pools import PoolError
    from discord_ml.cluster.usage import rates

    try:
        return rates(cluster.as_json()).price_per_hour
    except PoolError:  # a broken catalog costs the column, not the page
        return None


def cluster_rows(
    clusters: Sequence[ClusterInfo],
    filters: Filters,
    *,
    now: datetime,
    run_statuses: Mapping[str, str | None],
    dagster_url: str,
    identity: Identity,
) -> list[ClusterRow]:
    """The filtered rows, newest cluster first."""
    chosen = sorted((c for c in clusters if filters.match(c)), key=lambda c: c.created, reverse=True)
    return [cluster_row(c, now=now, run_statuses=run_statuses, dagster_url=dagster_url, identity=identity)
            for c in chosen]  # fmt: skip
