"""Each caller with the identity it has in production (deploy/platform's RBAC), judged by the real
authorizer; and every way of not having a usable cluster, as one line and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from discord_ml.cluster.kuberay.provider import KubeRayProvider
from discord_ml.cluster.provider import ClusterForbiddenError
from discord_ml.cluster.spec import ClusterSpec
from discord_ml_tests.kube.test_kuberay import eventually
from discord_ml_tests.support.kube.testbed import Testbed


def _spec(name: str) -> ClusterSpec:
    return ClusterSpec.build(name=name, namespace="ml", owner="alice", team="ml", workers=1)


def _gone(bed: Testbed, name: str) -> bool:
    return name not in [o["metadata"]["name"] for o in bed.request("GET", "/apis/ray.io/v1/rayclusters")["items"]]


def test_the_code_location_engineers_and_xray_can_do_their_calls(testbed: Testbed) -> None:
    # In production the code location reaches dashboards by cluster DNS; from here, through the API server.
    kubeconfig = testbed.service_account_kubeconfig("ml-platform", "discord-ml-code-location")
    code_location = KubeRayProvider(kubeconfig=str(kubeconfig), dashboard_access="port-forward")
    assert code_location.preflight(_spec("rbac-run")) == []  # quota in ml, nodes through the node-reader role
    code_location.create(_spec("rbac-run"))
    assert code_location.get("rbac-run", namespace="ml").owner == "alice"
    assert [c.name for c in code_location.list(namespace="ml")] == ["rbac-run"]
    code_location.touch("rbac-run", namespace="ml")
    code_location.events("rbac-run", namespace="ml")
    # X-Ray reads every namespace and acts in the team namespace that binds it.
    xray = KubeRayProvider(
        kubeconfig=str(testbed.service_account_kubeconfig("ml-platform", "discord-ml-xray")),
        dashboard_access="port-forward",
    )
    assert [c.name for c in xray.list()] == ["rbac-run"]
    xray.events("rbac-run", namespace="ml")
    xray.delete("rbac-run", namespace="ml")
    eventually("deleted", lambda: _gone(testbed, "rbac-run"))
    # An engineer of team-ml (a person's certificate in the group the RoleBinding names).
    engineer = KubeRayProvider(
        kubeconfig=str(testbed.user_kubeconfig("alice@discord.example", ["team-ml"])), dashboard_access="port-forward"
    )
    assert engineer.preflight(_spec("rbac-laptop")) == []
    engineer.create(_spec("rbac-laptop"))
    assert [c.name for c in engineer.list(namespace="ml")] == ["rbac-laptop"]
    engineer.delete("rbac-laptop", namespace="ml")
    eventually("deleted", lambda: _gone(testbed, "rbac-laptop"))


def test_a_role_without_one_verb_fails_that_call_naming_the_verb_and_resource(testbed: Testbed) -> None:
    platform = Path(__file__).resolve().parents[2] / "deploy/platform/team-ml.yaml"
    [role] = [
        d
        for d in yaml.safe_load_all(platform.read_text())
        if d and d["kind"] == "Role" and d["metadata"]["name"] == "discord-ml-ray-manager"
    ]
    rules = []
    for rule in role["rules"]:  # the code location's Role, less `delete` on rayclusters
        verbs = [v for v in rule["verbs"] if not ("rayclusters" in rule["resources"] and v == "delete")]
        rules.append({**rule, "verbs": verbs})
    name = "discord-ml-ray-manager-no-delete"
    testbed.request(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/ml/roles",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name, "namespace": "ml"},
            "rules": rules,
        },
    )
    testbed.request(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/ml/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": "ml"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}],
        },
    )
    limited = KubeRayProvider(kubeconfig=str(testbed.user_kubeconfig("mallory", [])), dashboard_access="port-forward")
    limited.create(_spec("rbac-nodelete"))
    try:
        with pytest.raises(ClusterForbiddenError) as exc:
            limited.delete("rbac-nodelete", namespace="ml")
        assert 'User "mallory" cannot delete resource "rayclusters" in API group "ray.io"' in str(exc.value)
        assert "ask your platform team for that permission" in str(exc.value)
    finally:
        KubeRayProvider(kubeconfig=str(testbed.kubeconfig), dashboard_access="port-forward").delete(
            "rbac-nodelete", namespace="ml"
        )


def _dml(*argv: str, kubeconfig: Path | str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    dml = Path(sys.executable).parent / "dml"
    return subprocess.run([str(dml), *argv], capture_output=True, text=True, env=env, timeout=120, check=False)


def test_without_a_usable_cluster_each_command_says_why_in_one_line(testbed: Testbed, tmp_path: Path) -> None:
    from discord_ml.cluster.local.processes import free_ports

    [closed] = free_ports(1)
    stopped = testbed.write_kubeconfig("stopped", {"token": "x"})
    stopped.write_text(stopped.read_text().replace(testbed.server, f"https://127.0.0.1:{closed}"))
    bad_token = testbed.write_kubeconfig("bad-token", {"token": "not-a-token"})
    forbidden = testbed.user_kubeconfig("nobody", [])
    cases = {
        tmp_path / "missing": "kubeconfig {path} does not exist; point KUBECONFIG at your cluster's kubeconfig",
        stopped: f"the Kubernetes API at https://127.0.0.1:{closed} is unreachable",
        bad_token: "rejected the credentials of kubeconfig {path} (401 Unauthorized)",
        forbidden: 'is forbidden: User "nobody" cannot {verb} resource "rayclusters" in API group "ray.io"',
    }
    for kubeconfig, expected in cases.items():
        for verb, argv in (
            ("list", ["cluster", "list", "-b", "kuberay"]),
            ("get", ["cluster", "get", "x", "-b", "kuberay"]),
        ):
            done = _dml(*argv, kubeconfig=kubeconfig)
            lines = done.stderr.strip().splitlines()
            assert done.returncode == 2 and len(lines) == 1, (argv, kubeconfig, done.stderr)
            assert lines[0].startswith("error: ") and expected.format(path=kubeconfig, verb=verb) in lines[0], lines[0]
    # --dry-run needs no cluster: the manifests, and a note that capacity was not checked.
    done = _dml("cluster", "create", "dry", "-b", "kuberay", "--dry-run", "-o", "yaml", kubeconfig=tmp_path / "missing")
    assert done.returncode == 0, done.stderr
    assert [d["kind"] for d in yaml.safe_load_all(done.stdout)] == ["RayCluster", "NetworkPolicy"]
    assert "capacity: not checked (kubeconfig" in done.stderr
