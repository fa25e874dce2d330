"""Pure builders: ClusterSpec -> KubeRay `RayCluster` / `RayJob` and a `NetworkPolicy` (plain dicts).

No network access and no Kubernetes client: providers send what these functions return.
Every pod is hardened to the restricted Pod Security Standard (see `security`).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import yaml

from discord_ml.cluster.conventions import (
    DASHBOARD_PORT,
    IDLE_ANNOTATION,
    LABEL_PREFIX,
    MANAGED_BY,
    NOTEBOOK_LABEL,
    RAY_CLIENT_PORT,
    TTL_ANNOTATION,
    cluster_labels,
)
from discord_ml.cluster.kuberay.security import hardened_container_security_context, hardened_pod_security_context
from discord_ml.cluster.pools import GpuPool, PoolCatalog
from discord_ml.cluster.quantity import format_bytes, parse_quantity
from discord_ml.cluster.spec import ClusterSpec, normalized_cpu, normalized_memory

RAY_API_VERSION = "ray.io/v1"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

HEAD_PORTS = (("gcs-server", 6379), ("dashboard", 8265), ("client", 10001), ("metrics", 8080))
# Ray's default object store is 30% of memory; it lives in /dev/shm, which we size to match.
OBJECT_STORE_FRACTION = Decimal("0.3")
MIN_OBJECT_STORE = 128 * 2**20
MAX_OBJECT_STORE = 200 * 2**30  # about Ray's own 200 GB cap on the default object store


def _object_store_bytes(memory: str) -> int:
    amount = int(parse_quantity(memory) * OBJECT_STORE_FRACTION)
    return min(MAX_OBJECT_STORE, max(MIN_OBJECT_STORE, amount - amount % 2**20))


def _container_resources(cpu: str, memory: str, gpu_key: str | None, gpus: int) -> dict[str, dict[str, str]]:
    amounts = {"cpu": normalized_cpu(cpu), "memory": normalized_memory(memory)}
    if gpu_key and gpus:
        amounts[gpu_key] = str(gpus)
    # requests == limits: Guaranteed QoS, the only sane setting for Ray, and required for GPUs.
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _env(spec: ClusterSpec) -> list[dict[str, str]]:
    platform = {"DML_CLUSTER_NAME": spec.cluster_name, "DML_OWNER": spec.owner, "RAY_USAGE_STATS_ENABLED": "0"}
    return [{"name": k, "value": v} for k, v in sorted({**spec.env, **platform}.items())]


def _pod_template(
    spec: ClusterSpec,
    labels: Mapping[str, str],
    *,
    container_name: str,
    resources: dict[str, dict[str, str]],
    memory: str,
    ports: Sequence[tuple[str, int]],
    pool: GpuPool | None,
    automount_token: bool,
) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": automount_token,
        "enableServiceLinks": False,
        "securityContext": hardened_pod_security_context(),
        "containers": [
            {
                "name": container_name,
                "image": spec.image,
                "imagePullPolicy": "IfNotPresent",
                "env": _env(spec),
                "ports": [{"name": name, "containerPort": port, "protocol": "TCP"} for name, port in ports],
                "resources": resources,
                "securityContext": hardened_container_security_context(),
                "volumeMounts": [
                    {"name": "ray-tmp", "mountPath": "/tmp/ray"},
                    {"name": "dshm", "mountPath": "/dev/shm"},
                ],
            }
        ],
        "volumes": [
            {"name": "ray-tmp", "emptyDir": {}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": format_bytes(_object_store_bytes(memory))}},
        ],
    }
    if spec.service_account:
        pod_spec["serviceAccountName"] = spec.service_account
    if pool is not None:
        if pool.node_selector:
            pod_spec["nodeSelector"] = dict(pool.node_selector)
        if pool.tolerations:
            pod_spec["tolerations"] = [t.to_k8s() for t in pool.tolerations]
        if pool.priority_class:
            pod_spec["priorityClassName"] = pool.priority_class
    return {"metadata": {"labels": dict(labels)}, "spec": pod_spec}


def build_ray_cluster_spec(spec: ClusterSpec, *, catalog: PoolCatalog | None = None) -> dict[str, Any]:
    """The `spec` of a RayCluster (also embedded in a RayJob as `rayClusterSpec`)."""
    pool = spec.pool(catalog)
    labels = cluster_labels(spec, pool)
    gpus = spec.gpus_per_worker or 0
    worker_cpu, worker_memory = spec.worker_cpu or "1", spec.worker_memory or "2Gi"
    worker_params = {
        "num-cpus": str(max(1, int(parse_quantity(worker_cpu)))),
        "object-store-memory": str(_object_store_bytes(worker_memory)),
    }
    if gpus:
        worker_params["num-gpus"] = str(gpus)
        if pool.ray_resource:
            worker_params["resources"] = json.dumps(json.dumps({pool.ray_resource: gpus}))
    head = {
        "serviceType": "ClusterIP",
        "enableIngress": False,
        "rayStartParams": {
            "dashboard-host": "0.0.0.0",  # inside the pod; reachable only through the ClusterIP service
            "num-cpus": "0",  # the head schedules no tasks, like a production head should
            "object-store-memory": str(_object_store_bytes(spec.head_memory)),
        },
        "template": _pod_template(
            spec,
            labels,
            container_name="ray-head",
            resources=_container_resources(spec.head_cpu, spec.head_memory, None, 0),
            memory=spec.head_memory,
            ports=HEAD_PORTS,
            pool=None,
            automount_token=spec.autoscaling,  # the autoscaler sidecar talks to the API server
        ),
    }
    max_workers = spec.max_workers if spec.max_workers is not None else spec.workers
    min_workers = spec.min_workers if spec.min_workers is not None else spec.workers
    worker_group = {
        "groupName": f"{pool.name}-workers",
        "replicas": spec.workers,
        "minReplicas": min_workers,
        "maxReplicas": max_workers,
        "rayStartParams": worker_params,
        "template": _pod_template(
            spec,
            labels,
            container_name="ray-worker",
            resources=_container_resources(worker_cpu, worker_memory, pool.resource_key, gpus),
            memory=worker_memory,
            ports=(("metrics", 8080),),
            pool=pool,
            automount_token=False,
        ),
    }
    cluster_spec: dict[str, Any] = {
        "rayVersion": spec.ray_version,
        # The provider creates this Secret (key `auth_token`) before the cluster, so clients know the token.
        "authOptions": {"mode": "token", "secretName": auth_secret_name(spec)},
        "headGroupSpec": head,
        "workerGroupSpecs": [worker_group],
    }
    if spec.autoscaling:
        cluster_spec["enableInTreeAutoscaling"] = True
        cluster_spec["autoscalerOptions"] = {
            "upscalingMode": "Default",
            "idleTimeoutSeconds": 300,
            "imagePullPolicy": "IfNotPresent",
            "securityContext": hardened_container_security_context(),
            "resources": _container_resources("500m", "512Mi", None, 0),
        }
    return cluster_spec


def _metadata(spec: ClusterSpec, pool: GpuPool, name: str) -> dict[str, Any]:
    labels = cluster_labels(spec, pool)
    if pool.kueue_queue:
        labels[KUEUE_QUEUE_LABEL] = pool.kueue_queue
    annotations = {**spec.annotations, TTL_ANNOTATION: str(spec.ttl_seconds)}
    if spec.idle_timeout_seconds is not None:
        annotations[IDLE_ANNOTATION] = str(spec.idle_timeout_seconds)
    return {"name": name, "namespace": spec.namespace, "labels": labels, "annotations": annotations}


def build_ray_cluster(spec: ClusterSpec, *, catalog: PoolCatalog | None = None) -> dict[str, Any]:
    """A complete, hardened `RayCluster` for `spec`."""
    return {
        "apiVersion": RAY_API_VERSION,
        "kind": "RayCluster",
        "metadata": _metadata(spec, spec.pool(catalog), spec.cluster_name),
        "spec": build_ray_cluster_spec(spec, catalog=catalog),
    }


def build_ray_job(
    spec: ClusterSpec,
    entrypoint: str | Sequence[str],
    *,
    runtime_env: Mapping[str, Any] | None = None,
    active_deadline_seconds: int | None = None,
    ttl_seconds_after_finished: int = 300,
    catalog: PoolCatalog | None = None,
) -> dict[str, Any]:
    """A hardened `RayJob` that creates a cluster for `spec`, runs `entrypoint`, and deletes the cluster.

    Args:
        entrypoint: shell command, or an argv list (quoted for the shell).
        runtime_env: Ray runtime env (env_vars, working_dir URI, pip, ...), sent as `runtimeEnvYAML`.
        active_deadline_seconds: hard limit for the job; defaults to the spec's TTL.
        ttl_seconds_after_finished: how long KubeRay keeps the finished cluster for inspection.

    Raises:
        ValueError: for an empty entrypoint or bad deadlines.
    """
    command = entrypoint if isinstance(entrypoint, str) else shlex.join(entrypoint)
    if not command.strip():
        raise ValueError("entrypoint is empty; give the command to run, e.g. 'python train.py'")
    deadline = active_deadline_seconds if active_deadline_seconds is not None else spec.ttl_seconds
    if deadline <= 0 or ttl_seconds_after_finished < 0:
        raise ValueError(
            f"active_deadline_seconds {deadline} must be > 0 and ttl_seconds_after_finished "
            f"{ttl_seconds_after_finished} must be >= 0"
        )
    pool = spec.pool(catalog)
    labels = cluster_labels(spec, pool)
    submitter = _pod_template(
        spec,
        labels,
        container_name="ray-job-submitter",
        resources=_container_resources("500m", "512Mi", None, 0),
        memory="512Mi",
        ports=(),
        pool=None,
        automount_token=False,
    )
    submitter["spec"]["restartPolicy"] = "Never"
    job_spec: dict[str, Any] = {
        "entrypoint": command,
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": ttl_seconds_after_finished,
        "activeDeadlineSeconds": deadline,
        "submissionMode": "K8sJobMode",
        "backoffLimit": 0,
        "rayClusterSpec": build_ray_cluster_spec(spec, catalog=catalog),
        "submitterPodTemplate": submitter,
    }
    if runtime_env:
        job_spec["runtimeEnvYAML"] = yaml.safe_dump(dict(runtime_env), sort_keys=True)
    return {
        "apiVersion": RAY_API_VERSION,
        "kind": "RayJob",
        "metadata": _metadata(spec, pool, spec.cluster_name),
        "spec": job_spec,
    }


def build_network_policy(spec: ClusterSpec, *, platform_namespace: str) -> dict[str, Any]:
    """A NetworkPolicy for the cluster's pods: cluster-internal traffic and DNS; the dashboard/Jobs API
    only from `platform_namespace` (Dagster, X-Ray); Ray Client and the Jobs API from the cluster's
    own notebook pods; nothing else in or out."""
    platform_ns = platform_namespace
    members = {"podSelector": {"matchLabels": {"ray.io/cluster": spec.cluster_name}}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": f"{spec.cluster_name}-ray",
            "namespace": spec.namespace,
            "labels": {
                "app.kubernetes.io/managed-by": MANAGED_BY,
                f"{LABEL_PREFIX}/cluster": spec.cluster_name,
                f"{LABEL_PREFIX}/owner": spec.owner,
            },
        },
        "spec": {
            "podSelector": {"matchLabels": {"ray.io/cluster": spec.cluster_name}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": [members]},
                {
                    "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": platform_ns}}}],
                    "ports": [{"protocol": "TCP", "port": DASHBOARD_PORT}],
                },
                {
                    "from": [{"podSelector": {"matchLabels": {NOTEBOOK_LABEL: spec.cluster_name}}}],
                    "ports": [{"protocol": "TCP", "port": port} for port in (RAY_CLIENT_PORT, DASHBOARD_PORT)],
                },
            ],
            "egress": [
                {"to": [members]},
                {
                    "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                },
            ],
        },
    }


def auth_secret_name_for(cluster_name: str) -> str:
    """Name of the Secret holding a cluster's Ray auth token."""
    return f"{cluster_name}-ray-token"


def auth_secret_name(spec: ClusterSpec) -> str:
    """Name of the Secret holding the spec's cluster's Ray auth token."""
    return auth_secret_name_for(spec.cluster_name)


def build_auth_secret(spec: ClusterSpec, token: str) -> dict[str, Any]:
    """The Secret with the cluster's Ray token (`auth_token`), referenced by `authOptions.secretName`."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": auth_secret_name(spec),
            "namespace": spec.namespace,
            "labels": {"app.kubernetes.io/managed-by": MANAGED_BY, f"{LABEL_PREFIX}/cluster": spec.cluster_name},
        },
        "type": "Opaque",
        "stringData": {"auth_token": token},
    }


def build_cluster_manifests(spec: ClusterSpec, *, platform_namespace: str,
                            catalog: PoolCatalog | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """What a provider applies for one cluster: the RayCluster and its NetworkPolicy."""
    return [build_ray_cluster(spec, catalog=catalog), build_network_policy(spec, platform_namespace=platform_namespace)]
