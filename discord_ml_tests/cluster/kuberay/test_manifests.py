"""Manifest builders over a matrix of pools × worker counts × options: valid against the KubeRay
v1.6.2 CRDs (strict: unknown fields rejected), the Kubernetes schemas, and our security rules."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
import yaml

from discord_ml.cluster.conventions import RUN_ID_LABEL, TTL_ANNOTATION
from discord_ml.cluster.kuberay.manifests import (
    build_auth_secret,
    build_cluster_manifests,
    build_network_policy,
    build_ray_cluster,
    build_ray_job,
)
from discord_ml.cluster.kuberay.security import validate_manifest
from discord_ml.cluster.pools import load_catalog
from discord_ml.cluster.spec import ClusterSpec
from discord_ml_tests.support.schemas import crd_errors, k8s_errors, pod_errors

OPTIONS: dict[str, dict[str, Any]] = {
    "plain": {},
    "autoscaling": {"min_workers": 0, "max_workers": 4, "workers": 1},
    "tuned": {"worker_memory": "48Gi", "worker_cpu": "8", "head_cpu": "4", "head_memory": "16Gi", "ttl": "4h"},
    "owned": {
        "service_account": "ray-workers",
        "env": {"WANDB_MODE": "offline"},
        "labels": {"cost-center": "ads"},
        "annotations": {"team.example/ticket": "ML-42"},
        "dagster_run_id": "5b0d7c62-0b1e-4f8c-9a57-3c1f0a2b9e11",
        "dagster_job": "daily_pipeline",
    },
}
POOLS = [p.name for p in load_catalog().pools]
CASES = [
    (pool, workers, option)
    for pool, workers, option in itertools.product(POOLS, [1, 4], OPTIONS)
    if not (option == "tuned" and pool == "cpu")  # 48Gi does not fit a cpu node's default worker, tested below
]


def _spec(pool: str, workers: int, option: str) -> ClusterSpec:
    fields = {"owner": "jane", "team": "ads", "purpose": "train", "gpu_pool": pool, "workers": workers}
    opts = dict(OPTIONS[option])
    if "max_workers" in opts:
        fields.pop("workers")
    return ClusterSpec.build(**{**fields, **opts})


@pytest.mark.parametrize(("pool", "workers", "option"), CASES)
def test_ray_cluster_is_valid_everywhere(pool: str, workers: int, option: str) -> None:
    manifest = build_ray_cluster(_spec(pool, workers, option))
    assert crd_errors(manifest) == []
    assert pod_errors(manifest) == []
    assert validate_manifest(manifest) == []
    json.dumps(manifest)  # plain data, nothing the API could not serialize


@pytest.mark.parametrize(("pool", "workers", "option"), CASES)
def test_ray_job_is_valid_everywhere(pool: str, workers: int, option: str) -> None:
    manifest = build_ray_job(
        _spec(pool, workers, option),
        ["python", "-m", "discord_ml.quests.tasks.train", "--model", "dcn v2"],
        runtime_env={"env_vars": {"DML_STAGE": "train"}},
    )
    assert crd_errors(manifest) == []
    assert pod_errors(manifest) == []
    assert validate_manifest(manifest) == []


@pytest.mark.parametrize("pool", POOLS)
def test_network_policy_is_valid(pool: str) -> None:
    policy = build_network_policy(_spec(pool, 1, "plain"), platform_namespace="ml-platform")
    assert k8s_errors(policy) == []


def test_gpu_cluster_details() -> None:
    spec = _spec("h100", 4, "owned")
    manifest = build_ray_cluster(spec)
    meta, cluster = manifest["metadata"], manifest["spec"]
    assert manifest["apiVersion"] == "ray.io/v1"
    assert {
        "app.kubernetes.io/managed-by": "discord-ml",
        "discord-ml.io/owner": "jane",
        "discord-ml.io/team": "ads",
        "discord-ml.io/purpose": "train",
        "discord-ml.io/gpu-type": "nvidia-h100-80gb",
        RUN_ID_LABEL: "5b0d7c62-0b1e-4f8c-9a57-3c1f0a2b9e11",
        "dagster.io/job": "daily_pipeline",
        "kueue.x-k8s.io/queue-name": "ml-gpu",
        "cost-center": "ads",
    }.items() <= meta["labels"].items()
    assert meta["annotations"][TTL_ANNOTATION] == str(8 * 3600)
    assert cluster["authOptions"] == {"mode": "token", "secretName": f"{spec.cluster_name}-ray-token"}
    secret = build_auth_secret(spec, "s3cret")
    assert (secret["metadata"]["name"], secret["stringData"]) == (
        f"{spec.cluster_name}-ray-token",
        {"auth_token": "s3cret"},
    )
    assert k8s_errors(secret) == []
    head = cluster["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP" and head["enableIngress"] is False
    assert head["rayStartParams"]["num-cpus"] == "0"
    [group] = cluster["workerGroupSpecs"]
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (4, 4, 4)
    assert group["rayStartParams"]["num-gpus"] == "8"
    assert json.loads(json.loads(group["rayStartParams"]["resources"])) == {"H100": 8}
    pod = group["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["requests"] == container["resources"]["limits"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert pod["nodeSelector"] == {"node.discord-ml.io/pool": "h100"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["priorityClassName"] == "ml-training"
    assert pod["serviceAccountName"] == "ray-workers" and pod["automountServiceAccountToken"] is False
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/tmp/ray"]]["emptyDir"] == {}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert {"name": "WANDB_MODE", "value": "offline"} in container["env"]
    assert "nodeSelector" not in head["template"]["spec"], "the head needs no GPU node"


def test_autoscaling_cluster_mounts_the_token_only_on_the_head() -> None:
    cluster = build_ray_cluster(_spec("t4", 1, "autoscaling"))["spec"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["autoscalerOptions"]["securityContext"]["allowPrivilegeEscalation"] is False
    assert cluster["headGroupSpec"]["template"]["spec"]["automountServiceAccountToken"] is True
    group = cluster["workerGroupSpecs"][0]
    assert (group["minReplicas"], group["replicas"], group["maxReplicas"]) == (0, 1, 4)
    assert group["template"]["spec"]["automountServiceAccountToken"] is False


def test_ray_job_lifecycle_fields() -> None:
    spec = _spec("a100", 2, "plain")
    job = build_ray_job(spec, "python train.py", active_deadline_seconds=7200, ttl_seconds_after_finished=60)
    body = job["spec"]
    assert body["entrypoint"] == "python train.py"
    assert body["shutdownAfterJobFinishes"] is True
    assert (body["ttlSecondsAfterFinished"], body["activeDeadlineSeconds"]) == (60, 7200)
    assert body["submissionMode"] == "K8sJobMode" and body["backoffLimit"] == 0
    assert body["submitterPodTemplate"]["spec"]["restartPolicy"] == "Never"
    default_deadline = build_ray_job(spec, ["python", "-c", "print('a b')"])["spec"]
    assert default_deadline["activeDeadlineSeconds"] == spec.ttl_seconds
    assert default_deadline["entrypoint"] == "python -c 'print('\"'\"'a b'\"'\"')'"
    assert "runtimeEnvYAML" not in default_deadline
    with_env = build_ray_job(spec, "python x.py", runtime_env={"env_vars": {"A": "1"}})["spec"]
    assert yaml.safe_load(with_env["runtimeEnvYAML"]) == {"env_vars": {"A": "1"}}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"entrypoint": "  "}, "entrypoint is empty"), ({"entrypoint": "x", "active_deadline_seconds": 0}, "must be > 0")],
)
def test_ray_job_rejects_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_ray_job(_spec("cpu", 1, "plain"), **kwargs)


def test_network_policy_allows_cluster_dns_platform_dashboard_and_its_notebooks_only() -> None:
    spec = _spec("cpu", 1, "plain")
    policy = build_network_policy(spec, platform_namespace="ml-platform")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    selector = policy["podSelector"]["matchLabels"]
    intra, platform, notebooks = policy["ingress"]
    assert notebooks["from"] == [{"podSelector": {"matchLabels": {"discord-ml.io/notebook-for": spec.cluster_name}}}]
    assert [p["port"] for p in notebooks["ports"]] == [10001, 8265]  # Ray Client and the Jobs API
    assert intra == {"from": [{"podSelector": {"matchLabels": selector}}]}
    assert platform["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ml-platform"}}}]
    assert platform["ports"] == [{"protocol": "TCP", "port": 8265}]
    egress_ports = [p["port"] for rule in policy["egress"] for p in rule.get("ports", [])]
    assert egress_ports == [53, 53]


def test_schema_checks_catch_what_kubernetes_would_reject() -> None:
    """The checks above are not vacuous: unknown fields, wrong types and missing fields fail."""
    manifest = build_ray_cluster(_spec("h100", 1, "plain"))
    manifest["spec"]["workerGroupSpecs"][0]["replica"] = 2  # typo: unknown field
    manifest["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # must be a string
    del manifest["spec"]["workerGroupSpecs"][0]["groupName"]  # required
    errors = "\n".join(crd_errors(manifest))
    assert "'replica' was unexpected" in errors
    assert "0 is not of type 'string'" in errors
    assert "'groupName' is a required property" in errors
    pod = build_ray_cluster(_spec("cpu", 1, "plain"))
    pod["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"] = "1000"
    assert any("runAsUser" in e or "'1000' is not of type" in e for e in pod_errors(pod))


def test_build_cluster_manifests_emits_cluster_and_policy() -> None:
    kinds = [m["kind"] for m in build_cluster_manifests(_spec("l4", 2, "plain"), platform_namespace="ml-platform")]
    assert kinds == ["RayCluster", "NetworkPolicy"]


def test_builders_are_pure() -> None:
    spec = _spec("h100", 2, "owned")
    before = spec.model_dump()
    assert build_ray_cluster(spec) == build_ray_cluster(spec)
    assert spec.model_dump() == before
