"""A Kubernetes API emulator on 127.0.0.1 for testing the KubeRay backend through the real
`kubernetes` client.

It serves the real REST paths for `rayclusters`/`rayjobs` (ray.io/v1), services, pods, events,
secrets and networkpolicies; validates created RayClusters against the KubeRay CRD schema and
Pods, Secrets and NetworkPolicies against the Kubernetes schema (422 like an API server); and emulates the KubeRay
operator: a new RayCluster gets a real local Ray cluster (head + 1 worker raylet, via the local
backend), head pod/service objects, status conditions, `head.serviceIP` and endpoints; deleting
it stops that Ray cluster. `pods/portforward` websockets to a head pod reach that Ray cluster's
GCS, dashboard and client ports. A created Pod (a notebook) runs as a local process (`k8s_kubelet`)
whose port-forwards reach it; deleting an object deletes what it owns (ownerReferences), as the
garbage collector does. A cluster can be told to stay Pending with an Unschedulable event or to
fail its head, and the next requests can be made to fail with a transient status.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

from discord_ml.cluster.local.nodes import LocalRayCluster
from discord_ml.cluster.spec import ClusterSpec
from discord_ml_tests.support import k8s_kubelet, k8s_portforward
from discord_ml_tests.support.k8s_kubelet import LocalContainer
from discord_ml_tests.support.schemas import crd_errors, k8s_errors

KINDS = {
    "rayclusters": "RayCluster", "rayjobs": "RayJob", "services": "Service", "pods": "Pod", "events": "Event",
    "secrets": "Secret", "networkpolicies": "NetworkPolicy", "resourcequotas": "ResourceQuota", "nodes": "Node",
}  # fmt: skip
_PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[a-z]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>status|portforward))?$"
)
# Nothing listens there: a status-only cluster's dashboard refuses connections at once.
UNSERVED_PORT = 1
UNSCHEDULABLE = (
    "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: "
    "3 No preemption victims found for incoming pod."
)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _running() -> dict[str, Any]:
    """A pod's status once the kubelet runs it and it is ready (every pod is at 127.0.0.1 here)."""
    return {"phase": "Running", "podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}  # fmt: skip


class KubeEmulator:
    """The emulator's state and operator; `serve()` runs it on a free port."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.lock = threading.RLock()
        self.modes: dict[str, str] = {}  # cluster name -> "pending" | "fail_head" | "status" | "run"
        self.default_mode = "run"  # "status": clusters and pods are marked ready, no process runs
        self.transient_failures: list[int] = []  # statuses to answer the next requests with
        self.requests: list[tuple[str, str]] = []
        self.ray: dict[tuple[str, str], LocalRayCluster] = {}
        self.threads: list[threading.Thread] = []
        self.forwards_open = 0  # pods/portforward streams being carried now
        self.containers: dict[tuple[str, str], LocalContainer] = {}  # notebook pods run by the kubelet
        self.url = ""

    # --- store ---------------------------------------------------------------------------------

    def put(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        meta["resourceVersion"] = str(len(self.requests) + 1)
        obj.setdefault("kind", KINDS[plural])
        with self.lock:
            self.objects[(plural, meta.get("namespace", ""), meta["name"])] = obj
        return obj

    def find(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [
                copy.deepcopy(o) for (p, ns, _), o in self.objects.items() if p == plural and namespace in (None, ns)
            ]

    def ray_clusters(self) -> list[str]:
        """Names of the RayClusters that exist."""
        return sorted(o["metadata"]["name"] for o in self.find("rayclusters"))

    # --- operator emulation --------------------------------------------------------------------

    def _reconcile(self, namespace: str, name: str) -> None:
        cluster = self.objects[("rayclusters", namespace, name)]
        spec = cluster["spec"]
        desired = sum(int(g.get("replicas", 0)) for g in spec.get("workerGroupSpecs", []))
        head_pod = f"{name}-head-x7k2p"
        labels = {"ray.io/cluster": name, "ray.io/node-type": "head"}
        pod = {"apiVersion": "v1", "metadata": {"name": head_pod, "namespace": namespace, "labels": labels},
               "spec": spec["headGroupSpec"]["template"]["spec"], "status": {"phase": "Pending"}}  # fmt: skip
        self.put("pods", pod)
        cluster["status"] = {"state": "", "desiredWorkerReplicas": desired, "readyWorkerReplicas": 0, "conditions": [
            {"type": "HeadPodReady", "status": "False", "reason": "HeadPodNotFound", "message": "",
             "lastTransitionTime": _now()}]}  # fmt: skip
        mode = self.modes.get(name, self.default_mode)
        if mode == "pending":
            self.put("events", {"apiVersion": "v1", "metadata": {"name": f"{head_pod}.1", "namespace": namespace},
                                "involvedObject": {"kind": "Pod", "name": head_pod, "namespace": namespace},
                                "type": "Warning", "reason": "FailedScheduling", "message": UNSCHEDULABLE,
                                "lastTimestamp": _now()})  # fmt: skip
            pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                            "message": UNSCHEDULABLE}]  # fmt: skip
            return
        if mode == "fail_head":
            pod["status"] = {"phase": "Failed", "reason": "Error", "message": "ray start exited with code 1"}
            cluster["status"]["conditions"].append({"type": "ReplicaFailure", "status": "True",
                "reason": "HeadPodFailed", "message": "head pod failed: ray start exited with code 1",
                "lastTransitionTime": _now()})  # fmt: skip
            cluster["status"]["state"] = "failed"
            return
        if mode == "status":  # the operator's bookkeeping only, no Ray behind it: the unit tier's mode
            ports = {"gcs-server": UNSERVED_PORT, "dashboard": UNSERVED_PORT, "client": 10001, "metrics": 8080}
            with self.lock:
                self._ready(namespace, name, pod, ports)
            return
        token_secret = spec.get("authOptions", {}).get("secretName", name)
        secret = self.objects.get(("secrets", namespace, token_secret))
        token = base64.b64decode(secret["data"]["auth_token"]).decode() if secret else None
        ray = LocalRayCluster(ClusterSpec.build(name=name[:40], owner="kuberay-emulator", workers=1, head_memory="1Gi"),
                              token_value=token)  # fmt: skip
        ray.start()
        with self.lock:
            if ("rayclusters", namespace, name) not in self.objects:  # deleted while starting
                ray.stop()
                return
            self.ray[(namespace, name)] = ray
            self._ready(namespace, name, pod, {"gcs-server": ray.gcs_port, "dashboard": ray.dashboard_port,
                                               "client": 10001, "metrics": 8080})  # fmt: skip

    def _ready(self, namespace: str, name: str, pod: dict[str, Any], ports: dict[str, int]) -> None:
        """Mark a RayCluster, its head pod and its head service ready, as the operator does."""
        cluster = self.objects.get(("rayclusters", namespace, name))
        if cluster is None:  # deleted meanwhile
            return
        desired = cluster["status"]["desiredWorkerReplicas"]
        pod["status"] = _running()
        self.put("services", {"apiVersion": "v1", "metadata": {"name": f"{name}-head-svc", "namespace": namespace,
                 "labels": {"ray.io/cluster": name}}, "spec": {"clusterIP": "127.0.0.1", "type": "ClusterIP",
                 "ports": [{"name": k, "port": v, "protocol": "TCP"} for k, v in ports.items()]}})  # fmt: skip
        cluster["status"] = {
            "state": "ready", "desiredWorkerReplicas": desired, "readyWorkerReplicas": desired,
            "availableWorkerReplicas": desired, "head": {"serviceIP": "127.0.0.1", "podIP": "127.0.0.1"},
            "endpoints": {k: str(v) for k, v in ports.items()},
            "conditions": [{"type": t, "status": "True", "reason": t, "message": "", "lastTransitionTime": _now()}
                           for t in ("HeadPodReady", "RayClusterProvisioned")],
        }  # fmt: skip

    def _run_pod(self, namespace: str, name: str) -> None:
        """The kubelet's part for a notebook pod: run its container, then mark it Running and Ready."""
        if self.default_mode == "status":  # no process: the pod is only marked running
            with self.lock:
                if ("pods", namespace, name) in self.objects:
                    self.objects[("pods", namespace, name)]["status"] = _running()
            return
        with self.lock:
            pod = copy.deepcopy(self.objects[("pods", namespace, name)])
            secrets = {o["metadata"]["name"]: o for o in self.find("secrets", namespace)}
            services = {f"{c}-head-svc.{ns}.svc.cluster.local:{port}": f"127.0.0.1:{local}"
                        for (ns, c), ray in self.ray.items()
                        for port, local in ((10001, ray.client_port), (8265, ray.dashboard_port))}  # fmt: skip

        def resolve(value: str) -> str:  # what cluster DNS and the service would do
            for address, local in services.items():
                value = value.replace(address, local)
            return value

        try:
            container = k8s_kubelet.run_container(pod, secrets, resolve)
        except (RuntimeError, LookupError) as exc:
            with self.lock:
                if ("pods", namespace, name) in self.objects:
                    self.objects[("pods", namespace, name)]["status"] = {"phase": "Failed", "message": str(exc)}
            return
        with self.lock:
            live = self.objects.get(("pods", namespace, name))
            if live is None:  # deleted while starting
                k8s_kubelet.stop_container(container)
                return
            self.containers[(namespace, name)] = container
            live["status"] = _running()

    def _delete(self, key: tuple[str, str, str]) -> None:
        """Delete an object; what it owns goes with it (the garbage collector), pods stop."""
        with self.lock:
            obj = self.objects.pop(key, None)
            if obj is None:
                return
            uid = obj["metadata"]["uid"]
            owned = [k for k, o in self.objects.items()
                     if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences", []))]  # fmt: skip
            container = self.containers.pop((key[1], key[2]), None) if key[0] == "pods" else None
        if container is not None:
            k8s_kubelet.stop_container(container)
        if key[0] == "rayclusters":
            self._teardown(key[1], key[2])
        for dependent in owned:
            self._delete(dependent)

    def _teardown(self, namespace: str, name: str) -> None:
        with self.lock:
            ray = self.ray.pop((namespace, name), None)
            for key in [k for k, o in self.objects.items() if k[0] in ("pods", "services", "events")
                        and k[1] == namespace and (o["metadata"].get("labels", {}).get("ray.io/cluster") == name
                        or o.get("involvedObject", {}).get("name", "").startswith(f"{name}-head"))]:  # fmt: skip
                del self.objects[key]
        if ray is not None:
            ray.stop()

    def pod_ports(self, namespace: str, pod: str) -> dict[int, int]:
        """A running pod's container ports and where the emulator serves them on 127.0.0.1."""
        with self.lock:
            obj = self.objects.get(("pods", namespace, pod))
            if obj is None or obj["status"].get("phase") != "Running":
                return {}
            container = self.containers.get((namespace, pod))
            if container is not None:
                [port] = [p["containerPort"] for p in obj["spec"]["containers"][0]["ports"]]
                return {port: container.port}
            ray = self.ray.get((namespace, obj["metadata"]["labels"].get("ray.io/cluster", "")))
        if ray is None:
            return {}
        return {6379: ray.gcs_port, 8265: ray.dashboard_port, 10001: ray.client_port}

    def portforward(self, handler: BaseHTTPRequestHandler, namespace: str, pod: str, ports: list[int]) -> None:
        """Serve one `pods/portforward` websocket like the API server and kubelet do."""
        self.requests.append(("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}/portforward"))
        served = self.pod_ports(namespace, pod)
        if not served:
            handler.send_error(404, f'pods "{pod}" not found or not running')
            return
        with self.lock:
            self.forwards_open += 1
        try:
            k8s_portforward.serve(handler, {port: served.get(port) for port in ports}, pod=pod)
        finally:
            with self.lock:
                self.forwards_open -= 1

    # --- HTTP ----------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        self.requests.append((method, path))
        if self.transient_failures:
            code = self.transient_failures.pop(0)
            return code, _status(code, "ServiceUnavailable", "the server is currently unable to handle the request")
        match = _PATH.match(path)
        if match is None or match["plural"] not in KINDS:
            return 404, _status(404, "NotFound", f"the server could not find the requested resource ({path})")
        plural, ns, name = match["plural"], match["ns"], match["name"]
        if method == "GET" and name is None:
            items = self.find(plural, ns)
            selector = dict(p.split("=", 1) for p in query.get("labelSelector", [""])[0].split(",") if "=" in p)
            items = [o for o in items if selector.items() <= o["metadata"].get("labels", {}).items()]
            field = dict(p.split("=", 1) for p in query.get("fieldSelector", [""])[0].split(",") if "=" in p)
            if "involvedObject.name" in field:
                items = [o for o in items if o.get("involvedObject", {}).get("name") == field["involvedObject.name"]]
            return 200, {"apiVersion": "v1", "kind": f"{KINDS[plural]}List", "metadata": {"resourceVersion": "1"},
                         "items": items}  # fmt: skip
        if method == "POST":
            return self._create(plural, ns or "", body)
        key = (plural, ns or "", name or "")
        with self.lock:
            obj = self.objects.get(key)
        if obj is None:
            return 404, _status(404, "NotFound", f'{plural} "{name}" not found')
        if method == "GET":
            return 200, copy.deepcopy(obj)
        if method == "PATCH":  # a JSON merge patch (RFC 7386), what the client sends for a dict body
            with self.lock:
                _merge(obj, body or {})
                obj["metadata"]["resourceVersion"] = str(len(self.requests) + 1)
                return 200, copy.deepcopy(obj)
        if method == "DELETE":
            self._delete(key)
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}
        return 405, _status(405, "MethodNotAllowed", f"{method} is not supported by the emulator")

    def _create(self, plural: str, namespace: str, body: dict[str, Any]) -> tuple[int, Any]:
        name = body.get("metadata", {}).get("name", "")
        if (plural, namespace, name) in self.objects:
            return 409, _status(
                409, "AlreadyExists", f'{plural}.{"ray.io" if "ray" in plural else ""} "{name}" already exists'
            )
        errors = crd_errors(body) if plural in ("rayclusters", "rayjobs") else []
        if plural in ("networkpolicies", "pods", "secrets"):
            errors = k8s_errors(body)
        if errors:
            return 422, _status(422, "Invalid", f'{KINDS[plural]} "{name}" is invalid: ' + "; ".join(errors))
        body.setdefault("metadata", {})["namespace"] = namespace
        if plural == "secrets" and "stringData" in body:  # like the API server: stored base64-encoded
            encoded = {k: base64.b64encode(v.encode()).decode() for k, v in body.pop("stringData").items()}
            body["data"] = {**body.get("data", {}), **encoded}
        if plural == "pods":
            body["status"] = {"phase": "Pending"}
        obj = self.put(plural, body)
        start = {"rayclusters": self._reconcile, "pods": self._run_pod}.get(plural)
        if start is not None:
            thread = threading.Thread(target=start, args=(namespace, name), daemon=True)
            self.threads.append(thread)
            thread.start()
        return 201, copy.deepcopy(obj)

    def stop_all(self) -> None:
        for thread in self.threads:
            thread.join(timeout=120)
        for namespace, name in list(self.ray):
            self._teardown(namespace, name)
        for key in list(self.containers):
            k8s_kubelet.stop_container(self.containers.pop(key))


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)  # type: ignore[arg-type]
        else:
            target[key] = value


