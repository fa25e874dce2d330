"""Pure builders for a per-user JupyterLab pod next to a KubeRay cluster: the Pod, the Secret with
its lab token, and its NetworkPolicy (plain dicts; the notebook provider sends them).

The pod is hardened like the Ray pods (restricted profile, no service account token); its kernels
reach the head's Ray Client port with the token from the cluster's Secret. All three objects are
owned by the RayCluster, so Kubernetes deletes them with it whoever deletes the cluster.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from discord_ml.cluster.conventions import DASHBOARD_PORT, LABEL_PREFIX, MANAGED_BY, NOTEBOOK_LABEL, RAY_CLIENT_PORT
from discord_ml.cluster.kuberay.manifests import auth_secret_name_for
from discord_ml.cluster.kuberay.security import hardened_container_security_context, hardened_pod_security_context

JUPYTER_PORT = 8888
WORK_DIR = "/home/ray/work"


def notebook_pod_name(cluster: str, owner: str) -> str:
    """`<cluster>-nb-<owner>`, a valid DNS label (<= 63); a hash stands in for an owner that is not one."""
    slug = re.sub(r"[^a-z0-9-]+", "-", owner.lower()).strip("-")
    name = f"{cluster}-nb-{slug}"
    if slug != owner or len(name) > 63:
        digest = hashlib.sha256(owner.encode()).hexdigest()[:8]
        name = f"{cluster}-nb-{slug[: 63 - len(cluster) - 13].strip('-')}-{digest}".replace("--", "-")
    return name


def notebook_labels(cluster: str, owner: str, pod: str) -> dict[str, str]:
    """Who owns the notebook and which cluster it belongs to (X-Ray and `dml notebook` list by these)."""
    return {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": "discord-ml",
        "app.kubernetes.io/component": "notebook",
        "app.kubernetes.io/instance": pod,
        f"{LABEL_PREFIX}/cluster": cluster,
        f"{LABEL_PREFIX}/owner": owner,
        NOTEBOOK_LABEL: cluster,
    }


def _owned_by(cluster: str, cluster_uid: str) -> list[dict[str, Any]]:
    return [{"apiVersion": "ray.io/v1", "kind": "RayCluster", "name": cluster, "uid": cluster_uid,
             "blockOwnerDeletion": False}]  # fmt: skip


def _metadata(name: str, namespace: str, labels: dict[str, str], cluster: str, cluster_uid: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": dict(labels),
            "ownerReferences": _owned_by(cluster, cluster_uid)}  # fmt: skip


def lab_secret_name(pod: str) -> str:
    """The Secret holding a notebook's JupyterLab token."""
    return f"{pod}-lab"


def build_lab_secret(pod: str, namespace: str, labels: dict[str, str], *, cluster: str, cluster_uid: str,
                     token: str) -> dict[str, Any]:  # fmt: skip
    """The notebook's JupyterLab token (`token`), read by the pod as JUPYTER_TOKEN and by its owner's `dml`."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": _metadata(lab_secret_name(pod), namespace, labels, cluster, cluster_uid),
            "stringData": {"token": token}}  # fmt: skip


def build_notebook_pod(
    cluster: str, namespace: str, owner: str, *, image: str, cluster_uid: str, cpu: str = "1", memory: str = "4Gi"
) -> dict[str, Any]:
    """JupyterLab whose kernels `ray.init()` into the cluster through its head's Ray Client port."""
    name = notebook_pod_name(cluster, owner)
    head = f"{cluster}-head-svc.{namespace}.svc.cluster.local"

    def secret(key: str, secret_name: str) -> dict[str, Any]:
        return {"secretKeyRef": {"name": secret_name, "key": key}}

    env = [
        {"name": "RAY_ADDRESS", "value": f"ray://{head}:{RAY_CLIENT_PORT}"},
        {"name": "RAY_DASHBOARD_URL", "value": f"http://{head}:{DASHBOARD_PORT}"},
        {"name": "RAY_AUTH_MODE", "value": "token"},
        {"name": "RAY_AUTH_TOKEN", "valueFrom": secret("auth_token", auth_secret_name_for(cluster))},
        {"name": "JUPYTER_TOKEN", "valueFrom": secret("token", lab_secret_name(name))},
        {"name": "DML_CLUSTER_NAME", "value": cluster},
        {"name": "HOME", "value": WORK_DIR},
        {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"},
    ]
    amounts = {"cpu": cpu, "memory": memory}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(name, namespace, notebook_labels(cluster, owner, name), cluster, cluster_uid),
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": hardened_pod_security_context(),
            "containers": [{
                "name": "jupyterlab",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["python", "-m", "jupyterlab"],
                "args": ["--no-browser", "--ip=0.0.0.0", f"--port={JUPYTER_PORT}", "--port-retries=0",
                         f"--notebook-dir={WORK_DIR}"],
                "env": env,
                "ports": [{"name": "jupyter", "containerPort": JUPYTER_PORT, "protocol": "TCP"}],
                "readinessProbe": {"tcpSocket": {"port": JUPYTER_PORT}, "periodSeconds": 5},
                "resources": {"requests": dict(amounts), "limits": dict(amounts)},
                "securityContext": hardened_container_security_context(),
                "volumeMounts": [{"name": "work", "mountPath": WORK_DIR}, {"name": "tmp", "mountPath": "/tmp"}],
            }],
            "volumes": [{"name": "work", "emptyDir": {"sizeLimit": "10Gi"}}, {"name": "tmp", "emptyDir": {}}],
        },
    }  # fmt: skip


def build_notebook_network_policy(pod: dict[str, Any], *, platform_namespace: str) -> dict[str, Any]:
    """Ingress to JupyterLab only from the platform namespace (its auth proxy; the sweeper reading kernel
    activity; a port-forward enters through the kubelet, which no NetworkPolicy governs);
    egress only to its cluster's head and to DNS."""
    meta = pod["metadata"]
    cluster = meta["labels"][NOTEBOOK_LABEL]
    dns = {"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
    # The platform namespace, as for Ray dashboards: its auth proxy, and the sweeper asking the kernels
    # whether they are busy.
    platform = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": platform_namespace}}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {**{k: v for k, v in meta.items() if k != "name"}, "name": meta["name"]},
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/instance": meta["name"], NOTEBOOK_LABEL: cluster}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [platform], "ports": [{"protocol": "TCP", "port": JUPYTER_PORT}]}],
            "egress": [
                {"to": [{"podSelector": {"matchLabels": {"ray.io/cluster": cluster, "ray.io/node-type": "head"}}}],
                 "ports": [{"protocol": "TCP", "port": RAY_CLIENT_PORT}, {"protocol": "TCP", "port": DASHBOARD_PORT}]},
                {"to": [dns], "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
            ],
        },
    }  # fmt: skip
