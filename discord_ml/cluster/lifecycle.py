"""When a cluster is stale: past its TTL, or owned by a Dagster run that is over.

Shared by the sweep (which deletes such clusters) and X-Ray (which badges them). Run statuses are
Dagster's status names ("SUCCESS", "STARTED", ...) so this stays free of the dagster import; the
orchestration layer answers them (`orchestration.run_statuses`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from discord_ml.cluster.provider import ClusterInfo

FINISHED_RUN_STATUSES = frozenset({"SUCCESS", "FAILURE", "CANCELED"})

RunStatuses = Callable[[Collection[str]], dict[str, str | None]]
"""Run ids -> Dagster status name, in one batch; None: no such run; absent from the answer: unknown."""


def no_run_statuses(run_ids: Collection[str]) -> dict[str, str | None]:
    """Used when there is no Dagster instance to ask: every run is unknown."""
    return {}


@dataclass(frozen=True)
class Staleness:
    """Why a cluster should not be running any more."""

    kind: Literal["expired", "orphaned", "crashed"]
    reason: str


def staleness(cluster: ClusterInfo, run_statuses: Mapping[str, str | None], now: datetime) -> Staleness | None:
    """`expired` past its TTL; `orphaned` when its Dagster run is over or gone; `crashed` when the run
    still counts as running but the process that created the cluster for it is gone; else None.
    A run absent from `run_statuses` is unknown: neither over nor gone."""
    if cluster.expired(now):
        age = int((now - cluster.created).total_seconds())
        return Staleness("expired", f"past its TTL: {age}s old, TTL {cluster.ttl_seconds}s")
    if cluster.run_id is None:
        return None
    status = run_statuses.get(cluster.run_id, "UNKNOWN")
    if status is None:
        return Staleness("orphaned", f"its Dagster run {cluster.run_id} does not exist")
    if status in FINISHED_RUN_STATUSES:
        return Staleness("orphaned", f"its Dagster run {cluster.run_id} is {status}")
    if cluster.creator_alive is False:
        # Teardown never ran: the run worker was killed (OOM, SIGKILL, machine sleep) mid-run.
        return Staleness("crashed", f"its Dagster run {cluster.run_id} is {status} but the process that ran it "
                         "is gone (the run worker crashed)")  # fmt: skip
    return None
