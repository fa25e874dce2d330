"""The sweep: which platform-managed clusters to delete, and deleting them.

A cluster goes when its Dagster run is over (a crashed run worker never reached its teardown), or
when it is past its TTL or idle longer than its idle timeout, unless something uses it: a Ray job, a
busy notebook kernel, a Dagster step's heartbeat. Busy clusters are kept, and say what holds them.
The Dagster sensor (`orchestration.sweeper`) and `dml gc` run it; run statuses come in one batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from discord_ml.cluster.activity import Activity, idle_seconds, read_activity
from discord_ml.cluster.conventions import MANAGED_BY
from discord_ml.cluster.duration import human_age
from discord_ml.cluster.lifecycle import RunStatuses, staleness
from discord_ml.cluster.provider import ClusterInfo, ClusterProvider

ActivityLookup = Callable[[ClusterInfo], Activity]
MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}


@dataclass(frozen=True)
class SweepAction:
    """A cluster to delete (or, `delete=False`, kept although stale because it is in use) and why."""

    cluster: ClusterInfo
    reason: str
    kind: str = "orphaned"  # lifecycle.Staleness.kind, "idle", or "busy" (kept)
    delete: bool = True

    def __str__(self) -> str:
        return f"{self.cluster.namespace}/{self.cluster.name} ({self.reason})"


def plan_sweep(clusters: Sequence[ClusterInfo], run_statuses: Mapping[str, str | None], now: datetime,
               activity: ActivityLookup | None = None) -> list[SweepAction]:  # fmt: skip
    """The actions for `clusters` (others than the platform's are ignored).

    Args:
        clusters: the clusters to judge.
        run_statuses: Dagster status name of each known run id (None: the run does not exist;
            absent: unknown, neither over nor gone).
        now: the time to judge by.
        activity: what uses a cluster (asked only of clusters that are expired or may be idle).
    """
    actions = []
    for cluster in clusters:
        if cluster.labels.get("app.kubernetes.io/managed-by") != MANAGED_BY:
            continue
        run_stale = staleness(dataclasses.replace(cluster, ttl_seconds=None), run_statuses, now)
        if run_stale is not None:
            actions.append(SweepAction(cluster, run_stale.reason, run_stale.kind))
            continue
        expired = staleness(cluster, run_statuses, now)
        timeout = cluster.idle_timeout_seconds
        quiet_since = max(cluster.created, cluster.last_active or cluster.created)
        maybe_idle = timeout is not None and (now - quiet_since).total_seconds() > timeout
        if expired is None and not maybe_idle:
            continue
        seen = activity(cluster) if activity is not None else Activity()
        if seen.busy:
            why = expired.reason if expired else "idle timeout reached by the last heartbeat"
            actions.append(SweepAction(cluster, f"kept, {why}, but in use: {', '.join(seen.busy)}", "busy", False))
        elif expired is not None:
            actions.append(SweepAction(cluster, expired.reason, expired.kind))
        else:
            idle = idle_seconds(cluster, seen, now) or 0.0
            if timeout is not None and idle > timeout:
                since = (now - timedelta(seconds=idle)).strftime("%Y-%m-%d %H:%M:%S")
                why = (f"idle for {human_age(idle)} (timeout {human_age(timeout)}): no Ray job, busy notebook kernel "
                       f"or Dagster step since {since}")  # fmt: skip
                actions.append(SweepAction(cluster, why, "idle"))
    return actions


def sweep(provider: ClusterProvider, run_statuses: RunStatuses, *, now: datetime | None = None,
          dry_run: bool = False) -> list[SweepAction]:  # fmt: skip
    """Plan the sweep over the provider's clusters (their runs' statuses asked in one batch) and, unless
    `dry_run`, delete those to delete; their job logs are archived first (the provider's delete)."""
    now = now or datetime.now(UTC)
    clusters = provider.list(MANAGED)
    statuses = run_statuses({c.run_id for c in clusters if c.run_id})
    actions = plan_sweep(clusters, statuses, now, lambda cluster: read_activity(provider, cluster, now=now))
    if not dry_run:
        for action in actions:
            if action.delete:
                provider.delete(action.cluster.name, namespace=action.cluster.namespace)
    return actions
