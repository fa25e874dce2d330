"""Nodes shaped like the pool catalog's (labels, taints, allocatable), registered on the testbed and kept
Ready by a heartbeat (their Leases renewed), so the real scheduler places pods on them and explains
why a pod does not fit. No container runs on them: a pod bound here stays Pending (ContainerCreating)."""

from __future__ import annotations

import datetime
import threading
import time
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from discord_ml.cluster.pools import get_catalog
from discord_ml_tests.support.kube.testbed import Testbed

LEASE_SECONDS = 40


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def node_for_pool(pool_name: str, index: int) -> dict[str, Any]:
    """A Node object with the pool's selector labels, taints and per-node allocatable."""
    pool = get_catalog().get(pool_name)
    allocatable = {"cpu": str(pool.cpu_per_node), "memory": str(pool.memory_per_node), "pods": "110"}
    if pool.gpus_per_node:
        allocatable[pool.resource_key or "nvidia.com/gpu"] = str(pool.gpus_per_node)
    taints = [{"key": t.key, "effect": t.effect, "value": t.value or "present"} for t in pool.tolerations if t.effect]
    name = f"{pool_name}-node-{index}"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                **pool.node_selector,
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
        "spec": {"taints": taints},
        "status": {"capacity": allocatable, "allocatable": allocatable},
    }


def _ready_status(node: dict[str, Any]) -> dict[str, Any]:
    now = _now()
    return {
        "status": {
            **node["status"],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "testbed node",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": node["metadata"]["name"]},
            ],
        }
    }


@contextmanager
def pool_nodes(bed: Testbed, pools: dict[str, int]) -> Iterator[list[str]]:
    """Register `count` nodes per pool name, Ready and heartbeating until the block ends; then remove them."""
    names: list[str] = []
    for pool, count in pools.items():
        for index in range(count):
            node = node_for_pool(pool, index)
            bed.request("POST", "/api/v1/nodes", node)
            bed.request(
                "PATCH",
                f"/api/v1/nodes/{node['metadata']['name']}/status",
                _ready_status(node),
                content_type="application/merge-patch+json",
            )
            names.append(node["metadata"]["name"])
    stop = threading.Event()

    def heartbeat() -> None:
        renewed = 0.0
        while not stop.is_set():
            with suppress(urllib.error.URLError, OSError):  # the testbed is stopping
                if time.monotonic() - renewed > LEASE_SECONDS / 4:
                    for name in names:
                        _renew_lease(bed, name)
                    renewed = time.monotonic()
                _finish_deletions(bed, names)
            stop.wait(1)

    thread = threading.Thread(target=heartbeat, name="testbed-node-heartbeat", daemon=True)
    thread.start()
    try:
        yield names
    finally:
        stop.set()
        thread.join(timeout=30)
        for name in names:
            with suppress(urllib.error.HTTPError):
                bed.request("DELETE", f"/api/v1/nodes/{name}")


def _renew_lease(bed: Testbed, name: str) -> None:
    """What a kubelet does every few seconds: renew its node's Lease (created on first use)."""
    path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": _now()},
    }
    try:
        current = bed.request("GET", path)
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise
        bed.request("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease)
        return
    lease["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    bed.request("PUT", path, lease)


def _finish_deletions(bed: Testbed, names: list[str]) -> None:
    """What a kubelet does once a bound pod's containers have stopped: remove the pod for good. Here
    nothing ran, so a pod marked for deletion on these nodes is removed at once."""
    for name in names:
        pods = bed.request("GET", f"/api/v1/pods?fieldSelector=spec.nodeName={name}")["items"]
        for pod in pods:
            meta = pod["metadata"]
            if meta.get("deletionTimestamp"):
                with suppress(urllib.error.HTTPError):  # already gone
                    bed.request(
                        "DELETE",
                        f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                        {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0},
                    )
