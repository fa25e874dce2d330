"""The local backend: real Ray processes, isolated per cluster, token-protected, fully stopped."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

from discord_ml.cluster.local import LocalRayCluster
from discord_ml.cluster.processes import pid_alive, processes_using
from discord_ml.cluster.spec import ClusterSpec

pytestmark = pytest.mark.slow


def test_session_cluster_has_head_and_workers(local_cluster: LocalRayCluster) -> None:
    assert local_cluster.alive_nodes() == 3
    assert local_cluster.dashboard_url.startswith("http://127.0.0.1:")


def test_dashboard_requires_the_clusters_token(local_cluster: LocalRayCluster) -> None:
    url = local_cluster.dashboard_url + "/api/version"
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(url, timeout=5)
    assert missing.value.code == 401
    wrong = urllib.request.Request(url, headers={"Authorization": "Bearer not-the-token"})
    with pytest.raises(urllib.error.HTTPError) as forbidden:
        urllib.request.urlopen(wrong, timeout=5)
    assert forbidden.value.code == 403
    ok = urllib.request.Request(url, headers=local_cluster.auth_headers())
    with urllib.request.urlopen(ok, timeout=5) as response:
        assert response.status == 200


def test_two_clusters_coexist_and_stop_independently() -> None:
    a = LocalRayCluster(ClusterSpec.build(name="iso-a", owner="pytest", workers=0, head_memory="1Gi"))
    b = LocalRayCluster(ClusterSpec.build(name="iso-b", owner="pytest", workers=0, head_memory="1Gi"))
    with a, b:
        assert a.gcs_port != b.gcs_port and a.dashboard_port != b.dashboard_port
        assert a.token != b.token
        assert processes_using(str(a.temp_dir)) and processes_using(str(b.temp_dir))
        a.stop()
        assert processes_using(str(a.temp_dir)) == []
        assert not a.dir.exists()
        # B is untouched: its processes are all still there, and its dashboard still reports its node
        # (polled: on a loaded 2-core machine the state API can take a few seconds to answer).
        assert all(pid_alive(node.pid) for node in b.nodes), "stopping one cluster must not touch the other"
        deadline = time.monotonic() + 30
        while b.alive_nodes() != 1 and time.monotonic() < deadline:
            time.sleep(1)
        assert b.alive_nodes() == 1
    assert processes_using(str(b.temp_dir)) == []


def test_a_worker_that_exits_during_start_up_gets_one_more_try(monkeypatch: pytest.MonkeyPatch) -> None:
    real_args = LocalRayCluster._worker_args
    calls: list[int] = []

    def first_fails(self: LocalRayCluster) -> list[str]:
        calls.append(1)
        return ["--no-such-option"] if len(calls) == 1 else real_args(self)  # `ray start` exits at once

    monkeypatch.setattr(LocalRayCluster, "_worker_args", first_fails)
    spec = ClusterSpec.build(name="retry-worker", owner="pytest", workers=1, head_memory="1Gi")
    with LocalRayCluster(spec) as cluster:
        assert len(calls) == 2
        assert [n.role for n in cluster.nodes] == ["head", "worker-0"]
        assert cluster.alive_nodes() == 2
    assert processes_using(str(cluster.temp_dir)) == []
