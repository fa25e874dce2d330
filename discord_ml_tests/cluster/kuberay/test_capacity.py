"""Pre-flight capacity: quota headroom and node capacity, refused at once with what is short (exit 2,
nothing created) through the CLI and the Dagster resource on the emulator; `--allow-pending` creates anyway."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import dagster as dg
import pytest
from typer.testing import CliRunner

from discord_ml.cli.main import app
from discord_ml.cluster.kuberay.capacity import node_shortfalls, pod_groups, quota_shortfalls, total
from discord_ml.cluster.kuberay.manifests import build_ray_cluster
from discord_ml.cluster.spec import ClusterSpec
from discord_ml.definitions import defs
from discord_ml_tests.support.k8s_emulator import KubeEmulator

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def _quota(name: str, hard: dict[str, str], used: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name, "namespace": "ml"},
            "spec": {"hard": hard}, "status": {"hard": hard, "used": used}}  # fmt: skip


def _node(name: str, pool: str, *, cpu: str, memory: str, gpus: int = 0, taints: bool = False) -> dict[str, Any]:
    allocatable = {"cpu": cpu, "memory": memory, "pods": "110", **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"node.discord-ml.io/pool": pool}},
            "spec": {"taints": [GPU_TAINT] if taints else []}, "status": {"allocatable": allocatable}}  # fmt: skip


def test_requests_sum_over_the_head_and_workers_at_their_starting_size() -> None:
    groups = pod_groups(build_ray_cluster(ClusterSpec.build(name="big", owner="a", gpu_pool="h100:8", workers=2)))
    assert [(g.name, g.count, g.requests.get("nvidia.com/gpu")) for g in groups] == [
        ("head", 1, None), ("h100-workers", 2, Decimal(8))]  # fmt: skip
    summed = total(groups)
    assert (summed["pods"], summed["nvidia.com/gpu"]) == (3, 16)


def test_quota_and_node_shortfalls_say_what_is_short_and_by_how_much() -> None:
    spec = ClusterSpec.build(name="big", owner="a", gpu_pool="h100:8", workers=2)
    groups = pod_groups(build_ray_cluster(spec))
    quota = _quota("ml-compute", {"requests.nvidia.com/gpu": "64", "requests.cpu": "512", "pods": "400"},
                   {"requests.nvidia.com/gpu": "56", "requests.cpu": "10", "pods": "7"})  # fmt: skip
    assert quota_shortfalls(total(groups), [quota], "ml") == [
        "needs 16 nvidia.com/gpu, quota ml-compute leaves 8 in ml"
    ]
    # One H100 node admits the workers (it tolerates the taint); the untainted CPU node is not theirs.
    nodes = [_node("gpu-1", "h100", cpu="200", memory="1800Gi", gpus=8, taints=True),
             _node("cpu-1", "cpu", cpu="16", memory="64Gi")]  # fmt: skip
    [short] = node_shortfalls(groups, nodes)
    assert short.startswith("h100-workers: needs 2 pod(s) of 200 cpu, 1800Gi memory, 8 nvidia.com/gpu")
    assert "the 1 node(s) it may use hold 1" in short
    assert (
        node_shortfalls(groups, [*nodes, _node("gpu-2", "h100", cpu="200", memory="1800Gi", gpus=8, taints=True)]) == []
    )
    # A GPU node without the toleration's taint match still admits; a pool with no node yet is the autoscaler's.
    assert node_shortfalls(groups, [_node("cpu-1", "cpu", cpu="16", memory="64Gi")]) == []


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("DML_OWNER", "alice")
    return CliRunner()


def test_cli_refuses_a_cluster_the_quota_cannot_hold_and_creates_nothing(
    runner: CliRunner, kube_status_api: KubeEmulator
) -> None:
    kube_status_api.put("resourcequotas", _quota("ml-compute", {"requests.nvidia.com/gpu": "64"},
                                             {"requests.nvidia.com/gpu": "56"}))  # fmt: skip
    args = ["cluster", "create", "big", "--gpus", "h100:8", "--workers", "2", "-b", "kuberay"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2
    assert "needs 16 nvidia.com/gpu, quota ml-compute leaves 8 in ml" in refused.output
    assert "--allow-pending" in refused.output
    dry = runner.invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 2 and "quota ml-compute leaves 8" in dry.output
    assert [r for r in kube_status_api.requests if r[0] != "GET"] == []  # nothing created
    kube_status_api.modes["big"] = "pending"  # the emulator's operator leaves it unschedulable, as it would be
    allowed = runner.invoke(app, [*args, "--allow-pending", "--no-wait"])
    assert allowed.exit_code == 0, allowed.output
    assert "warning: cluster 'big' cannot fit now" in allowed.output and kube_status_api.ray_clusters() == ["big"]
    runner.invoke(app, ["cluster", "delete", "big", "--yes", "-b", "kuberay"])


def test_cli_refuses_workers_no_node_can_hold(runner: CliRunner, kube_status_api: KubeEmulator) -> None:
    kube_status_api.put("nodes", _node("cpu-1", "cpu", cpu="4", memory="16Gi"))
    refused = runner.invoke(app, ["cluster", "create", "wide", "--pool", "cpu", "--workers", "2", "--cpu", "8",
                                  "-b", "kuberay"])  # fmt: skip
    assert refused.exit_code == 2
    assert "cpu-workers: needs 2 pod(s) of 8 cpu, 2Gi memory" in refused.output
    assert "hold 0 (largest: 4 cpu, 16Gi memory)" in refused.output
    assert [r for r in kube_status_api.requests if r[0] != "GET"] == []


def test_a_run_whose_cluster_cannot_fit_fails_at_once_naming_the_shortfall(
    dagster_instance: dg.DagsterInstance, kube_status_api: KubeEmulator
) -> None:
    kube_status_api.put("resourcequotas", _quota("ml-compute", {"requests.cpu": "4"}, {"requests.cpu": "3"}))
    config = {"resources": {"ray_cluster": {"config": {"backend": "kuberay", "workers": 1}}}}
    result = defs.resolve_job_def("platform_check").execute_in_process(
        instance=dagster_instance, run_config=config, raise_on_error=False
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    message = str(failure.step_failure_data.error)
    assert "cannot fit now" in message and "cpu, quota ml-compute leaves 1 in ml" in message
    assert [r for r in kube_status_api.requests if r[0] != "GET"] == []  # no cluster, no Secret
