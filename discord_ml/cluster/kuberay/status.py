"""Reading a RayCluster: what state KubeRay says it is in, and what the platform recorded on it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from discord_ml.cluster.conventions import (
    ACTIVE_ANNOTATION,
    DASHBOARD_PORT,
    IDLE_ANNOTATION,
    LABEL_PREFIX,
    TTL_ANNOTATION,
)
from discord_ml.cluster.provider import ClusterInfo, ClusterStatus
from discord_ml.cluster.quantity import parse_quantity


def cluster_info(obj: Mapping[str, Any]) -> ClusterInfo:
    """A RayCluster object (as the API returns it) as the platform's ClusterInfo: status from KubeRay's
    conditions, ownership from the labels, TTL, idle timeout and heartbeat from the annotations."""
    meta, spec, status = obj["metadata"], obj.get("spec", {}), obj.get("status") or {}
    labels = dict(meta.get("labels") or {})
    conditions = {c["type"]: c for c in status.get("conditions", [])}
    groups = spec.get("workerGroupSpecs", [])
    desired = status.get("desiredWorkerReplicas", sum(int(g.get("replicas", 0)) for g in groups))
    gpus = next((int(g.get("rayStartParams", {}).get("num-gpus", 0)) for g in groups), 0)
    head_template = spec.get("headGroupSpec", {}).get("template", {})
    if meta.get("deletionTimestamp"):
        state, reason = ClusterStatus.DELETING, "being deleted"
    elif conditions.get("ReplicaFailure", {}).get("status") == "True" or status.get("state") == "failed":
        # KubeRay writes `<reason>\n<API message>`: one line reads better in a table.
        failure = conditions.get("ReplicaFailure", {}).get("message", "failed")
        state, reason = ClusterStatus.FAILED, failure.replace("\n", ": ")
    elif status.get("state") == "ready" or all(
        conditions.get(c, {}).get("status") == "True" for c in ("HeadPodReady", "RayClusterProvisioned")
    ):
        state, reason = ClusterStatus.READY, ""
    else:
        head = conditions.get("HeadPodReady", {})
        state, reason = (
            ClusterStatus.PENDING,
            head.get("message") or head.get("reason") or "waiting for the operator",
        )
    annotations = meta.get("annotations") or {}
    ttl, idle, active = (annotations.get(k) for k in (TTL_ANNOTATION, IDLE_ANNOTATION, ACTIVE_ANNOTATION))
    name, namespace = meta["name"], meta.get("namespace", "")
    service_ip = (status.get("head") or {}).get("serviceIP")
    port = (status.get("endpoints") or {}).get("dashboard", str(DASHBOARD_PORT))
    return ClusterInfo(
        name=name,
        namespace=namespace,
        backend="kuberay",
        owner=labels.get(f"{LABEL_PREFIX}/owner", ""),
        team=labels.get(f"{LABEL_PREFIX}/team", ""),
        purpose=labels.get(f"{LABEL_PREFIX}/purpose", ""),
        gpu_pool=labels.get(f"{LABEL_PREFIX}/gpu-pool", ""),
        gpu_type=labels.get(f"{LABEL_PREFIX}/gpu-type", "none"),
        gpus_per_worker=gpus,
        workers_ready=int(status.get("readyWorkerReplicas", 0)),
        workers_desired=int(desired),
        status=state,
        reason=reason,
        created=_timestamp(meta.get("creationTimestamp")),
        dashboard_url=f"http://{service_ip}:{port}" if service_ip and state == ClusterStatus.READY else None,
        labels=labels,
        ttl_seconds=int(ttl) if ttl and ttl.isdigit() else None,
        idle_timeout_seconds=int(idle) if idle and idle.isdigit() else None,
        last_active=datetime.fromisoformat(active) if active else None,
        head_cpu=_requested_cpu(head_template),
        worker_cpu=next((_requested_cpu(g.get("template", {})) for g in groups), 0.0),
    )


def _requested_cpu(template: Mapping[str, Any]) -> float:
    """CPUs the pod template's first container requests (0 when it names none)."""
    containers = template.get("spec", {}).get("containers") or [{}]
    cpu = (containers[0].get("resources") or {}).get("requests", {}).get("cpu")
    return float(parse_quantity(str(cpu))) if cpu else 0.0


def _timestamp(value: str | None) -> datetime:
    if not value:
        return datetime.now(UTC)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
