"""The platform check runs as a real Dagster run on a real local Ray cluster and cleans up."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest

from discord_ml.cluster.local import LocalRayCluster, processes_using
from discord_ml.definitions import defs

pytestmark = pytest.mark.slow


def test_platform_check_materializes_through_a_real_cluster(dagster_instance: dg.DagsterInstance) -> None:
    job = defs.resolve_job_def("platform_check")
    config = {"ops": {"ray_cluster_check": {"config": {"workers": 2, "tasks": 6}}}}
    result = job.execute_in_process(instance=dagster_instance, run_config=config)
    assert result.success

    [materialization] = result.asset_materializations_for_node("ray_cluster_check")
    meta: dict[str, Any] = {k: v.value for k, v in materialization.metadata.items()}
    assert meta["alive_nodes"] == 3
    assert meta["tasks"] == 6
    assert meta["worker_nodes_used"] >= 1
    assert abs(float(meta["pi_estimate"]) - 3.14159) < 0.05
    assert str(meta["ray_job_id"]).startswith("raysubmit_")

    # The Ray job's own lines are individual records in the run's event log, in order.
    records = dagster_instance.all_logs(result.run_id)
    messages = [r.user_message for r in records if r.user_message.startswith("task ")]
    assert [m.split(" ")[1] for m in messages] == [f"{i}/6" for i in range(1, 7)]

    # The cluster was torn down: none of its processes remain.
    assert processes_using(str(meta["cluster"])) == []


def test_bad_config_fails_before_any_cluster_starts(
    dagster_instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []
    monkeypatch.setattr(LocalRayCluster, "start", lambda self, **_: started.append(self.spec.cluster_name))
    job = defs.resolve_job_def("platform_check")
    config = {"ops": {"ray_cluster_check": {"config": {"gpu_pool": "h200"}}}}
    result = job.execute_in_process(instance=dagster_instance, run_config=config, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    error = failure.step_failure_data.error
    assert error is not None
    assert "gpu_pool 'h200' is not defined; known pools: cpu, t4, l4, a100, h100" in error.to_string()
    assert started == [], "validation must fail before any cluster is started"
