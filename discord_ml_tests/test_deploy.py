"""deploy/: every manifest validates against the Kubernetes schemas (strict), namespaces enforce the
restricted profile, RBAC grants exactly what is listed (and covers what the provider calls), the
pools files load through the platform's catalog and yield valid clusters, Helm values are pinned."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from discord_ml.cluster.kuberay.manifests import build_ray_cluster
from discord_ml.cluster.kuberay.notebooks import KubeRayNotebooks
from discord_ml.cluster.kuberay.provider import KubeRayProvider
from discord_ml.cluster.kuberay.security import validate_manifest
from discord_ml.cluster.pools import get_catalog, load_catalog
from discord_ml.cluster.spec import ClusterSpec
from discord_ml_tests.support.k8s_emulator import KubeEmulator
from discord_ml_tests.support.schemas import crd_errors, k8s_errors, pod_errors

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
MANIFESTS = sorted((DEPLOY / "platform").glob("*.yaml"))
POOL_FILES = sorted((DEPLOY / "pools").glob("*.yaml"))

Rules = dict[tuple[str, str], set[str]]


def _objects() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc


def _rules(kind: str, name: str) -> Rules:
    [role] = [o for _, o in _objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    rules: Rules = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                rules.setdefault((group, resource), set()).update(rule["verbs"])
    return rules


@pytest.mark.parametrize(("name", "obj"), list(_objects()), ids=[n for n, _ in _objects()])
def test_every_manifest_validates_strictly(name: str, obj: dict[str, Any]) -> None:
    assert k8s_errors(obj) == [], name


def test_manifests_cover_the_platform() -> None:
    kinds = sorted({o["kind"] for _, o in _objects()})
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "LimitRange", "Namespace", "NetworkPolicy",
                     "PriorityClass", "ResourceQuota", "Role", "RoleBinding", "Service", "ServiceAccount"]  # fmt: skip


def test_every_namespace_enforces_restricted() -> None:
    namespaces = [o for _, o in _objects() if o["kind"] == "Namespace"]
    assert {n["metadata"]["name"] for n in namespaces} == {"ml", "ml-platform"}
    for namespace in namespaces:
        labels = namespace["metadata"]["labels"]
        for mode in ("enforce", "audit", "warn"):
            assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"


def test_team_namespace_has_quota_limits_and_default_deny_with_dns() -> None:
    objects = {
        o["kind"] + "/" + o["metadata"]["name"]: o for _, o in _objects() if o["metadata"].get("namespace") == "ml"
    }
    quota = objects["ResourceQuota/ml-compute"]["spec"]["hard"]
    assert {"requests.cpu", "requests.memory", "requests.nvidia.com/gpu"} <= set(quota)
    assert "LimitRange/ml-defaults" in objects
    deny = objects["NetworkPolicy/ray-default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny  # no ingress at all
    [dns] = deny["egress"]
    assert sorted((p["protocol"], p["port"]) for p in dns["ports"]) == [("TCP", 53), ("UDP", 53)]
    assert deny["podSelector"] == {"matchExpressions": [{"key": "ray.io/node-type", "operator": "Exists"}]}
    accounts = [o for k, o in objects.items() if k.startswith("ServiceAccount/")]
    assert accounts and all(a["automountServiceAccountToken"] is False for a in accounts)


def test_code_location_role_grants_exactly_these_verbs() -> None:
    assert _rules("Role", "discord-ml-ray-manager") == {
        ("ray.io", "rayclusters"): {"get", "list", "watch", "create", "update", "patch", "delete"},
        ("ray.io", "rayjobs"): {"get", "list", "watch", "create", "update", "patch", "delete"},
        ("", "secrets"): {"get", "create", "delete"},
        ("networking.k8s.io", "networkpolicies"): {"get", "create", "delete"},
        ("", "pods"): {"get", "list", "watch"},
        ("", "services"): {"get", "list", "watch"},
        ("", "events"): {"get", "list", "watch"},
        ("", "pods/log"): {"get"},
        ("", "resourcequotas"): {"get", "list"},
    }
    [binding] = [
        o for _, o in _objects() if o["kind"] == "RoleBinding" and o["roleRef"]["name"] == "discord-ml-ray-manager"
    ]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "discord-ml-code-location",
                                    "namespace": "ml-platform"}]  # fmt: skip


def test_engineers_role_adds_only_port_forward_and_notebook_pods_to_the_code_locations() -> None:
    manager, user = _rules("Role", "discord-ml-ray-manager"), _rules("Role", "discord-ml-ray-user")
    assert user == {**manager, ("", "pods/portforward"): {"get", "create"},
                    ("", "pods"): {"get", "list", "watch", "create", "delete"}}  # fmt: skip
    [binding] = [
        o for _, o in _objects() if o["kind"] == "RoleBinding" and o["roleRef"]["name"] == "discord-ml-ray-user"
    ]
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "team-ml"}]


def test_xray_reads_everywhere_and_acts_only_where_a_team_namespace_binds_it() -> None:
    rules = _rules("ClusterRole", "discord-ml-xray-reader")
    assert rules == {
        ("ray.io", "rayclusters"): {"get", "list", "watch"},
        ("ray.io", "rayjobs"): {"get", "list", "watch"},
        ("", "pods"): {"get", "list", "watch"},
        ("", "services"): {"get", "list", "watch"},
        ("", "events"): {"get", "list", "watch"},
        ("", "pods/log"): {"get"},
    }
    assert _rules("ClusterRole", "discord-ml-xray-operator") == {
        ("ray.io", "rayclusters"): {"get", "delete"},
        ("", "secrets"): {"get", "create", "delete"},
        ("networking.k8s.io", "networkpolicies"): {"create", "delete"},
        ("", "pods"): {"create"},  # notebook pods
    }
    bindings = [o for _, o in _objects() if o["kind"] in ("RoleBinding", "ClusterRoleBinding")
                and o["roleRef"]["name"] == "discord-ml-xray-operator"]  # fmt: skip
    assert [(b["kind"], b["metadata"]["namespace"]) for b in bindings] == [("RoleBinding", "ml")]  # never cluster-wide
    assert bindings[0]["subjects"] == [
        {"kind": "ServiceAccount", "name": "discord-ml-xray", "namespace": "ml-platform"}
    ]
    [deployment] = [o for _, o in _objects() if o["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "discord-ml-xray"
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DML_XRAY_AUTH"]["value"] == "header" and "secretKeyRef" in env["DML_XRAY_SECRET"]["valueFrom"]
    [policy] = [
        o for _, o in _objects() if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "xray-from-auth-proxy"
    ]
    assert [p["podSelector"] for rule in policy["spec"]["ingress"] for p in rule["from"]] == [
        {"matchLabels": {"app.kubernetes.io/name": "oauth2-proxy"}}]  # fmt: skip
    # The platform's security rules (restricted profile); X-Ray reads the Kubernetes API, so it is
    # the one pod that keeps its service account token.
    violations = validate_manifest(deployment)
    assert [v.path for v in violations] == ["spec.template.spec.automountServiceAccountToken"]


_VERBS = {"GET": "get", "POST": "create", "DELETE": "delete", "PATCH": "patch", "PUT": "update"}
_PATH = re.compile(r"^/apis?/(?:(?P<group>[^/]+)/)?v[^/]+/(?P<ns>namespaces/[^/]+/)?(?P<resource>[^/]+)"
                   r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$")  # fmt: skip
Grant = tuple[str, str, str]


def _grants_used(requests: list[tuple[str, str]]) -> tuple[set[Grant], list[str]]:
    """The (group, resource, verb) each API call needs, and the calls that were not namespaced."""
    used: set[Grant] = set()
    cluster_wide = []
    for method, path in requests:
        plain = path.split("?")[0]
        match = _PATH.match(plain)
        assert match, f"unexpected call {method} {path}"
        if not match["ns"]:
            cluster_wide.append(f"{method} {plain}")
        group = "" if path.startswith("/api/") else match["group"]
        resource = match["resource"] + (f"/{match['sub']}" if match["sub"] else "")
        used.add((group, resource, "list" if method == "GET" and not match["name"] else _VERBS[method]))
        if resource == "pods/portforward":  # a websocket upgrade: authorized as `create` too since 1.31
            used.add((group, resource, "create"))
    return used, cluster_wide


def test_role_covers_every_call_the_provider_makes(kube_status_api: KubeEmulator) -> None:
    provider = KubeRayProvider()
    spec = ClusterSpec.build(name="rbac-probe", owner="pytest", workers=1, head_memory="1Gi")
    assert provider.preflight(spec) == []  # the resource's and the CLI's capacity check
    provider.create(spec)
    try:
        provider.wait_ready("rbac-probe", timeout=120)
        provider.connect("rbac-probe")
        provider.get("rbac-probe")
        provider.list(namespace="ml")
    finally:
        provider.delete("rbac-probe")
    granted = _rules("Role", "discord-ml-ray-manager")
    used, cluster_wide = _grants_used(kube_status_api.requests)
    # Nodes are cluster-scoped: the one call a Role cannot grant, granted by the node-reader ClusterRole.
    assert cluster_wide == ["GET /api/v1/nodes"], "the provider called non-namespaced endpoints a Role cannot grant"
    assert _rules("ClusterRole", "discord-ml-node-reader") == {("", "nodes"): {"list"}}
    [binding] = [o for _, o in _objects() if o["kind"] == "ClusterRoleBinding"
                 and o["roleRef"]["name"] == "discord-ml-node-reader"]  # fmt: skip
    assert {(s["kind"], s["name"]) for s in binding["subjects"]} == {
        ("ServiceAccount", "discord-ml-code-location"), ("Group", "team-ml")}  # fmt: skip
    used.discard(("", "nodes", "list"))
    assert {("ray.io", "rayclusters", "create"), ("", "secrets", "create")} <= used
    missing = sorted(u for u in used if u[2] not in granted.get((u[0], u[1]), set()))
    assert missing == [], f"the provider needs grants the Role lacks: {missing}"


def test_engineers_role_covers_every_call_from_a_laptop(kuberay_api: KubeEmulator) -> None:
    provider = KubeRayProvider(dashboard_access="port-forward")
    spec = ClusterSpec.build(name="laptop-probe", owner="pytest", workers=1, head_memory="1Gi")
    assert provider.preflight(spec) == []  # `dml cluster create`'s capacity check
    provider.create(spec)
    try:
        provider.wait_ready("laptop-probe", timeout=120)
        connection = provider.connect("laptop-probe")
        _get_json(f"{connection.dashboard_url}/api/version", dict(connection.headers))  # through pods/portforward
        provider.list(namespace="ml")
        notebooks = KubeRayNotebooks(provider)  # `dml notebook`
        pod = notebooks.wait_running(notebooks.launch("laptop-probe", namespace="ml", owner="pytest"))
        lab = notebooks.forward(pod)
        _get_json(f"http://{lab.address}/api/status?token={notebooks.token(pod)}", {})
        notebooks.list("laptop-probe", namespace="ml")
        notebooks.delete(pod)
    finally:
        provider.delete("laptop-probe")
    used, cluster_wide = _grants_used(kuberay_api.requests)
    assert cluster_wide == ["GET /api/v1/nodes"]  # the node-reader ClusterRole, bound to the group too
    used.discard(("", "nodes", "list"))
    assert {("", "pods/portforward", "get"), ("", "pods/portforward", "create"), ("", "pods", "create")} <= used
    granted = _rules("Role", "discord-ml-ray-user")
    missing = sorted(u for u in used if u[2] not in granted.get((u[0], u[1]), set()))
    assert missing == [], f"the CLI on a laptop needs grants the engineers' Role lacks: {missing}"


def _get_json(url: str, headers: dict[str, str]) -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as response:
        return json.load(response)


def test_xray_grants_cover_every_call_its_provider_makes(kube_status_api: KubeEmulator) -> None:
    provider = KubeRayProvider()
    provider.create(ClusterSpec.build(name="xray-probe", owner="pytest", workers=1, head_memory="1Gi"))
    provider.wait_ready("xray-probe", timeout=120)
    kube_status_api.requests.clear()  # from here on: what X-Ray does
    provider.list()
    provider.get("xray-probe")
    provider.events("xray-probe")
    provider.connect("xray-probe")
    notebooks = KubeRayNotebooks(provider)  # "Launch notebook", and the cluster page's list
    notebooks.launch("xray-probe", namespace="ml", owner="pytest")
    notebooks.list("xray-probe", namespace="ml")
    provider.delete("xray-probe")
    reader, operator = (
        _rules("ClusterRole", "discord-ml-xray-reader"),
        _rules("ClusterRole", "discord-ml-xray-operator"),
    )
    used, cluster_wide = _grants_used(kube_status_api.requests)
    assert cluster_wide == ["GET /apis/ray.io/v1/rayclusters"]  # listing every namespace: the reader ClusterRole
    assert {("ray.io", "rayclusters", "delete"), ("", "secrets", "get"), ("", "events", "list")} <= used
    missing = sorted(u for u in used if u[2] not in reader.get((u[0], u[1]), set()) | operator.get((u[0], u[1]), set()))
    assert missing == [], f"X-Ray needs grants its roles lack: {missing}"


@pytest.mark.parametrize("path", POOL_FILES, ids=[p.name for p in POOL_FILES])
def test_pools_files_load_through_the_catalog_and_make_valid_clusters(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_catalog(path).names == ["cpu", "t4", "l4", "a100", "h100"]
    monkeypatch.setenv("DML_POOLS_FILE", str(path))  # the setting the CLI and Dagster read
    get_catalog.cache_clear()
    try:
        catalog = get_catalog()
        assert catalog.source == str(path)
        for pool in catalog.pools:
            gpus = f":{pool.gpus_per_node}" if pool.gpus_per_node else ""
            spec = ClusterSpec.build(name=f"p-{pool.name}", owner="pytest", gpu_pool=f"{pool.name}{gpus}", workers=2)
            manifest = build_ray_cluster(spec)
            assert crd_errors(manifest) == [] and pod_errors(manifest) == [] and validate_manifest(manifest) == []
            worker = manifest["spec"]["workerGroupSpecs"][0]["template"]["spec"]
            assert worker["nodeSelector"] == pool.node_selector
    finally:
        monkeypatch.delenv("DML_POOLS_FILE")
        get_catalog.cache_clear()


def _values(name: str) -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / name).read_text())


def test_helm_values_are_pinned_and_wired_together() -> None:
    kuberay = _values("kuberay/values.yaml")
    assert kuberay["image"]["tag"] == "v1.6.2"
    assert {g["name"] for g in kuberay["featureGates"] if g["enabled"]} == {"RayClusterStatusConditions",
                                                                            "RayJobDeletionPolicy"}  # fmt: skip
    assert kuberay["watchNamespace"] == ["ml"]
    dagster = _values("dagster/values.yaml")
    assert dagster["runLauncher"]["type"] == "K8sRunLauncher"
    assert dagster["postgresql"]["enabled"] is False and dagster["generatePostgresqlPasswordSecret"] is False
    assert dagster["dagsterDaemon"]["runMonitoring"]["enabled"] and dagster["dagsterDaemon"]["runRetries"]["enabled"]
    launched = dagster["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfig"]
    user_code = _values("dagster/user-code-values.yaml")
    assert launched["serviceAccountName"] == user_code["serviceAccount"]["name"] == "discord-ml-code-location"
    [location] = user_code["deployments"]
    env = {e["name"]: e["value"] for e in location["env"]}
    assert env["DML_BACKEND"] == "kuberay" and env["DML_POOLS_FILE"].startswith("/etc/discord-ml/")
    tags = [kuberay["image"]["tag"], dagster["dagsterWebserver"]["image"]["tag"], location["image"]["tag"]]
    assert all(tag and tag != "latest" for tag in tags)


def test_dockerfile_final_stage_is_non_root_without_build_tools() -> None:
    stages = (DEPLOY / "Dockerfile").read_text().split("\nFROM ")
    final = stages[-1]
    assert "USER 1000" in final and "build-essential" not in final and "apt-get install" not in final
    assert "torch==2.13.0" in stages[0] + stages[1] and "--constraint" in stages[1]
