"""RayClusterResource: one real cluster per run, jobs through the Ray Jobs API, logs into the event
log in order, Pipes metadata on the materialization, and no cluster or process left afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from discord_ml.cluster.local.processes import cluster_dir_prefix, processes_using
from discord_ml.cluster.local.provider import LocalRayProvider
from discord_ml.definitions import defs
from discord_ml.orchestration.resources import cluster_name_for_run
from discord_ml_tests.support.dagster_jobs import MARKER, failing_job
from discord_ml_tests.support.k8s_emulator import KubeEmulator

pytestmark = pytest.mark.integration


def _no_processes_left(cluster: str) -> bool:
    return processes_using(str(cluster_dir_prefix(cluster))) == []


def _errors(result: dg.ExecuteInProcessResult) -> str:
    texts = []
    for event in result.all_events:
        data = event.event_specific_data
        error = getattr(data, "error", None)
        if error is not None:
            texts.append(error.to_string())
    return "\n".join(texts)


def test_cluster_names_follow_the_run() -> None:
    assert cluster_name_for_run("platform_check", "5b0d7c62-aaaa") == "platform-check-5b0d7c62"
    assert cluster_name_for_run("2024_backfill", "abcdef12") == "j2024-backfill-abcdef12"


def test_run_materializes_through_its_own_cluster_and_cleans_up(dagster_instance: dg.DagsterInstance) -> None:
    config = {
        "ops": {"ray_cluster_check": {"config": {"tasks": 6}}},
        "resources": {"ray_cluster": {"config": {"workers": 2}}},
    }
    result = defs.resolve_job_def("platform_check").execute_in_process(instance=dagster_instance, run_config=config)
    assert result.success
    [materialization] = result.asset_materializations_for_node("ray_cluster_check")
    meta: dict[str, Any] = {k: v.value for k, v in materialization.metadata.items()}
    # Pipes metadata reported from inside the Ray job...
    assert (meta["alive_nodes"], meta["tasks"]) == (3, 6)
    assert abs(float(meta["pi_estimate"]) - 3.14159) < 0.05
    # ...plus what the platform adds.
    assert meta["ray_cluster"] == cluster_name_for_run("platform_check", result.run_id)
    assert str(meta["ray_job_id"]).startswith("raysubmit_")
    assert str(meta["ray_dashboard"]).startswith("http://127.0.0.1:")
    # Every line the job printed is its own record in the run's event log, in order.
    messages = [r.user_message for r in dagster_instance.all_logs(result.run_id)]
    tasks = [m for m in messages if m.startswith("task ")]
    assert [m.split(" ")[1] for m in tasks] == [f"{i}/6" for i in range(1, 7)]
    assert not any("__dagster_pipes_version" in m for m in messages), "Pipes messages are not log lines"
    # The cluster carried the run id and is gone, with all its processes.
    assert LocalRayProvider().list({"dagster.io/run-id": result.run_id}) == []
    assert _no_processes_left(meta["ray_cluster"])


def test_failed_ray_job_fails_the_step_with_its_last_lines(dagster_instance: dg.DagsterInstance) -> None:
    result = failing_job().execute_in_process(instance=dagster_instance, raise_on_error=False)
    assert not result.success
    errors = _errors(result)
    assert "exit code 4" in errors
    assert "boom: bad shard" in errors and "step 4" in errors
    name = cluster_name_for_run("failing_job", result.run_id)
    assert LocalRayProvider().list({"dagster.io/run-id": result.run_id}) == []
    assert _no_processes_left(name)


def test_on_failure_keep_leaves_the_cluster_for_debugging(dagster_instance: dg.DagsterInstance) -> None:
    result = failing_job(cleanup="on_failure_keep").execute_in_process(instance=dagster_instance, raise_on_error=False)
    assert not result.success
    provider = LocalRayProvider()
    [kept] = provider.list({"dagster.io/run-id": result.run_id})
    try:
        assert kept.status == "ready"
        warnings = [
            r.user_message for r in dagster_instance.all_logs(result.run_id) if "keeping Ray cluster" in r.user_message
        ]
        assert warnings and f"dml cluster delete {kept.name}" in warnings[0]
    finally:
        provider.delete(kept.name)
    assert _no_processes_left(kept.name)


def test_invalid_cluster_config_fails_before_anything_starts(
    dagster_instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: list[str] = []
    monkeypatch.setattr(LocalRayProvider, "create", lambda self, spec: created.append(spec.cluster_name))
    config = {"resources": {"ray_cluster": {"config": {"gpu_pool": "h200"}}}}
    result = defs.resolve_job_def("platform_check").execute_in_process(
        instance=dagster_instance, run_config=config, raise_on_error=False
    )
    assert not result.success
    assert "gpu_pool 'h200' is not defined; known pools: cpu, t4, l4, a100, h100" in _errors(result)
    assert created == []


RUN_SLOW_JOB = """
import sys, dagster as dg
from discord_ml_tests.support.dagster_jobs import slow_job
instance = dg.DagsterInstance.from_config(sys.argv[1])
result = dg.execute_job(dg.reconstructable(slow_job), instance=instance, raise_on_error=False)
print("RUN_ID", result.run_id, "SUCCESS" if result.success else "FAILURE", flush=True)
"""


@contextmanager
def _slow_run(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dg.DagsterInstance, str]]:
    """A run worker process running `slow_job` on its own instance, once its Ray job runs:
    (the process, the instance, the run id)."""
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    worker = subprocess.Popen([sys.executable, "-c", RUN_SLOW_JOB, str(tmp_path)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)  # fmt: skip
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        deadline, run_id = time.monotonic() + 180, None
        while run_id is None and time.monotonic() < deadline:
            for run in instance.get_runs():
                if any(MARKER in r.user_message for r in instance.all_logs(run.run_id)):
                    run_id = run.run_id
            time.sleep(0.5)
        assert run_id is not None, "the Ray job never started"
        yield worker, instance, run_id
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        assert worker.stdout is not None
        worker.stdout.close()
        instance.dispose()


def test_terminated_run_stops_its_ray_job_and_deletes_the_cluster(tmp_path: Path) -> None:
    with _slow_run(tmp_path) as (worker, instance, run_id):
        worker.send_signal(signal.SIGTERM)  # what terminating a run does to its run worker
        output, _ = worker.communicate(timeout=120)
        name = cluster_name_for_run("slow_job", run_id)
        assert LocalRayProvider().list({"dagster.io/run-id": run_id}) == [], output
        assert _no_processes_left(name)
        assert processes_using(MARKER) == [], "the Ray job's driver is still running"
        messages = [r.user_message for r in instance.all_logs(run_id)]
        assert any(f"deleted Ray cluster {name}" in m for m in messages)


def test_killed_run_worker_leaves_its_cluster_to_the_sweeper(tmp_path: Path) -> None:
    from discord_ml.orchestration.resources import RayClusterResource
    from discord_ml.orchestration.sweeper import ray_cluster_sweeper

    with _slow_run(tmp_path) as (worker, instance, run_id):
        worker.kill()  # SIGKILL: no teardown runs, the run stays STARTED
        worker.wait(timeout=30)
        name = cluster_name_for_run("slow_job", run_id)
        [orphan] = LocalRayProvider().list({"dagster.io/run-id": run_id})
        assert orphan.creator_alive is False
        with dg.build_sensor_context(instance=instance, resources={"ray_cluster": RayClusterResource()}) as context:
            result = ray_cluster_sweeper(context)
        assert isinstance(result, dg.SkipReason) and name in str(result.skip_message)
        assert "the run worker crashed" in str(result.skip_message)
        assert LocalRayProvider().list({"dagster.io/run-id": run_id}) == []
        # The job's driver runs in a session of its own: it is found by the cluster's directory too.
        assert _no_processes_left(name) and processes_using(MARKER) == []
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.FAILURE


def test_killed_head_fails_the_step_clearly_and_leaves_nothing(tmp_path: Path) -> None:
    with _slow_run(tmp_path) as (worker, instance, run_id):
        name = cluster_name_for_run("slow_job", run_id)
        record = LocalRayProvider().registry.get("ml", name)
        assert record is not None
        [head] = [n for n in record.nodes if n["role"] == "head"]
        os.killpg(int(head["pid"]), signal.SIGKILL)  # the head's node: GCS, raylet, dashboard, the job's supervisor
        output, _ = worker.communicate(timeout=180)
        assert "FAILURE" in output, output
        errors = "\n".join(
            r.dagster_event.event_specific_data.error.to_string()  # type: ignore[union-attr]
            for r in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        )
        assert f"Ray cluster {name} was lost while job" in errors and "the head process is gone" in errors, errors
        assert LocalRayProvider().list({"dagster.io/run-id": run_id}) == []
        assert _no_processes_left(name) and processes_using(MARKER) == []


def test_kuberay_run_end_to_end_from_a_laptop(
    dagster_instance: dg.DagsterInstance, kuberay_api: KubeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DML_KUBERAY_DASHBOARD", "port-forward")  # Jobs API and log stream over pods/portforward
    config = {
        "ops": {"ray_cluster_check": {"config": {"tasks": 4}}},
        "resources": {"ray_cluster": {"config": {"backend": "kuberay", "workers": 1}}},
    }
    result = defs.resolve_job_def("platform_check").execute_in_process(instance=dagster_instance, run_config=config)
    assert result.success
    [materialization] = result.asset_materializations_for_node("ray_cluster_check")
    meta: dict[str, Any] = {k: v.value for k, v in materialization.metadata.items()}
    assert meta["tasks"] == 4 and str(meta["ray_job_id"]).startswith("raysubmit_")
    # The cluster's use so far rides along; no cost, as the packaged pool catalog sets no prices.
    assert meta["cluster_cpu_hours"] > 0 and meta["cluster_gpu_hours"] == 0 and "cluster_cost_usd" not in meta
    name = cluster_name_for_run("platform_check", result.run_id)
    assert meta["ray_cluster"] == name
    # The RayCluster the resource applied carried the run id and passed the CRD schema.
    created = [r for r in kuberay_api.requests if r[0] == "POST" and r[1].endswith("/rayclusters")]
    assert created == [("POST", "/apis/ray.io/v1/namespaces/ml/rayclusters")]
    messages = [r.user_message for r in dagster_instance.all_logs(result.run_id)]
    assert [m.split(" ")[1] for m in messages if m.startswith("task ")] == [f"{i}/4" for i in range(1, 5)]
    assert [r for r in kuberay_api.requests if r[1].endswith("/portforward")]
    # The step heartbeated on its cluster while it ran (idle reaping waits for it).
    assert ("PATCH", f"/apis/ray.io/v1/namespaces/ml/rayclusters/{name}") in kuberay_api.requests
    assert kuberay_api.ray_clusters() == []
    assert processes_using(str(cluster_dir_prefix(name))) == []
    deadline = time.monotonic() + 10
    while kuberay_api.forwards_open and time.monotonic() < deadline:
        time.sleep(0.1)
    assert kuberay_api.forwards_open == 0  # the forwards closed with the cluster


def test_kuberay_cluster_that_never_gets_ready_fails_the_run_and_is_deleted(
    dagster_instance: dg.DagsterInstance, kuberay_api: KubeEmulator
) -> None:
    kuberay_api.default_mode = "pending"
    config = {"resources": {"ray_cluster": {"config": {"backend": "kuberay", "workers": 1, "ready_timeout_s": 3}}}}
    result = defs.resolve_job_def("platform_check").execute_in_process(
        instance=dagster_instance, run_config=config, raise_on_error=False
    )
    assert not result.success
    errors = _errors(result)
    assert "not ready after 3s" in errors and "FailedScheduling: 0/3 nodes are available" in errors
    assert kuberay_api.ray_clusters() == []
