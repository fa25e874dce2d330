"""Per-user JupyterLab pods next to a KubeRay cluster, through the cluster provider's Kubernetes client.

`dml notebook` and X-Ray's "Launch notebook" create them on kuberay; they are listed on the
cluster's page and deleted with the cluster (owner references), or one by one.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from discord_ml.cluster.conventions import LABEL_PREFIX, NOTEBOOK_LABEL
from discord_ml.cluster.kuberay.notebook_manifests import (
    JUPYTER_PORT,
    build_lab_secret,
    build_notebook_network_policy,
    build_notebook_pod,
    lab_secret_name,
    notebook_pod_name,
)
from discord_ml.cluster.kuberay.portforward import PortForward
from discord_ml.cluster.kuberay.provider import GROUP, PLURAL, VERSION, KubeRayProvider
from discord_ml.cluster.kuberay.security import ensure_secure
from discord_ml.cluster.provider import ClusterExistsError, ClusterNotFoundError, ClusterNotReadyError
from discord_ml.settings import get_settings


@dataclass(frozen=True)
class NotebookPod:
    """One notebook pod, as listed."""

    name: str
    namespace: str
    cluster: str
    owner: str
    phase: str  # Pending, Running, Failed, ...
    ready: bool
    created: datetime | None
    ip: str | None = None  # the pod's IP (in-cluster callers reach JupyterLab there)


class KubeRayNotebooks:
    """Notebook pods of KubeRay clusters."""

    def __init__(self, provider: KubeRayProvider) -> None:
        self.provider = provider

    def launch(self, cluster: str, *, namespace: str, owner: str) -> NotebookPod:
        """The owner's notebook pod for `cluster`: the existing one, or a new one (Pod, lab-token Secret and
        NetworkPolicy, all owned by the RayCluster). Validated against the security rules before sending.

        Raises:
            ClusterNotFoundError: no such RayCluster.
        """
        p = self.provider
        obj = p.call(p.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, cluster)
        name = notebook_pod_name(cluster, owner)
        with contextlib.suppress(ClusterNotFoundError):
            return self._pod(p.call(p.core.read_namespaced_pod, name, namespace))
        uid = obj["metadata"]["uid"]
        image = obj["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
        pod = build_notebook_pod(cluster, namespace, owner, image=image, cluster_uid=uid)
        ensure_secure(pod)
        labels = pod["metadata"]["labels"]
        platform = get_settings().platform_namespace
        with contextlib.suppress(ClusterExistsError):  # left by an earlier attempt: keep its token
            p.call(p.core.create_namespaced_secret, namespace,
                    build_lab_secret(name, namespace, labels, cluster=cluster, cluster_uid=uid,
                                     token=secrets.token_urlsafe(24)))  # fmt: skip
        with contextlib.suppress(ClusterExistsError):
            p.call(p.networking.create_namespaced_network_policy, namespace,
                    build_notebook_network_policy(pod, platform_namespace=platform))  # fmt: skip
        try:
            created = p.call(p.core.create_namespaced_pod, namespace, pod)
        except ClusterExistsError:  # launched concurrently (another tab): the same pod
            created = p.call(p.core.read_namespaced_pod, name, namespace)
        return self._pod(created)

    def wait_running(self, pod: NotebookPod, *, timeout: float = 300.0) -> NotebookPod:
        """Wait until JupyterLab in the pod is ready.

        Raises:
            ClusterNotReadyError: the pod failed or is not ready in time (with its phase and reason).
        """
        p = self.provider
        deadline = time.monotonic() + timeout
        while True:
            obj = p.call(p.core.read_namespaced_pod, pod.name, pod.namespace)
            current = self._pod(obj)
            if current.ready:
                return current
            if current.phase in ("Failed", "Succeeded") or time.monotonic() > deadline:
                reason = obj.status.message or obj.status.reason or current.phase
                raise ClusterNotReadyError(f"notebook pod {pod.name!r} is not ready: {reason}")
            time.sleep(1.0)

    def list(self, cluster: str, *, namespace: str) -> list[NotebookPod]:
        """The cluster's notebook pods, oldest first."""
        p = self.provider
        pods = p.call(p.core.list_namespaced_pod, namespace, label_selector=f"{NOTEBOOK_LABEL}={cluster}")
        return sorted((self._pod(o) for o in pods.items), key=lambda n: (n.created is None, n.created, n.name))

    def token(self, pod: NotebookPod) -> str:
        """The pod's JupyterLab token (from its Secret)."""
        p = self.provider
        secret = p.call(p.core.read_namespaced_secret, lab_secret_name(pod.name), pod.namespace)
        return base64.b64decode((secret.data or {})["token"]).decode()

    def forward(self, pod: NotebookPod, *, local_port: int = 0) -> PortForward:
        """JupyterLab of the pod on 127.0.0.1 (through `pods/portforward`)."""
        return self.provider.forward(pod.cluster, namespace=pod.namespace, remote_port=JUPYTER_PORT,
                                     local_port=local_port, pod=pod.name)  # fmt: skip

    def delete(self, pod: NotebookPod) -> None:
        """Delete one notebook pod, its Secret and NetworkPolicy (its cluster stays)."""
        p = self.provider
        calls: list[tuple[Any, str]] = [
            (p.core.delete_namespaced_pod, pod.name),
            (p.networking.delete_namespaced_network_policy, pod.name),
            (p.core.delete_namespaced_secret, lab_secret_name(pod.name)),
        ]
        for call, name in calls:
            with contextlib.suppress(ClusterNotFoundError):
                p.call(call, name, pod.namespace)
        p.close_forwards(pod.namespace, pod.cluster, pod=pod.name)

    @staticmethod
    def _pod(obj: Any) -> NotebookPod:
        labels = obj.metadata.labels or {}
        conditions = {c.type: c.status for c in obj.status.conditions or []}
        return NotebookPod(
            name=obj.metadata.name,
            namespace=obj.metadata.namespace,
            cluster=labels.get(NOTEBOOK_LABEL, ""),
            owner=labels.get(f"{LABEL_PREFIX}/owner", ""),
            phase=obj.status.phase or "Pending",
            ready=obj.status.phase == "Running" and conditions.get("Ready") == "True",
            created=obj.metadata.creation_timestamp,
            ip=obj.status.pod_ip,
        )
