"""The local backend: real Ray processes, isolated per cluster, token-protected, fully stopped."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from discord_ml.cluster.local.nodes import LocalClusterError, LocalRayCluster
from discord_ml.cluster.local.processes import pid_alive, processes_using, ray_executable
from discord_ml.cluster.spec import ClusterSpec

pytestmark = pytest.mark.integration


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


# What a flaky `ray` does instead of starting a node.
_EXIT = 'echo "injected start-up failure" >&2; exit 1'
_HANG = "exec sleep 3600"
_KILL_THE_HEAD = (
    'for a in "$@"; do case $a in --address=*) gcs=${a##*:};; esac; done; pkill -KILL -f -- "--port=$gcs( |$)"; exit 1'
)


def _flaky_ray(tmp_path: Path, *, role_flag: str, fails: int, fault: str = _EXIT) -> tuple[str, Path]:
    """A `ray` that runs `fault` instead of its first `fails` starts of nodes whose arguments
    contain `role_flag`, then runs the real one; and the file counting those starts."""
    real, count = ray_executable(), tmp_path / "starts"
    wrapper = tmp_path / "ray"
    wrapper.write_text(
        "#!/bin/bash\n"
        f'if [[ " $* " == *" {role_flag}"* ]]; then\n'
        f"  n=$(($(cat {count} 2>/dev/null || echo 0) + 1)); echo $n > {count}\n"
        f"  if [ $n -le {fails} ]; then {fault}; fi\n"
        "fi\n"
        f'exec {real} "$@"\n'
    )
    wrapper.chmod(0o755)
    return str(wrapper), count


def test_a_worker_that_exits_during_start_up_is_started_again(tmp_path: Path) -> None:
    ray, starts = _flaky_ray(tmp_path, role_flag="--address=", fails=1)
    spec = ClusterSpec.build(name="retry-worker", owner="pytest", workers=1, head_memory="1Gi")
    with LocalRayCluster(spec, ray=ray) as cluster:
        assert starts.read_text().strip() == "2"
        assert [n.role for n in cluster.nodes] == ["head", "worker-0"]
        assert cluster.alive_nodes() == 2
    assert processes_using(str(cluster.temp_dir)) == []


def test_a_head_that_hangs_is_restarted_with_fresh_ports(tmp_path: Path) -> None:
    ray, starts = _flaky_ray(tmp_path, role_flag="--head", fails=1, fault=_HANG)
    launched: list[tuple[int, int]] = []  # (gcs port, pid) of each head launched
    spec = ClusterSpec.build(name="retry-head", owner="pytest", workers=0, head_memory="1Gi")
    cluster = LocalRayCluster(spec, ray=ray)
    # The hung attempt is given up after 45 s: enough for a real head even on a busy 2-core machine.
    cluster.start(node_timeout=45, attempts=3, on_launch=lambda c: launched.append((c.gcs_port, c.nodes[-1].pid)))
    try:
        assert starts.read_text().strip() == "2"
        (hung_port, hung_pid), (port, pid) = launched
        assert hung_port != port, "the second head must get fresh ports"
        assert not pid_alive(hung_pid), "the hung attempt must be killed"
        assert [n.pid for n in cluster.nodes] == [pid] and cluster.alive_nodes() == 1
    finally:
        cluster.stop()
    assert processes_using(str(cluster.temp_dir)) == []


def test_a_head_that_exits_while_a_worker_starts_brings_up_a_whole_new_cluster(tmp_path: Path) -> None:
    # As when another process takes the port of the head's late-starting Ray Client server.
    ray, starts = _flaky_ray(tmp_path, role_flag="--address=", fails=1, fault=_KILL_THE_HEAD)
    heads: list[tuple[int, int]] = []  # (gcs port, pid) of each head launched
    spec = ClusterSpec.build(name="retry-all", owner="pytest", workers=1, head_memory="1Gi")
    cluster = LocalRayCluster(spec, ray=ray)

    def on_launch(c: LocalRayCluster) -> None:
        if c.nodes[-1].role == "head":
            heads.append((c.gcs_port, c.nodes[-1].pid))

    cluster.start(attempts=3, on_launch=on_launch)
    try:
        assert starts.read_text().strip() == "2"
        (first_port, first_pid), (port, pid) = heads
        assert first_port != port and not pid_alive(first_pid)
        assert [n.role for n in cluster.nodes] == ["head", "worker-0"] and cluster.nodes[0].pid == pid
        assert cluster.alive_nodes() == 2
    finally:
        cluster.stop()
    assert processes_using(str(cluster.temp_dir)) == []


def test_a_node_that_never_starts_gives_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    ray, _ = _flaky_ray(tmp_path, role_flag="--head", fails=99)
    spec = ClusterSpec.build(name="never-up", owner="pytest", workers=0, head_memory="1Gi")
    cluster = LocalRayCluster(spec, ray=ray)
    with pytest.raises(LocalClusterError) as failed:
        cluster.start(node_timeout=30, attempts=2)
    message = str(failed.value)
    assert "the head did not start after 2 attempt(s)" in message
    assert "load average" in message and "DML_LOCAL_START_TIMEOUT_S (now 30)" in message
    assert "injected start-up failure" in message  # the log tail of the last attempt
    assert not cluster.dir.exists() and processes_using(str(cluster.temp_dir)) == []
