"""The kuberay backend against the real API server, scheduler, controller manager and KubeRay operator.

The testbed runs no containers (see support/kube/nodes.py): pods are created, admitted, scheduled and
bound for real, then stay Pending. What needs a running Ray head is not checked here."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from discord_ml.cli.main import app
from discord_ml.cluster.kuberay.notebooks import KubeRayNotebooks
from discord_ml.cluster.kuberay.provider import KubeRayProvider
from discord_ml.cluster.provider import ClusterStatus
from discord_ml.cluster.spec import ClusterSpec
from discord_ml_tests.support.faulty_proxy import faulty_proxy
from discord_ml_tests.support.kube.build import KUBERAY_VERSION, KUBERNETES_VERSION
from discord_ml_tests.support.kube.testbed import Testbed
from discord_ml_tests.support.lost_answers import check_creates_survive_lost_answers


def eventually(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s (last: {value!r})"
        time.sleep(0.5)


def _pods(bed: Testbed, cluster: str, namespace: str = "ml") -> list[dict[str, Any]]:
    return bed.request("GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector=ray.io/cluster={cluster}")["items"]


def _names(bed: Testbed, path: str) -> list[str]:
    """Names of the objects at `path` that are not being deleted."""
    items = bed.request("GET", path)["items"]
    return sorted(o["metadata"]["name"] for o in items if not o["metadata"].get("deletionTimestamp"))


def test_the_testbed_is_the_real_control_plane_and_operator(testbed: Testbed) -> None:
    assert testbed.request("GET", "/version")["gitVersion"] == KUBERNETES_VERSION
    crd = testbed.request("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/rayclusters.ray.io")
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert {"mode", "secretName"} <= set(spec["authOptions"]["properties"]), f"KubeRay {KUBERAY_VERSION} CRD"
    # What production installs is the operator tested here.
    values = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy/kuberay/values.yaml").read_text())
    assert values["image"]["tag"] == KUBERAY_VERSION
    assert all(proc.poll() is None for proc in testbed.procs.values())
    # deploy/platform applied: the namespaces enforce the restricted profile.
    ml = testbed.request("GET", "/api/v1/namespaces/ml")
    assert ml["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_a_cluster_is_created_admitted_scheduled_and_collected_with_everything_it_owns(as_admin: Testbed) -> None:
    bed, provider = as_admin, KubeRayProvider(dashboard_access="port-forward")
    spec = ClusterSpec.build(
        name="kube-life", namespace="ml", owner="alice", team="ml", workers=1, head_memory="2Gi", worker_memory="2Gi"
    )
    assert provider.preflight(spec) == []  # the real quota (deploy/platform) and nodes hold it
    provider.create(spec)
    try:
        # The operator made a head and a worker pod, and the restricted profile admitted both.
        pods = eventually("the operator's pods", lambda: len(_pods(bed, "kube-life")) == 2 and _pods(bed, "kube-life"))
        head = next(p for p in pods if p["metadata"]["labels"]["ray.io/node-type"] == "head")
        env = {e["name"]: e for c in head["spec"]["containers"] for e in c.get("env", [])}
        # Token auth: the operator consumes our Secret (authOptions.secretName), it makes none of its own.
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": "kube-life-ray-token",
            "key": "auth_token",
        }
        assert _names(bed, "/api/v1/namespaces/ml/secrets") == ["kube-life-ray-token"]
        # The real scheduler bound both to the CPU node; no kubelet runs them, so the cluster is pending.
        bound = eventually("scheduled", lambda: all(p["spec"].get("nodeName") for p in _pods(bed, "kube-life")))
        assert bound and {p["spec"]["nodeName"] for p in _pods(bed, "kube-life")} == {"cpu-node-0"}
        info = provider.get("kube-life", namespace="ml")
        assert (info.status, info.owner, info.team, info.workers_desired) == (ClusterStatus.PENDING, "alice", "ml", 1)
        assert [(c.namespace, c.name) for c in provider.list()] == [("ml", "kube-life")]
        assert "kube-life-head-svc" in _names(bed, "/api/v1/namespaces/ml/services")
        # A notebook pod (`dml notebook`): admitted as restricted, owned by the RayCluster.
        notebook = KubeRayNotebooks(provider).launch("kube-life", namespace="ml", owner="alice")
        [pod] = [
            p
            for p in bed.request("GET", "/api/v1/namespaces/ml/pods")["items"]
            if p["metadata"]["name"] == notebook.name
        ]
        assert [r["kind"] for r in pod["metadata"]["ownerReferences"]] == ["RayCluster"]
        assert [n.name for n in KubeRayNotebooks(provider).list("kube-life", namespace="ml")] == [notebook.name]
    finally:
        provider.delete("kube-life", namespace="ml")
    # The real garbage collector removes what the RayCluster owns; we removed the Secret and the policy.
    eventually("pods collected", lambda: _pods(bed, "kube-life") == [], timeout=90)
    eventually("the notebook collected", lambda: notebook.name not in _names(bed, "/api/v1/namespaces/ml/pods"))
    eventually("services collected", lambda: "kube-life-head-svc" not in _names(bed, "/api/v1/namespaces/ml/services"))
    eventually(
        "secrets gone (ours deleted, the notebook's collected)",
        lambda: _names(bed, "/api/v1/namespaces/ml/secrets") == [],
    )
    assert "kube-life-ray" not in _names(bed, "/apis/networking.k8s.io/v1/namespaces/ml/networkpolicies")


def test_a_gpu_cluster_larger_than_its_pool_waits_with_the_real_schedulers_reason(as_admin: Testbed) -> None:
    provider = KubeRayProvider(dashboard_access="port-forward")
    spec = ClusterSpec.build(name="kube-gpu", namespace="ml", owner="alice", team="ml", gpu_pool="h100:8", workers=2)
    [short] = provider.preflight(spec)  # one H100 node of 8 GPUs; two workers need two
    assert short.startswith("h100-workers: needs 2 pod(s)") and "node(s) it may use hold 1" in short
    provider.create(spec)  # what --allow-pending does
    try:
        reason = eventually(
            "a scheduling reason",
            lambda: "Insufficient nvidia.com/gpu" in (r := provider.get("kube-gpu", namespace="ml").reason) and r,
        )
        assert "FailedScheduling" in reason and "0/2 nodes are available" in reason
    finally:
        provider.delete("kube-gpu", namespace="ml")
    eventually("pods collected", lambda: _pods(as_admin, "kube-gpu") == [], timeout=90)


def test_the_cli_refuses_what_the_real_quota_cannot_hold_and_creates_nothing(as_admin: Testbed) -> None:
    before = _names(as_admin, "/apis/ray.io/v1/namespaces/ml/rayclusters")
    # The team quota (deploy/platform/team-ml.yaml) allows 512 CPUs; 32 workers of 16 and a head ask for more.
    argv = ["cluster", "create", "too-big", "-b", "kuberay", "-n", "ml", "--pool", "cpu", "-w", "32", "--cpu", "16"]
    result = CliRunner().invoke(app, [*argv, "--no-wait"])
    assert result.exit_code == 2, result.output
    assert result.output.count("quota ml-compute leaves") == 1, result.output
    assert _names(as_admin, "/apis/ray.io/v1/namespaces/ml/rayclusters") == before
    assert _names(as_admin, "/api/v1/namespaces/ml/secrets") == []


def test_restricted_admission_rejects_a_non_compliant_pod(as_admin: Testbed) -> None:
    import urllib.error

    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "rooted", "namespace": "ml"},
        "spec": {"containers": [{"name": "c", "image": "rayproject/ray:2.59.0"}]},
    }
    with pytest.raises(urllib.error.HTTPError) as exc:
        as_admin.request("POST", "/api/v1/namespaces/ml/pods", pod)
    message = json.loads(exc.value.read())["message"]
    assert exc.value.code == 403 and 'violates PodSecurity "restricted:latest"' in message
    assert "allowPrivilegeEscalation != false" in message and "runAsNonRoot != true" in message


def test_a_create_whose_answers_are_lost_ends_with_one_cluster_or_none(testbed: Testbed, tmp_path: Path) -> None:
    paths = {
        "secrets": "/api/v1/namespaces/ml/secrets",
        "rayclusters": "/apis/ray.io/v1/namespaces/ml/rayclusters",
        "networkpolicies": "/apis/networking.k8s.io/v1/namespaces/ml/networkpolicies",
    }
    proxied = tmp_path / "proxy.kubeconfig"
    with faulty_proxy(testbed.server, proxied, context=testbed.ssl_context()) as rules:
        provider = KubeRayProvider(kubeconfig=str(proxied), dashboard_access="port-forward", backoff_s=0.05)
        direct = KubeRayProvider(kubeconfig=str(testbed.kubeconfig), dashboard_access="port-forward")
        check_creates_survive_lost_answers(provider, rules, lambda plural: _names(testbed, paths[plural]), direct)
