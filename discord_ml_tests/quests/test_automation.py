"""The sweeper: orphans of ended runs and expired clusters are deleted, live runs' clusters kept."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from discord_ml.cluster.activity import Activity
from discord_ml.cluster.local.nodes import cluster_dir_prefix
from discord_ml.cluster.local.processes import processes_using
from discord_ml.cluster.local.provider import LocalRayProvider
from discord_ml.cluster.provider import ClusterInfo, ClusterStatus
from discord_ml.cluster.spec import ClusterSpec
from discord_ml.orchestration.resources import RayClusterResource
from discord_ml.quests.automation import plan_sweep, ray_cluster_sweeper

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
    statuses = {"done": dg.DagsterRunStatus.FAILURE, "live": dg.DagsterRunStatus.STARTED}
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
    actions = {a.cluster.name: a.reason for a in plan_sweep(clusters, statuses.get, NOW)}
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
    planned = {
        a.cluster.name: a for a in plan_sweep(clusters, {"done": dg.DagsterRunStatus.SUCCESS}.get, NOW, activity)
    }
    assert {n: (a.kind, a.delete) for n, a in planned.items()} == {
        "busy-expired": ("busy", False), "busy-idle": ("busy", False), "orphan-busy": ("orphaned", True),
        "quiet": ("idle", True)}  # fmt: skip
    assert planned["busy-expired"].reason == (
        "kept, past its TTL: 7200s old, TTL 3600s, but in use: Ray job raysubmit_1 running"
    )
    assert planned["quiet"].reason.startswith("idle for 50m (timeout 30m): no Ray job, busy notebook kernel or Dagster")


@pytest.mark.slow
def test_sensor_deletes_the_orphan_and_keeps_the_live_runs_cluster(dagster_instance: dg.DagsterInstance) -> None:
    provider = LocalRayProvider()
    finished, running = str(uuid.uuid4()), str(uuid.uuid4())
    for run_id, status in ((finished, dg.DagsterRunStatus.FAILURE), (running, dg.DagsterRunStatus.STARTED)):
        dagster_instance.add_run(dg.DagsterRun(job_name="daily_pipeline", run_id=run_id, status=status))
    for name, run_id in (("sweep-orphan", finished), ("sweep-live", running)):
        provider.create(
            ClusterSpec.build(name=name, owner="pytest", workers=0, head_memory="1Gi", dagster_run_id=run_id)
        )
    try:
        resources = {"ray_cluster": RayClusterResource()}
        with dg.build_sensor_context(instance=dagster_instance, resources=resources) as context:
            result = ray_cluster_sweeper(context)
        assert isinstance(result, dg.SkipReason)
        assert (
            result.skip_message == f"deleted 1 Ray cluster(s): ml/sweep-orphan (its Dagster run {finished} is FAILURE)"
        )
        assert [c.name for c in provider.list()] == ["sweep-live"]
        assert processes_using(str(cluster_dir_prefix("sweep-orphan"))) == []
        with dg.build_sensor_context(instance=dagster_instance, resources=resources) as context:
            again = ray_cluster_sweeper(context)
        assert isinstance(again, dg.SkipReason) and again.skip_message == "no orphaned, expired or idle Ray clusters"
    finally:
        provider.delete("sweep-orphan")
        provider.delete("sweep-live")
