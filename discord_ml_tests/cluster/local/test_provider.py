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
    ClusterProvider,
    ClusterStatus,
)
from discord_ml.cluster.spec import ClusterSpec
from discord_ml.jobs.client import RayJobs

pytestmark = pytest.mark.slow


def test_lifecycle_survives_a_new_provider_and_leaves_nothing(tmp_path: Path) -> None:
    provider = LocalRayProvider(tmp_path)
    assert isinstance(provider, ClusterProvider)
    spec = ClusterSpec.build(name="prov-a", owner="alice", team="ads", purpose="train", workers=1, head_memory="1Gi")
    info = provider.create(spec)
    try:
        assert (info.status, info.workers_ready, info.workers_desired) == (ClusterStatus.READY, 1, 1)
        # A fresh provider (another process, a restart) sees the same cluster from the registry.
        again = LocalRayProvider(tmp_path)
        [listed] = again.list({"discord-ml.io/owner": "alice"})
        assert (listed.name, listed.owner, listed.team, listed.gpu_pool, listed.backend) == (
            "prov-a", "alice", "ads", "cpu", "local")  # fmt: skip
        assert again.list({"discord-ml.io/owner": "bob"}) == []
        assert again.wait_ready("prov-a", timeout=30).status == ClusterStatus.READY
        connection = again.connect("prov-a")
        lines: list[str] = []
        outcome = RayJobs.of(connection).submit_and_follow(entrypoint="python -c \"print('hi from prov-a')\"",
                                                           on_line=lines.append)  # fmt: skip
        assert outcome.status == "SUCCEEDED" and "hi from prov-a" in lines
        with pytest.raises(ClusterExistsError, match="'prov-a' already exists in namespace 'ml'"):
            again.create(spec)
    finally:
        provider.delete("prov-a")
    assert provider.list() == []
    assert processes_using("prov-a") == []
    assert processes_using(f"--address={connection.address}") == [], "a worker's ray start survived"
    provider.delete("prov-a")  # deleting twice is fine


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
