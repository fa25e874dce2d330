"""LocalRayProvider through the ClusterProvider interface, against real local Ray processes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from discord_ml.cluster.local.processes import group_alive, processes_using
from discord_ml.cluster.local.provider import LocalRayProvider
from discord_ml.cluster.provider import (
    ClusterExistsError,
    ClusterNotFoundError,
    ClusterNotReadyError,
    ClusterStatus,
)
from discord_ml.cluster.spec import ClusterSpec

pytestmark = pytest.mark.integration


def test_a_new_provider_sees_the_cluster_and_deletes_every_node(tmp_path: Path) -> None:
    """What the contract suite cannot see: the registry outlives the provider object (another process,
    a restart), and a worker's `ray start` goes with its cluster."""
    provider = LocalRayProvider(tmp_path)
    spec = ClusterSpec.build(name="prov-a", owner="alice", team="ads", purpose="train", workers=1, head_memory="1Gi")
    provider.create(spec)
    again = LocalRayProvider(tmp_path)
    try:
        assert [c.name for c in again.list({"discord-ml.io/owner": "alice"})] == ["prov-a"]
        assert again.wait_ready("prov-a", timeout=30).status == ClusterStatus.READY
        connection = again.connect("prov-a")
        with pytest.raises(ClusterExistsError, match="'prov-a' already exists in namespace 'ml'"):
            again.create(spec)
    finally:
        again.delete("prov-a")
    assert provider.list() == []
    assert processes_using("prov-a") == []
    assert processes_using(f"--address={connection.address}") == [], "a worker's ray start survived"


def test_dead_cluster_is_reported_and_still_deletable(tmp_path: Path) -> None:
    provider = LocalRayProvider(tmp_path)
    provider.create(ClusterSpec.build(name="prov-dead", owner="alice", workers=0, head_memory="1Gi"))
    try:
        [head] = [n for n in provider.registry.get("ml", "prov-dead").nodes if n["role"] == "head"]  # type: ignore[union-attr]
        os.killpg(int(head["pid"]), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while group_alive(int(head["pid"])) and time.monotonic() < deadline:
            time.sleep(0.1)
        info = provider.get("prov-dead")
        assert info.status == ClusterStatus.DEAD and "head process is gone" in info.reason
        with pytest.raises(ClusterNotReadyError, match="prov-dead"):
            provider.wait_ready("prov-dead", timeout=5)
    finally:
        provider.delete("prov-dead")
    assert processes_using("prov-dead") == []


def test_missing_cluster_error_names_what_exists(tmp_path: Path) -> None:
    with pytest.raises(ClusterNotFoundError, match=r"no local cluster 'nope' in namespace 'ml' \(clusters there: none"):
        LocalRayProvider(tmp_path).get("nope")
