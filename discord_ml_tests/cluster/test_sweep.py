"""The sweep's plan: orphans of ended runs and expired clusters are deleted, live runs' clusters and
clusters in use kept, idle ones reaped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from discord_ml.cluster.activity import Activity
from discord_ml.cluster.provider import ClusterInfo, ClusterStatus
from discord_ml.cluster.sweep import plan_sweep

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def _info(
    name: str,
    *,
    run_id: str | None = None,
    age: timedelta = timedelta(minutes=5),
    managed: bool = True,
    creator_alive: bool | None = None,
    idle_timeout: int | None = None,
    last_active: datetime | None = None,
) -> ClusterInfo:
    labels = {"app.kubernetes.io/managed-by": "discord-ml" if managed else "someone-else"}
    if run_id:
        labels["dagster.io/run-id"] = run_id
    return ClusterInfo(name=name, namespace="ml", backend="local", owner="o", team="t", purpose="train", gpu_pool="cpu",
                       gpu_type="none", gpus_per_worker=0, workers_ready=1, workers_desired=1,
                       status=ClusterStatus.READY, reason="", created=NOW - age, dashboard_url=None, labels=labels,
                       ttl_seconds=3600, creator_alive=creator_alive, idle_timeout_seconds=idle_timeout,
                       last_active=last_active)  # fmt: skip


def test_plan_sweep_reasons() -> None:
    statuses = {"done": "FAILURE", "live": "STARTED", "gone": None}
    clusters = [
        _info("orphan", run_id="done"),
        _info("alive", run_id="live", creator_alive=True),
        _info("crashed", run_id="live", creator_alive=False),
        _info("cli-made", creator_alive=False),  # `dml cluster create` returns; its cluster lives on
        _info("vanished", run_id="gone"),
        _info("expired", age=timedelta(hours=2)),
        _info("adhoc"),
        _info("foreign", run_id="done", managed=False),
    ]
    actions = {a.cluster.name: a.reason for a in plan_sweep(clusters, statuses, NOW)}
    assert actions == {
        "orphan": "its Dagster run done is FAILURE",
        "vanished": "its Dagster run gone does not exist",
        "crashed": "its Dagster run live is STARTED but the process that ran it is gone (the run worker crashed)",
        "expired": "past its TTL: 7200s old, TTL 3600s",
    }


def test_plan_sweep_keeps_clusters_in_use_and_reaps_idle_ones() -> None:
    busy = {"busy-expired", "busy-idle", "orphan-busy"}
    last_seen = {"quiet": NOW - timedelta(minutes=50), "recently-used": NOW - timedelta(minutes=10)}

    def activity(cluster: ClusterInfo) -> Activity:
        if cluster.name in busy:
            return Activity(busy=["Ray job raysubmit_1 running"], last=NOW)
        return Activity(last=last_seen.get(cluster.name))

    clusters = [
        _info("busy-expired", age=timedelta(hours=2)),  # past its TTL but a job runs: kept
        _info("busy-idle", age=timedelta(minutes=50), idle_timeout=1800),
        _info("orphan-busy", run_id="done"),  # its run is over: deleted even with a job left running
        _info("quiet", age=timedelta(minutes=55), idle_timeout=1800),
        _info("recently-used", age=timedelta(minutes=55), idle_timeout=1800),  # a job ended 10 min ago
        _info("heartbeat", age=timedelta(minutes=55), idle_timeout=1800, last_active=NOW - timedelta(minutes=2)),
    ]
    planned = {a.cluster.name: a for a in plan_sweep(clusters, {"done": "SUCCESS"}, NOW, activity)}
    assert {n: (a.kind, a.delete) for n, a in planned.items()} == {
        "busy-expired": ("busy", False), "busy-idle": ("busy", False), "orphan-busy": ("orphaned", True),
        "quiet": ("idle", True)}  # fmt: skip
    assert planned["busy-expired"].reason == (
        "kept, past its TTL: 7200s old, TTL 3600s, but in use: Ray job raysubmit_1 running"
    )
    assert planned["quiet"].reason.startswith("idle for 50m (timeout 30m): no Ray job, busy notebook kernel or Dagster")
