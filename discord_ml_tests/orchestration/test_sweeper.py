"""The sweeper sensor on real local clusters: the orphan of an ended run is deleted, the live run's kept."""

from __future__ import annotations

import uuid

import dagster as dg
import pytest

from discord_ml.cluster.local.processes import cluster_dir_prefix, processes_using
from discord_ml.cluster.local.provider import LocalRayProvider
from discord_ml.cluster.spec import ClusterSpec
from discord_ml.orchestration.resources import RayClusterResource
from discord_ml.orchestration.sweeper import ray_cluster_sweeper


@pytest.mark.integration
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
