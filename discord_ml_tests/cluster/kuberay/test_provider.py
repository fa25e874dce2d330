"""KubeRayProvider through the real `kubernetes` client against the API emulator, whose operator
emulation starts a real local Ray cluster per RayCluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from discord_ml.cluster.kuberay import provider as kuberay_module
from discord_ml.cluster.kuberay.provider import KubeRayProvider
from discord_ml.cluster.local.processes import cluster_dir_prefix, processes_using
from discord_ml.cluster.provider import (
    ClusterError,
    ClusterNotFoundError,
    ClusterNotReadyError,
    ClusterStatus,
)
from discord_ml.cluster.spec import ClusterSpec
from discord_ml_tests.support.k8s_emulator import UNSCHEDULABLE, KubeEmulator, serve
from discord_ml_tests.support.schemas import require_crds


@pytest.fixture
def cluster_api(tmp_path: Path) -> Iterator[tuple[KubeEmulator, KubeRayProvider]]:
    require_crds()
    with serve(tmp_path) as (emulator, kubeconfig):
        yield emulator, KubeRayProvider(kubeconfig=str(kubeconfig), dashboard_access="service-ip", backoff_s=0.05)


def _spec(name: str, namespace: str = "ml", **extra: Any) -> ClusterSpec:
    return ClusterSpec.build(name=name, namespace=namespace, owner="alice", team="ads", workers=1, **extra)


@pytest.mark.integration
def test_what_it_sends_and_namespaces(cluster_api: tuple[KubeEmulator, KubeRayProvider]) -> None:
    """What the contract suite cannot see: the objects sent, several namespaces, the head service."""
    emulator, provider = cluster_api
    emulator.modes["other-team"] = "pending"
    provider.create(_spec("kr-train"))
    provider.create(_spec("other-team", namespace="ml-b"))
    try:
        progress: list[str] = []
        info = provider.wait_ready("kr-train", timeout=180, on_progress=lambda i: progress.append(i.status))
        assert (info.status, info.workers_ready, info.workers_desired) == (ClusterStatus.READY, 1, 1)
        assert progress[-1] == ClusterStatus.READY
        assert (info.owner, info.team, info.gpu_pool, info.backend) == ("alice", "ads", "cpu", "kuberay")
        # The objects the provider sent are the ones the builders made (and the emulator validated).
        kinds = {(p, n) for (p, _, n) in emulator.objects if p in ("secrets", "networkpolicies", "rayclusters")}
        assert {
            ("rayclusters", "kr-train"),
            ("networkpolicies", "kr-train-ray"),
            ("secrets", "kr-train-ray-token"),
        } <= kinds
        # Every namespace (-A), and a selector.
        assert sorted((c.namespace, c.name) for c in provider.list()) == [("ml", "kr-train"), ("ml-b", "other-team")]
        assert [c.name for c in provider.list({"discord-ml.io/owner": "alice"}, namespace="ml")] == ["kr-train"]
        # The dashboard comes from the head service; the token from the cluster's Secret.
        connection = provider.connect("kr-train")
        assert connection.dashboard_url == info.dashboard_url and connection.headers["Authorization"]
    finally:
        provider.delete("kr-train")
        provider.delete("other-team", namespace="ml-b")
    assert emulator.ray_clusters() == []
    assert not any(p in ("secrets", "networkpolicies", "pods", "services") for (p, _, _) in emulator.objects)
    assert processes_using(str(cluster_dir_prefix("kr-train"))) == []
    with pytest.raises(ClusterNotFoundError, match="no RayCluster 'kr-train' in namespace 'ml'"):
        provider.get("kr-train")


def test_pending_cluster_times_out_naming_the_scheduling_reason(
    cluster_api: tuple[KubeEmulator, KubeRayProvider],
) -> None:
    emulator, provider = cluster_api
    emulator.modes["kr-gpu"] = "pending"
    provider.create(_spec("kr-gpu"))
    try:
        seen: list[str] = []
        with pytest.raises(ClusterNotReadyError) as exc:
            provider.wait_ready("kr-gpu", timeout=2, on_progress=lambda i: seen.append(i.reason))
        assert f"pod kr-gpu-head-x7k2p Pending: FailedScheduling: {UNSCHEDULABLE}" in str(exc.value)
        assert any("Insufficient nvidia.com/gpu" in reason for reason in seen), "progress says what it waits for"
    finally:
        provider.delete("kr-gpu")
    assert emulator.ray_clusters() == []


def test_failed_head_is_reported(cluster_api: tuple[KubeEmulator, KubeRayProvider]) -> None:
    emulator, provider = cluster_api
    emulator.modes["kr-broken"] = "fail_head"
    provider.create(_spec("kr-broken"))
    try:
        with pytest.raises(ClusterNotReadyError, match="'kr-broken' failed: head pod failed: ray start exited"):
            provider.wait_ready("kr-broken", timeout=10)
    finally:
        provider.delete("kr-broken")


def test_transient_errors_are_retried(cluster_api: tuple[KubeEmulator, KubeRayProvider]) -> None:
    emulator, provider = cluster_api
    emulator.modes["kr-retry"] = "pending"
    emulator.transient_failures = [503, 429, 500]
    provider.create(_spec("kr-retry"))
    try:
        assert emulator.ray_clusters() == ["kr-retry"]
        assert emulator.transient_failures == []
    finally:
        provider.delete("kr-retry")


def test_rejected_manifest_fails_fast_with_the_api_message_and_leaves_nothing(
    cluster_api: tuple[KubeEmulator, KubeRayProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator, provider = cluster_api
    real = kuberay_module.build_ray_cluster

    def typo(spec: ClusterSpec) -> dict[str, Any]:
        manifest = real(spec)
        manifest["spec"]["workerGroupSpecs"][0]["replicas"] = "two"  # what the API server would reject
        return manifest

    monkeypatch.setattr(kuberay_module, "build_ray_cluster", typo)
    before = len(emulator.requests)
    with pytest.raises(ClusterError, match=r"refused the request \(422\): RayCluster \"kr-typo\" is invalid: .*'two'"):
        provider.create(_spec("kr-typo"))
    posts = [r for r in emulator.requests[before:] if r[0] == "POST" and "rayclusters" in r[1]]
    assert len(posts) == 1, "a 4xx is not retried"
    assert emulator.objects == {}, "the token Secret created first was removed again"
