"""KubeRayProvider: RayClusters applied through the Kubernetes API with the `kubernetes` client.

Checks a cluster fits (quota, nodes) before it is asked for; creates the token Secret, the
RayCluster and its NetworkPolicy (all from the pure builders); waits on KubeRay's status conditions
while explaining why a cluster is not ready (pending pods and their scheduling events); resolves
the dashboard from the head service, or carries it to 127.0.0.1 through `pods/portforward`;
records step heartbeats; and on teardown archives the job logs, then deletes it all. Transient
API errors (429, 5xx, connection refused) are retried with backoff; other 4xx fail at once with
the API's message.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import dataclasses
import functools
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from discord_ml.cluster.archive import archive_before_delete
from discord_ml.cluster.conventions import (
    ACTIVE_ANNOTATION,
    DASHBOARD_PORT,
    RAY_CLIENT_PORT,
)
from discord_ml.cluster.kuberay import capacity
from discord_ml.cluster.kuberay.client import api_error, load_config
from discord_ml.cluster.kuberay.manifests import (
    auth_secret_name_for,
    build_auth_secret,
    build_network_policy,
    build_ray_cluster,
)
from discord_ml.cluster.kuberay.portforward import OpenStream, PortForward
from discord_ml.cluster.kuberay.security import ensure_secure
from discord_ml.cluster.kuberay.status import cluster_info
from discord_ml.cluster.kuberay.writes import Write, create_all
from discord_ml.cluster.provider import (
    ClusterConnection,
    ClusterError,
    ClusterEvent,
    ClusterForbiddenError,
    ClusterInfo,
    ClusterNotFoundError,
    ClusterStatus,
    ClusterUnavailableError,
    Progress,
    poll_until_ready,
)
from discord_ml.cluster.spec import ClusterSpec
from discord_ml.settings import get_settings

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayclusters"
log = logging.getLogger(__name__)
TRANSIENT = frozenset({429, 500, 502, 503, 504})
DashboardAccess = Literal["dns", "service-ip", "port-forward"]
DASHBOARD_ACCESS: tuple[DashboardAccess, ...] = ("dns", "service-ip", "port-forward")


class KubeRayProvider:
    """Ray clusters as KubeRay `RayCluster` resources."""

    backend = "kuberay"

    def __init__(
        self,
        *,
        kubeconfig: str | None = None,
        dashboard_access: DashboardAccess = "dns",
        retries: int = 5,
        backoff_s: float = 0.5,
    ) -> None:
        """Args:
        kubeconfig: kubeconfig file; default: in-cluster config when running in a pod, else $KUBECONFIG/~/.kube/config.
        dashboard_access: `dns` (`<cluster>-head-svc.<ns>.svc.cluster.local`, from inside the cluster),
            `service-ip` (the head service's ClusterIP) or `port-forward` (the head pod's dashboard and
            Ray Client ports carried to 127.0.0.1 through the API's `pods/portforward`, from a laptop).
        retries: attempts for transient API errors.
        backoff_s: first retry delay (doubles each time).
        """
        import kubernetes

        self.kubeconfig = load_config(kubernetes, kubeconfig)
        # The client's generated return types are loose unions; we read documented fields.
        self._k8s: Any = kubernetes
        self.custom: Any = kubernetes.client.CustomObjectsApi()
        self.core: Any = kubernetes.client.CoreV1Api()
        self.networking: Any = kubernetes.client.NetworkingV1Api()
        self.dashboard_access = dashboard_access
        self.retries, self.backoff_s = retries, backoff_s
        self._forwards: dict[tuple[str, str, str, int], PortForward] = {}
        self._forwards_lock = threading.Lock()
        self._closes_at_exit = False

    # --- the interface ------------------------------------------------------------------------

    def preflight(self, spec: ClusterSpec) -> list[str]:
        """The RayCluster at its starting size against the namespace's ResourceQuotas and the allocatable
        capacity of the nodes its pods may use (read-only). Nodes are skipped where they may not be
        listed (no ClusterRole): quota alone is then checked, and the skip is logged."""
        namespace = str(spec.namespace)
        groups = capacity.pod_groups(build_ray_cluster(spec))
        requested = {**capacity.total(groups), "count/rayclusters.ray.io": Decimal(1)}
        serialize = self.core.api_client.sanitize_for_serialization
        quotas = serialize(self.call(self.core.list_namespaced_resource_quota, namespace).items)
        short = capacity.quota_shortfalls(requested, quotas, namespace)
        try:
            nodes = serialize(self.call(self.core.list_node).items)
        except ClusterForbiddenError as exc:
            log.warning("node capacity not checked: %s", exc)
            return short
        return short + capacity.node_shortfalls(groups, nodes)

    def create(self, spec: ClusterSpec) -> ClusterInfo:
        """Apply the token Secret, the RayCluster and its NetworkPolicy.

        Raises:
            ClusterExistsError: a RayCluster of that name exists in the namespace.
            ClusterError: the API rejected a manifest (its message included).
        """
        namespace, name = str(spec.namespace), spec.cluster_name
        cluster = build_ray_cluster(spec)
        ensure_secure(cluster)  # never send a manifest that breaks the rules
        secret = build_auth_secret(spec, secrets.token_urlsafe(32))
        policy = build_network_policy(spec, platform_namespace=get_settings().platform_namespace)
        custom = (GROUP, VERSION, namespace, PLURAL)
        writes = [
            # An existing Secret of that name (an earlier attempt's) is used as it is: KubeRay reads its token.
            Write.typed("Secret", secret, self.core, "secret", namespace, reuse_existing=True),
            Write(
                "RayCluster",
                name,
                cluster,
                functools.partial(self.custom.create_namespaced_custom_object, *custom),
                functools.partial(self.custom.get_namespaced_custom_object, *custom, name),
                functools.partial(self.custom.delete_namespaced_custom_object, *custom, name),
            ),
            Write.typed("NetworkPolicy", policy, self.networking, "network_policy", namespace),
        ]

        def exists(write: Write) -> str:
            return (
                f"{write.kind} {write.name!r} already exists in namespace {namespace!r} and is not this "
                f"create's; pick another name or delete it first (dml cluster delete {name} -n {namespace})"
            )

        create_all(self.call, writes, secrets.token_hex(8), exists=exists)
        return self.get(name, namespace=namespace)

    def wait_ready(self, name: str, *, namespace: str | None = None, timeout: float = 600.0,
                   on_progress: Progress | None = None) -> ClusterInfo:  # fmt: skip
        """Wait for `HeadPodReady` and `RayClusterProvisioned`, reporting why it is not ready yet.

        Raises:
            ClusterNotReadyError: failed, or not ready within `timeout`, with the pending reason.
        """
        get = functools.partial(self.get, name, namespace=namespace)
        return poll_until_ready(get, what=f"RayCluster {name!r}", timeout=timeout, interval=1.0,
                                on_progress=on_progress)  # fmt: skip

    def get(self, name: str, *, namespace: str | None = None) -> ClusterInfo:
        """One RayCluster, with the reason it is not ready (if it is not).

        Raises:
            ClusterNotFoundError: no such RayCluster.
        """
        namespace = namespace or get_settings().default_namespace
        try:
            obj = self.call(self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name)
        except ClusterNotFoundError:
            raise ClusterNotFoundError(
                f"no RayCluster {name!r} in namespace {namespace!r} (see dml cluster list -A)"
            ) from None
        return self._explained(cluster_info(obj))

    def list(self, selector: Mapping[str, str] | None = None, *, namespace: str | None = None) -> list[ClusterInfo]:
        """RayClusters whose labels include `selector`, in one namespace or all of them."""
        label_selector = ",".join(f"{k}={v}" for k, v in (selector or {}).items())
        if namespace is None:
            result = self.call(self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL,
                               label_selector=label_selector)  # fmt: skip
        else:
            result = self.call(self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                               label_selector=label_selector)  # fmt: skip
        return [self._explained(cluster_info(item)) for item in result.get("items", [])]

    def delete(self, name: str, *, namespace: str | None = None) -> None:
        """Archive its job logs, then delete the RayCluster (KubeRay removes its pods and services; Kubernetes
        the notebook pods it owns), its NetworkPolicy and token."""
        namespace = namespace or get_settings().default_namespace
        archive_before_delete(self, name, namespace)
        calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
            (self.custom.delete_namespaced_custom_object, (GROUP, VERSION, namespace, PLURAL, name)),
            (self.networking.delete_namespaced_network_policy, (f"{name}-ray", namespace)),
            (self.core.delete_namespaced_secret, (auth_secret_name_for(name), namespace)),
        ]
        for call, args in calls:
            with contextlib.suppress(ClusterNotFoundError):
                self.call(call, *args)
        self.close_forwards(namespace, name)

    def connect(self, name: str, *, namespace: str | None = None) -> ClusterConnection:
        """Dashboard URL (from the head service, or a local port-forward) and the token from the cluster's Secret."""
        namespace = namespace or get_settings().default_namespace
        obj = self.call(self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name)
        secret_name = obj["spec"].get("authOptions", {}).get("secretName") or name
        secret = self.call(self.core.read_namespaced_secret, secret_name, namespace)
        headers = {"Authorization": f"Bearer {base64.b64decode((secret.data or {})['auth_token']).decode()}"}
        if self.dashboard_access == "port-forward":
            # Kept open for this process's life (or until the cluster is deleted through this provider).
            dashboard = self.forward(name, namespace=namespace, remote_port=DASHBOARD_PORT)
            client = self.forward(name, namespace=namespace, remote_port=RAY_CLIENT_PORT)
            return ClusterConnection(f"http://{dashboard.address}", headers, address=f"ray://{client.address}")
        service = self.call(self.core.read_namespaced_service, f"{name}-head-svc", namespace)
        port = next((p.port for p in service.spec.ports or [] if p.name == "dashboard"), DASHBOARD_PORT)
        if self.dashboard_access == "service-ip":
            host = service.spec.cluster_ip
        else:
            host = f"{name}-head-svc.{namespace}.svc.cluster.local"
        return ClusterConnection(f"http://{host}:{port}", headers)

    def touch(self, name: str, *, namespace: str | None = None) -> None:
        """Record a heartbeat as the RayCluster's last-active annotation (a merge patch)."""
        namespace = namespace or get_settings().default_namespace
        patch = {"metadata": {"annotations": {ACTIVE_ANNOTATION: datetime.now(UTC).isoformat()}}}
        self.call(self.custom.patch_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name, patch)

    def forward(self, name: str, *, namespace: str | None = None, remote_port: int, local_port: int = 0,
                pod: str | None = None) -> PortForward:  # fmt: skip
        """A local port carried to `remote_port` of the cluster's head pod (or of its pod named `pod`, a
        notebook); one per cluster, pod and port, reused while open.

        Raises:
            ForwardError: `local_port` is taken.
        """
        namespace = namespace or get_settings().default_namespace
        key = (namespace, name, pod or "", remote_port)
        with self._forwards_lock:
            running = self._forwards.get(key)
            if running is not None and running.open and local_port in (0, running.local_port):
                return running
            find = (lambda: pod) if pod else (lambda: self._head_pod(namespace, name))
            forward = PortForward(self._pod_stream(namespace, find), remote_port, local_port=local_port,
                                  what=f"port {remote_port} of {namespace}/{pod or name}")  # fmt: skip
            self._forwards[key] = forward
            if not self._closes_at_exit:
                atexit.register(self.close)
                self._closes_at_exit = True
        return forward

    def close(self) -> None:
        """Close every port-forward this provider opened."""
        with self._forwards_lock:
            forwards, self._forwards = list(self._forwards.values()), {}
        for forward in forwards:
            forward.close()

    def events(self, name: str, *, namespace: str | None = None, limit: int = 20) -> list[ClusterEvent]:
        """Kubernetes events of the RayCluster and of its pods and services (named `<cluster>-...`)."""
        namespace = namespace or get_settings().default_namespace
        self.get(name, namespace=namespace)  # a clear not-found error
        items = self.call(self.core.list_namespaced_event, namespace).items
        mine = [e for e in items if e.involved_object.name == name or e.involved_object.name.startswith(f"{name}-")]
        events = [
            ClusterEvent(e.last_timestamp or e.event_time or e.metadata.creation_timestamp, e.type or "Normal",
                         f"{e.involved_object.kind}/{e.involved_object.name}", e.reason or "", e.message or "")
            for e in mine
        ]  # fmt: skip
        events.sort(key=lambda e: e.time or datetime.min.replace(tzinfo=UTC))
        return events[-limit:]

    def notebooks(self, name: str, *, namespace: str | None = None) -> list[tuple[str, str]]:
        """The cluster's ready notebook pods: in the cluster (the sweeper) at the pod's IP, which its
        NetworkPolicy opens to the platform namespace; from a laptop through a port-forward."""
        from discord_ml.cluster.kuberay.notebook_manifests import JUPYTER_PORT
        from discord_ml.cluster.kuberay.notebooks import KubeRayNotebooks

        pods = KubeRayNotebooks(self)
        forwarded = self.dashboard_access == "port-forward"
        found = []
        for pod in pods.list(name, namespace=namespace or get_settings().default_namespace):
            if pod.ready:
                address = pods.forward(pod).address if forwarded else f"{pod.ip}:{JUPYTER_PORT}"
                found.append((f"http://{address}", pods.token(pod)))
        return found

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the Kubernetes API, retrying transient errors; map the rest to our errors (ClusterError...)."""
        import urllib3

        delay = self.backoff_s
        for attempt in range(1, self.retries + 1):
            try:
                return fn(*args, **kwargs)
            except self._k8s.client.ApiException as exc:
                if exc.status in TRANSIENT and attempt < self.retries:
                    time.sleep(delay)
                    delay *= 2
                    continue
                raise api_error(exc, self.kubeconfig) from None
            except (urllib3.exceptions.HTTPError, ConnectionError) as exc:
                if attempt < self.retries:
                    time.sleep(delay)
                    delay *= 2
                    continue
                host = self.core.api_client.configuration.host
                reason = getattr(exc, "reason", None) or exc
                raise ClusterUnavailableError(
                    f"the Kubernetes API at {host} is unreachable ({reason}); check that the cluster is up and that "
                    f"{self.kubeconfig} points at it"
                ) from None
        raise AssertionError("unreachable")

    def close_forwards(self, namespace: str, name: str, *, pod: str | None = None) -> None:
        """Close the cluster's port-forwards (only those to `pod`, if given)."""
        with self._forwards_lock:
            keys = [k for k in self._forwards if k[:2] == (namespace, name) and pod in (None, k[2])]
            forwards = [self._forwards.pop(k) for k in keys]
        for forward in forwards:
            forward.close()

    # --- internals ---------------------------------------------------------------------------

    def _head_pod(self, namespace: str, name: str) -> str:
        pods = self.call(self.core.list_namespaced_pod, namespace,
                         label_selector=f"ray.io/cluster={name},ray.io/node-type=head")  # fmt: skip
        running = [p.metadata.name for p in pods.items if p.status.phase == "Running"]
        if not running:
            raise ClusterError(f"RayCluster {name!r} in {namespace!r} has no running head pod to forward to")
        return running[0]

    def _pod_stream(self, namespace: str, find_pod: Callable[[], str]) -> OpenStream:
        """Opens one `pods/portforward` stream to the pod `find_pod` names (asked again for each stream)."""
        from kubernetes.stream import portforward

        def open_stream(port: int) -> tuple[Any, Callable[[], None]]:
            pod = find_pod()
            # `portforward` swaps its client's request method while it connects: a client of its own
            # keeps the provider's other calls (other threads) off the websocket.
            api = self._k8s.client.CoreV1Api(self._k8s.client.ApiClient())
            stream = portforward(api.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port))
            return stream.socket(port), stream.close

        return open_stream

    def _explained(self, info: ClusterInfo) -> ClusterInfo:
        """A pending cluster with why its pods are pending (their scheduling events), not just the condition."""
        if info.status != ClusterStatus.PENDING:
            return info
        return dataclasses.replace(info, reason=self._pending_reason(info.namespace, info.name) or info.reason)

    def _pending_reason(self, namespace: str, name: str) -> str:
        pods = self.call(self.core.list_namespaced_pod, namespace, label_selector=f"ray.io/cluster={name}")
        reasons = []
        for pod in pods.items:
            if pod.status.phase != "Pending":
                continue
            events = self.call(self.core.list_namespaced_event, namespace,
                               field_selector=f"involvedObject.name={pod.metadata.name}")  # fmt: skip
            warnings = [e for e in events.items if e.type == "Warning"]
            if warnings:
                latest = warnings[-1]
                reasons.append(f"pod {pod.metadata.name} Pending: {latest.reason}: {latest.message}")
            else:
                reasons.append(f"pod {pod.metadata.name} Pending")
        return "; ".join(reasons)


__all__ = ["KubeRayProvider"]
