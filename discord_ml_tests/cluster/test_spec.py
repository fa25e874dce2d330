"""ClusterSpec: defaults resolved from the pool, and every bad input rejected with field, value and fix."""

from __future__ import annotations

from typing import Any

import pytest

from discord_ml.cluster.names import DNS1035_LABEL, MAX_CLUSTER_NAME
from discord_ml.cluster.spec import STORED, ClusterSpec, SpecError


def test_shorthand_resolves_pool_gpus_and_node_share() -> None:
    spec = ClusterSpec.build(owner="jane", gpu_pool="h100:4", workers=2)
    assert (spec.gpu_pool, spec.gpus_per_worker) == ("h100", 4)
    assert (spec.worker_cpu, spec.worker_memory) == ("100", "900Gi")  # half a node for half its GPUs
    assert spec.image == "rayproject/ray:2.60.0-py311"
    assert spec.namespace == "ml"
    assert not spec.autoscaling


def test_gpu_pool_defaults_to_a_whole_node() -> None:
    spec = ClusterSpec.build(owner="jane", gpu_pool="a100")
    assert spec.gpus_per_worker == 8
    assert spec.worker_cpu == "94"


def test_generated_names_are_valid_and_distinct() -> None:
    names = {ClusterSpec.build(owner="Jane.Doe_corp").cluster_name for _ in range(5)}
    assert len(names) == 5
    for name in names:
        assert DNS1035_LABEL.match(name) and len(name) <= MAX_CLUSTER_NAME
        assert name.startswith("jane-doe-corp-adhoc-")


def test_default_owner_is_the_current_user_as_a_label_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("getpass.getuser", lambda: "jane.doe@corp")
    assert ClusterSpec.build().owner == "jane.doe-corp"


def test_autoscaling_bounds() -> None:
    spec = ClusterSpec.build(owner="jane", gpu_pool="t4", min_workers=1, max_workers=6)
    assert spec.autoscaling and spec.workers == 1


def test_ttl_is_normalized() -> None:
    assert ClusterSpec.build(owner="jane", ttl="90m").ttl == "1h30m"
    assert ClusterSpec.build(owner="jane", ttl=3600).ttl_seconds == 3600


BAD: list[tuple[dict[str, Any], list[str]]] = [
    ({"gpu_pool": "h200"}, ["gpu_pool 'h200' is not defined", "known pools: cpu, t4, l4, a100, h100"]),
    ({"gpu_pool": "h100", "worker_memory": "5000Gi"},
     ["worker_memory '5000Gi' does not fit one h100 node (1800Gi allocatable)", "ask for at most 1800Gi"]),
    ({"gpu_pool": "t4", "worker_cpu": "64"}, ["worker_cpu '64' does not fit one t4 node (44 allocatable)"]),
    ({"worker_memory": "12GB"}, ["worker_memory: '12GB' is not a Kubernetes quantity", "'64Gi'"]),
    ({"worker_memory": "100Mi"}, ["worker_memory '100Mi' is below Ray's minimum", "at least 512Mi"]),
    ({"gpu_pool": "h100", "gpus_per_worker": 9}, ["gpus_per_worker 9 does not fit one h100 node (8 GPUs)"]),
    ({"gpu_pool": "h100:4", "gpus_per_worker": 2}, ["asks for 4 GPUs but gpus_per_worker is 2", "give the count once"]),
    ({"gpu_pool": "h100", "gpus_per_worker": 0}, ["gpus_per_worker 0 in GPU pool 'h100'", "use the 'cpu' pool"]),
    ({"gpu_pool": "cpu", "gpus_per_worker": 1}, ["pool 'cpu', which has no GPUs", "pick a GPU pool"]),
    ({"gpu_pool": "h100", "workers": 9}, ["workers 9 exceeds the h100 pool's limit of 8 workers", "use at most 8"]),
    ({"min_workers": 1}, ["min_workers and max_workers go together"]),
    ({"min_workers": 4, "max_workers": 2}, ["min_workers 4 is greater than max_workers 2"]),
    ({"min_workers": 1, "max_workers": 3, "workers": 5}, ["workers 5 is outside min_workers..max_workers (1..3)"]),
    ({"gpu_pool": "a100", "min_workers": 1, "max_workers": 20}, ["max_workers 20 exceeds the a100 pool's limit of 8"]),
    ({"name": "Ranking_Train"}, ["name 'Ranking_Train' is not a valid cluster name", "e.g. 'ranking-train'"]),
    ({"name": "1abc"}, ["name '1abc' is not a valid cluster name"]),
    ({"name": "a" * 48}, ["is 48 characters; use at most 47"]),
    ({"namespace": "Team A"}, ["namespace 'Team A' is not a valid namespace"]),
    ({"owner": "jane doe"}, ["owner 'jane doe' cannot be a Kubernetes label value"]),
    ({"ttl": "5m"}, ["ttl '5m' is outside the allowed range; use between 10m and 7d"]),
    ({"ttl": "30d"}, ["ttl '30d' is outside the allowed range"]),
    ({"ttl": "soon"}, ["ttl: 'soon' is not a duration"]),
    ({"image": "evil.example/ray:2.60.0"}, ["image 'evil.example/ray:2.60.0' is not from an allowed registry"]),
    ({"image": "rayproject/ray:latest"}, ["uses ':latest'; pin a version tag or digest"]),
    ({"image": "rayproject/ray"}, ["has no tag (that means ':latest')"]),
    ({"labels": {"discord-ml.io/owner": "x"}}, ["labels key 'discord-ml.io/owner' is reserved for the platform"]),
    ({"labels": {"cost-center": "a b"}}, ["labels[cost-center] 'a b' cannot be a Kubernetes label value"]),
    ({"annotations": {"bad key": "x"}}, ["annotations key 'bad key' is not a valid Kubernetes key"]),
    ({"env": {"RAY_AUTH_TOKEN": "x"}}, ["env 'RAY_AUTH_TOKEN' is managed by the platform"]),
    ({"env": {"1X": "y"}}, ["env name '1X' is not a valid variable name"]),
    ({"service_account": "Ray_SA"}, ["service_account 'Ray_SA' is not a valid name"]),
    ({"ray_version": "latest"}, ["ray_version 'latest' must look like '2.60.0'"]),
    ({"purpose": "fun"}, ["purpose", "'fun'"]),
    ({"wokers": 2}, ["unknown field 'wokers'"]),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "fragments"), BAD, ids=[str(sorted(f)) + str(i) for i, (f, _) in enumerate(BAD)])
def test_bad_input_names_field_value_and_fix(fields: dict[str, Any], fragments: list[str]) -> None:
    with pytest.raises(SpecError) as exc:
        ClusterSpec.build(**{"owner": "jane", **fields})
    assert isinstance(exc.value, ValueError)
    for fragment in fragments:
        assert fragment in str(exc.value)


def test_a_stored_spec_survives_a_later_image_policy_change(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = ClusterSpec.build(name="old", owner="alice", image="docker.io/rayproject/ray:2.60.0-py311")
    stored = spec.model_dump(mode="json")
    monkeypatch.setenv("DML_ALLOWED_REGISTRIES", "ghcr.io/discord-ml/")
    try:
        with pytest.raises(ValueError, match="image"):
            ClusterSpec.model_validate(stored)  # a new cluster with that image is refused...
        again = ClusterSpec.model_validate(stored, context={STORED: True})  # ...an existing one still lists
        assert again.image == spec.image
    finally:
        monkeypatch.delenv("DML_ALLOWED_REGISTRIES")
