"""Snapshots of representative manifests, committed so reviewers can read exactly what we generate.

Regenerate after an intended change with
`SNAPSHOT_UPDATE=1 scripts/test discord_ml_tests/cluster/kuberay/test_snapshots.py` and review the diff.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from discord_ml.cluster.kuberay.manifests import build_cluster_manifests, build_network_policy, build_ray_job
from discord_ml.cluster.kuberay.notebook_manifests import (
    build_lab_secret,
    build_notebook_network_policy,
    build_notebook_pod,
)
from discord_ml.cluster.spec import ClusterSpec

SNAPSHOTS = Path(__file__).parent / "snapshots"


def _h100_training_cluster() -> list[dict[str, Any]]:
    spec = ClusterSpec.build(
        name="ranking-train",
        owner="jane",
        team="ads",
        purpose="train",
        gpu_pool="h100:8",
        workers=2,
        ttl="12h",
        dagster_run_id="5b0d7c62-0b1e-4f8c-9a57-3c1f0a2b9e11",
        dagster_job="daily_pipeline",
    )
    return build_cluster_manifests(spec, platform_namespace="ml-platform")


def _cpu_autoscaling_ray_job() -> list[dict[str, Any]]:
    spec = ClusterSpec.build(
        name="quests-eval",
        owner="sam",
        team="quests",
        purpose="eval",
        gpu_pool="cpu",
        min_workers=0,
        max_workers=4,
        worker_cpu="4",
        worker_memory="8Gi",
        ttl="2h",
        service_account="ray-quests",
    )
    job = build_ray_job(
        spec, ["python", "-m", "discord_ml.quests.tasks.evaluate"], runtime_env={"env_vars": {"DML_STAGE": "eval"}}
    )
    return [job, build_network_policy(spec, platform_namespace="ml-platform")]


def _notebook_pod() -> list[dict[str, Any]]:
    spec = ClusterSpec.build(name="ranking-train", owner="jane", team="ads")
    pod = build_notebook_pod(spec.cluster_name, "ml", "jane", image=str(spec.image), cluster_uid="0b6c0f4e-uid")
    secret = build_lab_secret(pod["metadata"]["name"], "ml", pod["metadata"]["labels"], cluster=spec.cluster_name,
                              cluster_uid="0b6c0f4e-uid", token="<generated>")  # fmt: skip
    return [pod, secret, build_notebook_network_policy(pod, platform_namespace="ml-platform")]


CASES: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "h100-training-cluster": _h100_training_cluster,
    "cpu-autoscaling-rayjob": _cpu_autoscaling_ray_job,
    "notebook-pod": _notebook_pod,
}


@pytest.mark.parametrize("name", CASES)
def test_manifest_snapshot(name: str) -> None:
    rendered = yaml.safe_dump_all(CASES[name](), sort_keys=False)
    path = SNAPSHOTS / f"{name}.yaml"
    if os.environ.get("SNAPSHOT_UPDATE") == "1":
        path.write_text(rendered)
    assert path.exists(), f"{path} missing; run with SNAPSHOT_UPDATE=1 to create it"
    assert rendered == path.read_text(), f"{name} changed; review and regenerate with SNAPSHOT_UPDATE=1"
