"""Notebook pods next to KubeRay clusters: the manifests (Kubernetes schema, restricted profile,
least-privilege network) and their life on the emulator through the real `kubernetes` client."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from discord_ml.cluster.kuberay.manifests import build_network_policy
from discord_ml.cluster.kuberay.notebook_manifests import (
    build_lab_secret,
    build_notebook_network_policy,
    build_notebook_pod,
    notebook_pod_name,
)
from discord_ml.cluster.kuberay.notebooks import KubeRayNotebooks
from discord_ml.cluster.kuberay.provider import KubeRayProvider
from discord_ml.cluster.kuberay.security import validate_manifest
from discord_ml.cluster.spec import ClusterSpec
from discord_ml_tests.support.jupyter import run_in_kernel
from discord_ml_tests.support.k8s_emulator import KubeEmulator
from discord_ml_tests.support.schemas import k8s_errors

DML = [str(Path(sys.executable).parent / "dml")]
IMAGE = str(ClusterSpec.build(name="x", owner="o").image)


def test_notebook_manifests_are_valid_hardened_and_least_privilege() -> None:
    pod = build_notebook_pod("ranking", "ml", "alice", image=IMAGE, cluster_uid="uid-1")
    secret = build_lab_secret(pod["metadata"]["name"], "ml", pod["metadata"]["labels"], cluster="ranking",
                              cluster_uid="uid-1", token="t0k3n")  # fmt: skip
    policy = build_notebook_network_policy(pod, platform_namespace="ml-platform")
    for obj in (pod, secret, policy):
        assert k8s_errors(obj) == [], obj["kind"]
        assert obj["metadata"]["ownerReferences"] == [{"apiVersion": "ray.io/v1", "kind": "RayCluster",
            "name": "ranking", "uid": "uid-1", "blockOwnerDeletion": False}]  # fmt: skip
    assert validate_manifest(pod) == []  # restricted profile, no service account token, allowed image
    assert pod["spec"]["automountServiceAccountToken"] is False
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["RAY_ADDRESS"]["value"] == "ray://ranking-head-svc.ml.svc.cluster.local:10001"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "ranking-ray-token", "key": "auth_token"}}
    assert env["JUPYTER_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "ranking-nb-alice-lab", "key": "token"}}
    # Only the platform namespace may connect in (the auth proxy; the sweeper asking about kernels);
    # out, only the cluster's head (Ray Client, Jobs API) and DNS.
    [ingress] = policy["spec"]["ingress"]
    platform = {"matchLabels": {"kubernetes.io/metadata.name": "ml-platform"}}
    assert ingress["from"] == [{"namespaceSelector": platform}]
    assert ingress["ports"] == [{"protocol": "TCP", "port": 8888}]
    head, dns = policy["spec"]["egress"]
    assert head["to"] == [{"podSelector": {"matchLabels": {"ray.io/cluster": "ranking", "ray.io/node-type": "head"}}}]
    assert {p["port"] for p in head["ports"]} == {10001, 8265} and {p["port"] for p in dns["ports"]} == {53}
    # ... and the cluster's own policy lets its notebooks in on exactly those ports.
    cluster_policy = build_network_policy(
        ClusterSpec.build(name="ranking", owner="alice", namespace="ml"), platform_namespace="ml-platform"
    )
    [from_notebooks] = [
        r
        for r in cluster_policy["spec"]["ingress"]
        if r["from"] == [{"podSelector": {"matchLabels": {"discord-ml.io/notebook-for": "ranking"}}}]
    ]
    assert {p["port"] for p in from_notebooks["ports"]} == {10001, 8265}  # fmt: skip


@pytest.mark.parametrize("owner", ["alice", "Jane.Doe_2", "x" * 63])
def test_notebook_pod_names_are_dns_labels_and_distinct(owner: str) -> None:
    name = notebook_pod_name("a" * 47, owner)
    assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)
    assert name != notebook_pod_name("a" * 47, owner + "2")


@pytest.mark.integration
def test_notebook_pod_is_created_reached_listed_and_deleted_with_its_cluster(kuberay_api: KubeEmulator) -> None:
    provider = KubeRayProvider()
    provider.create(ClusterSpec.build(name="kr-nb", owner="alice", workers=1, head_memory="1Gi"))
    notebooks = KubeRayNotebooks(provider)
    env = {**os.environ, "DML_OWNER": "alice"}
    cli = None
    try:
        provider.wait_ready("kr-nb", timeout=180)
        cli = subprocess.Popen([*DML, "notebook", "kr-nb", "-b", "kuberay", "--port", "0"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)  # fmt: skip
        assert cli.stdout is not None
        line = cli.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)/lab\?token=(\S+)", line)
        assert match, f"{line!r}; stderr: {cli.stderr.read() if cli.stderr else ''}"
        base, token = match.groups()
        [pod] = notebooks.list("kr-nb", namespace="ml")
        assert (pod.name, pod.owner, pod.phase, pod.ready) == ("kr-nb-nb-alice", "alice", "Running", True)
        assert token == notebooks.token(pod) and token not in json.dumps(kuberay_api.find("pods"))
        # A kernel in the pod reaches the cluster through Ray Client with the token from the cluster's Secret.
        output = run_in_kernel(
            base, token, "import ray\nray.init()\nprint('cluster CPUs', ray.cluster_resources()['CPU'])"
        )
        assert "cluster CPUs" in output, output
        assert [r for r in kuberay_api.requests if r[1] == f"/api/v1/namespaces/ml/pods/{pod.name}/portforward"]

        os.killpg(cli.pid, signal.SIGINT)  # closes the forward; the pod keeps running
        assert cli.wait(timeout=30) == 0
        assert [n.name for n in notebooks.list("kr-nb", namespace="ml")] == [pod.name]
        deleted = subprocess.run([*DML, "notebook", "kr-nb", "-b", "kuberay", "--delete"], capture_output=True,
                                 text=True, timeout=120, env=env, check=True)  # fmt: skip
        assert f"deleted notebook pod {pod.name}" in deleted.stdout
        assert notebooks.list("kr-nb", namespace="ml") == [] and kuberay_api.containers == {}

        again = notebooks.launch("kr-nb", namespace="ml", owner="alice")  # as X-Ray's "Launch notebook" does
        notebooks.wait_running(again)
    finally:
        if cli is not None and cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
            cli.wait()
        provider.delete("kr-nb")
    # Deleting the cluster deleted the notebook pod, its Secret and NetworkPolicy (owner references).
    assert kuberay_api.find("pods") == [] and kuberay_api.containers == {}
    assert kuberay_api.find("secrets") == [] and kuberay_api.find("networkpolicies") == []