class _Handler(BaseHTTPRequestHandler):
    emulator: KubeEmulator

    def _serve(self) -> None:
        url = urlparse(self.path)
        match = _PATH.match(url.path)
        if self.headers.get("Upgrade", "").lower() == "websocket" and match and match["sub"] == "portforward":
            ports = [int(p) for v in parse_qs(url.query).get("ports", []) for p in v.split(",")]
            self.emulator.portforward(self, match["ns"] or "", match["name"] or "", ports)
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        code, payload = self.emulator.handle(self.command, url.path, parse_qs(url.query), body)
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _serve  # noqa: N815 - http.server's method names

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve(tmp_path: Path, mode: str = "run") -> Iterator[tuple[KubeEmulator, Path]]:
    """Run an emulator on 127.0.0.1; yield it and a kubeconfig file that points at it.

    `mode` is the operator's default: `run` starts a real local Ray cluster per RayCluster and a
    process per pod; `status` only marks them ready (no process: the unit tier).
    """
    emulator = KubeEmulator()
    emulator.default_mode = mode
    handler = type("Handler", (_Handler,), {"emulator": emulator})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    emulator.url = f"http://127.0.0.1:{server.server_address[1]}"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": emulator.url}}],
        "users": [{"name": "tester", "user": {"token": "emulator-token"}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester", "namespace": "ml"}}],
    }))  # fmt: skip
    try:
        yield emulator, kubeconfig
    finally:
        emulator.stop_all()
        server.shutdown()
        server.server_close()
