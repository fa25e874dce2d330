"""Activity-aware reaping on real clusters: a cluster past its TTL or idle timeout is kept while a Ray
job runs or a notebook kernel is busy, and deleted (its logs archived) once idle, on both backends."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

from discord_ml.cluster.archive import LogStore
from discord_ml.cluster.kuberay.provider import KubeRayProvider
from discord_ml.cluster.lifecycle import no_run_statuses
from discord_ml.cluster.local.provider import LocalRayProvider
from discord_ml.cluster.provider import ClusterNotFoundError, ClusterProvider
from discord_ml.cluster.spec import ClusterSpec
from discord_ml.cluster.sweep import sweep
from discord_ml.xray.notebooks import NotebookSessions
from discord_ml_tests.support.jupyter import busy_kernel
from discord_ml_tests.support.k8s_emulator import KubeEmulator

pytestmark = pytest.mark.integration


def _start_job(provider: ClusterProvider, name: str) -> tuple[object, str]:
    from ray.job_submission import JobSubmissionClient

    connection = provider.connect(name)
    client = JobSubmissionClient(connection.dashboard_url, headers=dict(connection.headers))
    job_id = client.submit_job(entrypoint="python -c 'import time; time.sleep(600)'")
    deadline = time.monotonic() + 120
    while str(client.get_job_status(job_id)) != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.5)
    return client, job_id


def _stop_job(client: object, job_id: str) -> None:
    client.stop_job(job_id)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while str(client.get_job_status(job_id)) not in ("STOPPED", "FAILED") and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.5)


def _sweep_at(provider: ClusterProvider, name: str, hours: float) -> str | None:
    """Sweep as if `hours` had passed since the cluster was created; what happened to it (None: nothing)."""
    created = provider.get(name).created
    actions = [
        a for a in sweep(provider, no_run_statuses, now=created + timedelta(hours=hours)) if a.cluster.name == name
    ]
    if not actions:
        return None
    return f"deleted: {actions[0].reason}" if actions[0].delete else actions[0].reason  # "kept, ..."


def test_local_cluster_past_its_ttl_is_kept_while_a_job_or_kernel_runs_then_reaped(tmp_path: Path) -> None:
    provider = LocalRayProvider()
    provider.create(ClusterSpec.build(name="reap-local", owner="alice", workers=0, head_memory="1Gi", ttl="1h"))
    sessions = NotebookSessions(tmp_path)
    try:
        provider.wait_ready("reap-local", timeout=180)
        client, job_id = _start_job(provider, "reap-local")
        kept = _sweep_at(provider, "reap-local", 2)
        assert kept is not None and kept.startswith("kept, past its TTL") and f"Ray job {job_id} running" in kept
        _stop_job(client, job_id)
        # A notebook attached to it (X-Ray's) with a kernel at work also holds it.
        session = sessions.launch("local/ml/reap-local", "reap-local", provider.connect("reap-local"), "alice",
                                  namespace="ml")  # fmt: skip
        base, token = session.url.split("/lab?token=")
        kernel = busy_kernel(base, token)
        kept = _sweep_at(provider, "reap-local", 2)
        assert kept is not None and f"notebook kernel {kernel[:8]} busy" in kept
        sessions.stop_all()
        deleted = _sweep_at(provider, "reap-local", 2)
        assert deleted == "deleted: past its TTL: 7200s old, TTL 3600s"
        with pytest.raises(ClusterNotFoundError):
            provider.get("reap-local")
        assert LogStore().find_job(job_id) is not None  # its job's log was archived first
    finally:
        sessions.stop_all()
        provider.delete("reap-local")


def test_kuberay_cluster_is_reaped_by_idle_timeout_only_once_idle(kuberay_api: KubeEmulator) -> None:
    provider = KubeRayProvider(dashboard_access="service-ip")
    spec = ClusterSpec.build(name="reap-kr", owner="alice", workers=1, head_memory="1Gi", idle_timeout="30m")
    provider.create(spec)
    try:
        provider.wait_ready("reap-kr", timeout=180)
        assert provider.get("reap-kr").idle_timeout_seconds == 1800
        client, job_id = _start_job(provider, "reap-kr")
        kept = _sweep_at(provider, "reap-kr", 1)
        assert kept is not None and kept.startswith("kept") and f"Ray job {job_id} running" in kept
        _stop_job(client, job_id)
        # A Dagster step's heartbeat (the resource's) holds it too.
        provider.touch("reap-kr")
        assert provider.get("reap-kr").last_active is not None
        assert _sweep_at(provider, "reap-kr", 0.2) is None  # nothing to decide: heartbeat just now
        deleted = _sweep_at(provider, "reap-kr", 3)
        assert deleted is not None and deleted.startswith("deleted: idle for ")
        assert kuberay_api.ray_clusters() == []
    finally:
        provider.delete("reap-kr")
