"""When a cluster is stale: past its TTL, or owned by a Dagster run that is over.

Shared by the sweeper (which deletes such clusters) and X-Ray (which badges them). Run statuses are
Dagster's status names ("SUCCESS", "STARTED", ...) so this stays free of the dagster import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from discord_ml.cluster.provider import ClusterInfo

FINISHED_RUN_STATUSES = frozenset({"SUCCESS", "FAILURE", "CANCELED"})

RunStatusLookup = Callable[[str], str | None]
"""A Dagster run's status name by run id; None when no such run exists."""


@dataclass(frozen=True)
class Staleness:
    """Why a cluster should not be running any more."""

    kind: Literal["expired", "orphaned", "crashed"]
    reason: str


def staleness(cluster: ClusterInfo, run_status: RunStatusLookup, now: datetime) -> Staleness | None:
    """`expired` past its TTL; `orphaned` when its Dagster run is over or gone; `crashed` when the run
    still counts as running but the process that created the cluster for it is gone; else None."""
    if cluster.expired(now):
        age = int((now - cluster.created).total_seconds())
        return Staleness("expired", f"past its TTL: {age}s old, TTL {cluster.ttl_seconds}s")
    if cluster.run_id is None:
        return None
    status = run_status(cluster.run_id)
    if status is None:
        return Staleness("orphaned", f"its Dagster run {cluster.run_id} does not exist")
    if status in FINISHED_RUN_STATUSES:
        return Staleness("orphaned", f"its Dagster run {cluster.run_id} is {status}")
    if cluster.creator_alive is False:
        # Teardown never ran: the run worker was killed (OOM, SIGKILL, machine sleep) mid-run.
        return Staleness("crashed", f"its Dagster run {cluster.run_id} is {status} but the process that ran it "
                         "is gone (the run worker crashed)")  # fmt: skip
    return None
