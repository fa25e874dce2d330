"""Pre-flight capacity: will a RayCluster fit before anything is created? Pure functions over the
manifest, the namespace's ResourceQuotas and the nodes (as the Kubernetes API returns them).

Two checks, each naming what is short and by how much:
- quota: what the cluster requests at its starting size against each ResourceQuota's `hard - used`;
- nodes: each pod group against the allocatable capacity of nodes its selector and tolerations
  admit (how many of its pods fit, node by node). A group whose pool scales its nodes from zero
  (no matching node yet) is left to the autoscaler, not refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from discord_ml.cluster.quantity import parse_quantity

COMPUTE = ("cpu", "memory")


@dataclass(frozen=True)
class PodGroup:
    """Identical pods of one cluster: the head, or one worker group at its starting size."""

    name: str
    count: int
    requests: dict[str, Decimal]  # cpu, memory, nvidia.com/gpu, ... per pod
    node_selector: dict[str, str]
    tolerations: list[dict[str, Any]]


def pod_groups(cluster: Mapping[str, Any]) -> list[PodGroup]:
    """The head and each worker group of a RayCluster manifest, with their requests per pod."""
    spec = cluster["spec"]
    groups = [("head", 1, spec["headGroupSpec"]["template"]["spec"])]
    for group in spec.get("workerGroupSpecs", []):
        count = int(group.get("replicas", group.get("minReplicas", 0)))
        groups.append((str(group["groupName"]), count, group["template"]["spec"]))
    found = []
    for name, count, pod in groups:
        requests: dict[str, Decimal] = {}
        for container in pod.get("containers", []):
            for key, value in ((container.get("resources") or {}).get("requests") or {}).items():
                requests[key] = requests.get(key, Decimal(0)) + parse_quantity(str(value))
        found.append(PodGroup(name, count, requests, dict(pod.get("nodeSelector") or {}),
                              list(pod.get("tolerations") or [])))  # fmt: skip
    return found


def total(groups: Iterable[PodGroup]) -> dict[str, Decimal]:
    """Everything the groups request together, plus their pod count (`pods`)."""
    summed: dict[str, Decimal] = {"pods": Decimal(0)}
    for group in groups:
        summed["pods"] += group.count
        for key, value in group.requests.items():
            summed[key] = summed.get(key, Decimal(0)) + value * group.count
    return summed


def _show(key: str, amount: Decimal) -> str:
    if key.endswith("memory"):
        return f"{(amount / 2**30).quantize(Decimal('0.1')).normalize():f}Gi"
    return f"{amount.normalize():f}"


def quota_shortfalls(
    requested: Mapping[str, Decimal], quotas: Sequence[Mapping[str, Any]], namespace: str
) -> list[str]:
    """What the request exceeds in each ResourceQuota (`status.hard` minus `status.used`)."""
    short = []
    for quota in quotas:
        status = quota.get("status") or {}
        hard, used = status.get("hard") or {}, status.get("used") or {}
        for key, limit in hard.items():
            # `requests.cpu`, `limits.cpu` and bare `cpu` all count requests here: ours equal limits.
            resource = key.split(".", 1)[1] if key.startswith(("requests.", "limits.")) else key
            if resource not in requested or not requested[resource]:
                continue
            left = parse_quantity(str(limit)) - parse_quantity(str(used.get(key, "0")))
            if requested[resource] > left:
                name = quota.get("metadata", {}).get("name", "?")
                line = (f"needs {_show(resource, requested[resource])} {resource}, quota {name} leaves "
                        f"{_show(resource, max(left, Decimal(0)))} in {namespace}")  # fmt: skip
                if line not in short:  # `requests.cpu` and `limits.cpu` short by the same: say it once
                    short.append(line)
    return short


def _tolerates(tolerations: Sequence[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    if taint.get("effect") == "PreferNoSchedule":
        return True
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if t.get("operator", "Equal") == "Exists" and t.get("key") in (None, taint.get("key")):
            return True
        if t.get("key") == taint.get("key") and t.get("value") == taint.get("value"):
            return True
    return False


def _admits(group: PodGroup, node: Mapping[str, Any]) -> bool:
    labels = node.get("metadata", {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in group.node_selector.items()):
        return False
    if (node.get("spec") or {}).get("unschedulable"):
        return False
    return all(_tolerates(group.tolerations, t) for t in (node.get("spec") or {}).get("taints") or [])


def node_shortfalls(groups: Sequence[PodGroup], nodes: Sequence[Mapping[str, Any]]) -> list[str]:
    """Pod groups that cannot all be placed on the allocatable capacity of the nodes that admit them."""
    short = []
    for group in groups:
        if not group.count:
            continue
        admitting = [n for n in nodes if _admits(group, n)]
        if not admitting:
            continue  # a pool scaled to zero: the cluster autoscaler adds nodes, nothing to compare against
        fits = 0
        for node in admitting:
            allocatable = {
                k: parse_quantity(str(v)) for k, v in ((node.get("status") or {}).get("allocatable") or {}).items()
            }
            per_node = [allocatable.get(k, Decimal(0)) // v for k, v in group.requests.items() if v > 0]
            fits += int(min(per_node)) if per_node else group.count
        if fits < group.count:
            biggest = {k: max(parse_quantity(str(((n.get("status") or {}).get("allocatable") or {}).get(k, "0")))
                              for n in admitting) for k in group.requests}  # fmt: skip
            need = ", ".join(f"{_show(k, v)} {k}" for k, v in group.requests.items() if v)
            room = ", ".join(f"{_show(k, v)} {k}" for k, v in biggest.items() if group.requests.get(k))
            short.append(f"{group.name}: needs {group.count} pod(s) of {need}; the {len(admitting)} node(s) it may "
                         f"use hold {fits} (largest: {room})")  # fmt: skip
    return short
