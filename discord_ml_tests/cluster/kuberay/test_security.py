"""The security validator: accepts what we generate, rejects each rule's violation with its path."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from discord_ml.cli.main import app
from discord_ml.cluster.kuberay.manifests import build_cluster_manifests, build_ray_cluster, build_ray_job
from discord_ml.cluster.kuberay.security import SecurityViolationError, ensure_secure, validate_manifest
from discord_ml.cluster.spec import ClusterSpec

W = "spec.workerGroupSpecs[0].template.spec"
WC = f"{W}.containers[0]"
H = "spec.headGroupSpec.template.spec"


def _cluster(autoscaling: bool = False) -> dict[str, Any]:
    extra: dict[str, Any] = {"min_workers": 1, "max_workers": 3} if autoscaling else {"workers": 2}
    return build_ray_cluster(ClusterSpec.build(name="sec", owner="jane", gpu_pool="h100:8", **extra))


def _job() -> dict[str, Any]:
    return build_ray_job(ClusterSpec.build(name="sec", owner="jane", gpu_pool="t4:1"), "python train.py")


def _worker(m: dict[str, Any]) -> dict[str, Any]:
    return m["spec"]["workerGroupSpecs"][0]["template"]["spec"]


def _wctx(m: dict[str, Any]) -> dict[str, Any]:
    return _worker(m)["containers"][0]["securityContext"]


def _no_uid_anywhere(m: dict[str, Any]) -> None:
    _wctx(m).pop("runAsUser")
    _worker(m)["securityContext"].pop("runAsUser")


def _root_uid_on_pod(m: dict[str, Any]) -> None:
    _wctx(m).pop("runAsUser")
    _worker(m)["securityContext"]["runAsUser"] = 0


def _bad_init_container(m: dict[str, Any]) -> None:
    context = {k: v for k, v in _wctx(m).items() if k != "allowPrivilegeEscalation"}
    _worker(m)["initContainers"] = [
        {"name": "fetch", "image": "rayproject/ray:2.60.0-py311", "securityContext": context}
    ]


RULES: list[tuple[str, Callable[[], dict[str, Any]], Callable[[dict[str, Any]], None], str, str]] = [
    ("allow-privilege-escalation", _cluster, lambda m: _wctx(m).update(allowPrivilegeEscalation=True),
     f"{WC}.securityContext.allowPrivilegeEscalation", "must be false"),
    ("allow-privilege-escalation-unset", _cluster, lambda m: _wctx(m).pop("allowPrivilegeEscalation"),
     f"{WC}.securityContext.allowPrivilegeEscalation", "must be false"),
    ("privileged", _cluster, lambda m: _wctx(m).update(privileged=True), f"{WC}.securityContext.privileged",
     "must be false or unset"),
    ("drop-all", _cluster, lambda m: _wctx(m).update(capabilities={"drop": ["NET_RAW"]}),
     f"{WC}.securityContext.capabilities.drop", "must include ALL"),
    ("add-capability", _cluster, lambda m: _wctx(m)["capabilities"].update(add=["SYS_ADMIN"]),
     f"{WC}.securityContext.capabilities.add", "must not add 'SYS_ADMIN'"),
    ("run-as-non-root", _cluster, lambda m: _wctx(m).update(runAsNonRoot=False),
     f"{WC}.securityContext.runAsNonRoot", "must be true"),
    ("run-as-root-uid", _cluster, lambda m: _wctx(m).update(runAsUser=0), f"{WC}.securityContext.runAsUser",
     "must not be 0"),
    ("run-as-user-unset", _cluster,
     _no_uid_anywhere,
     f"{WC}.securityContext.runAsUser", "must be set to a non-zero uid"),
    ("seccomp", _cluster, lambda m: _wctx(m).update(seccompProfile={"type": "Unconfined"}),
     f"{WC}.securityContext.seccompProfile.type", "must be RuntimeDefault or Localhost"),
    ("proc-mount", _cluster, lambda m: _wctx(m).update(procMount="Unmasked"), f"{WC}.securityContext.procMount",
     "must be Default"),
    ("selinux-type", _cluster, lambda m: _wctx(m).update(seLinuxOptions={"type": "spc_t"}),
     f"{WC}.securityContext.seLinuxOptions.type", "not an allowed SELinux type"),
    ("host-port", _cluster, lambda m: _worker(m)["containers"][0]["ports"][0].update(hostPort=8080),
     f"{WC}.ports[0].hostPort", "must not be set"),
    ("host-network", _cluster, lambda m: _worker(m).update(hostNetwork=True), f"{W}.hostNetwork", "no host namespaces"),
    ("host-pid", _cluster, lambda m: _worker(m).update(hostPID=True), f"{W}.hostPID", "no host namespaces"),
    ("host-ipc", _cluster, lambda m: _worker(m).update(hostIPC=True), f"{W}.hostIPC", "no host namespaces"),
    ("pod-root-uid", _cluster,
     _root_uid_on_pod,
     f"{W}.securityContext.runAsUser", "must not be 0"),
    ("unsafe-sysctl", _cluster,
     lambda m: _worker(m)["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
     f"{W}.securityContext.sysctls[0]", "'kernel.msgmax' is not a safe sysctl"),
    ("host-path-volume", _cluster, lambda m: _worker(m)["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
     f"{W}.volumes[2].hostPath", "volume kind 'hostPath' is not allowed"),
    ("worker-token", _cluster, lambda m: _worker(m).update(automountServiceAccountToken=True),
     f"{W}.automountServiceAccountToken", "must be false"),
    ("head-token-without-autoscaling", _cluster,
     lambda m: m["spec"]["headGroupSpec"]["template"]["spec"].pop("automountServiceAccountToken"),
     f"{H}.automountServiceAccountToken", "only the head of an autoscaling cluster"),
    ("image-registry", _cluster, lambda m: _worker(m)["containers"][0].update(image="evil.example/ray:2.60.0"),
     f"{WC}.image", "not from an allowed registry"),
    ("image-latest", _cluster, lambda m: _worker(m)["containers"][0].update(image="rayproject/ray:latest"),
     f"{WC}.image", "uses ':latest'"),
    ("image-untagged", _cluster, lambda m: _worker(m)["containers"][0].update(image="rayproject/ray"),
     f"{WC}.image", "has no tag"),
    ("gpu-request-not-limit", _cluster,
     lambda m: _worker(m)["containers"][0]["resources"]["requests"].update({"nvidia.com/gpu": "4"}),
     f"{WC}.resources.requests[nvidia.com/gpu]", "must equal limits (4 != 8)"),
    ("gpu-without-limit", _cluster,
     lambda m: _worker(m)["containers"][0]["resources"]["limits"].pop("nvidia.com/gpu"),
     f"{WC}.resources.limits[nvidia.com/gpu]", "must be set"),
    ("dashboard-node-port", _cluster, lambda m: m["spec"]["headGroupSpec"].update(serviceType="NodePort"),
     "spec.headGroupSpec.serviceType", "must be ClusterIP"),
    ("dashboard-ingress", _cluster, lambda m: m["spec"]["headGroupSpec"].update(enableIngress=True),
     "spec.headGroupSpec.enableIngress", "must be false"),
    ("token-auth", _cluster, lambda m: m["spec"].pop("authOptions"), "spec.authOptions.mode", "must be 'token'"),
    ("autoscaler-sidecar", lambda: _cluster(autoscaling=True),
     lambda m: m["spec"]["autoscalerOptions"]["securityContext"].pop("allowPrivilegeEscalation"),
     "spec.autoscalerOptions.securityContext.allowPrivilegeEscalation", "must be false"),
    ("init-container", _cluster, _bad_init_container, f"{W}.initContainers[0].securityContext.allowPrivilegeEscalation",
     "must be false"),
    ("job-submitter-missing", _job, lambda m: m["spec"].pop("submitterPodTemplate"), "spec.submitterPodTemplate",
     "must be set so the job submitter pod is hardened"),
    ("job-submitter-escalation", _job,
     lambda m: m["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["securityContext"].update(
         allowPrivilegeEscalation=True),
     "spec.submitterPodTemplate.spec.containers[0].securityContext.allowPrivilegeEscalation", "must be false"),
    ("job-worker", _job, lambda m: m["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"].update(
        hostNetwork=True), "spec.rayClusterSpec.workerGroupSpecs[0].template.spec.hostNetwork", "no host namespaces"),
]  # fmt: skip


def test_generated_manifests_pass() -> None:
    for manifest in (_cluster(), _cluster(autoscaling=True), _job()):
        assert validate_manifest(manifest) == []
        ensure_secure(manifest)


@pytest.mark.parametrize(("rule", "make", "mutate", "path", "message"), RULES, ids=[r[0] for r in RULES])
def test_each_rule_is_enforced(
    rule: str,
    make: Callable[[], dict[str, Any]],
    mutate: Callable[[dict[str, Any]], None],
    path: str,
    message: str,
) -> None:
    manifest = copy.deepcopy(make())
    mutate(manifest)
    violations = validate_manifest(manifest)
    assert [v.path for v in violations] == [path], f"{rule}: {[str(v) for v in violations]}"
    assert message in violations[0].message
    with pytest.raises(SecurityViolationError) as exc:
        ensure_secure(manifest)
    assert f"{path} " in str(exc.value)


def test_issue_example_message() -> None:
    manifest = _cluster()
    _wctx(manifest)["allowPrivilegeEscalation"] = True
    [violation] = validate_manifest(manifest)
    assert str(violation) == (
        "spec.workerGroupSpecs[0].template.spec.containers[0].securityContext.allowPrivilegeEscalation must be false"
    )


def test_every_violation_is_reported_not_just_the_first() -> None:
    manifest = _cluster()
    _worker(manifest).update(hostNetwork=True, hostPID=True)
    _wctx(manifest).update(privileged=True, allowPrivilegeEscalation=True)
    assert len(validate_manifest(manifest)) == 4


def test_plain_workloads_are_checked_too() -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "rayproject/ray:2.60.0"}]}}},
    }
    paths = {v.path for v in validate_manifest(deployment)}
    assert "spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation" in paths
    assert "spec.template.spec.automountServiceAccountToken" in paths


def test_dml_validate_checks_user_files(tmp_path: Path) -> None:
    runner = CliRunner()
    good = tmp_path / "good.yaml"
    good.write_text(
        yaml.safe_dump_all(
            build_cluster_manifests(ClusterSpec.build(name="ok", owner="jane"), platform_namespace="ml-platform")
        )
    )
    result = runner.invoke(app, ["validate", str(good)])
    assert result.exit_code == 0, result.output
    assert "2 object(s) checked, 0 violation(s)" in result.output

    manifest = _cluster()
    _wctx(manifest)["allowPrivilegeEscalation"] = True
    _worker(manifest)["volumes"].append({"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}})
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(manifest))
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert f"RayCluster/sec: {WC}.securityContext.allowPrivilegeEscalation must be false" in result.output
    assert f"RayCluster/sec: {W}.volumes[2].hostPath volume kind 'hostPath' is not allowed" in result.output

    result = runner.invoke(app, ["validate", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2
    assert "cannot read" in result.output
