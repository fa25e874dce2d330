"""The ClusterProvider contract, held by both backends: the local one against real local Ray processes,
KubeRay through the real `kubernetes` client against the API emulator (whose operator starts a real
local Ray cluster per RayCluster). What only one backend does is tested beside it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from discord_ml.cluster.archive import LogStore
from discord_ml.cluster.kuberay.provider import KubeRayProvider
from discord_ml.cluster.local.processes import cluster_dir_prefix, processes_using
from discord_ml.cluster.local.provider import LocalRayProvider
from discord_ml.cluster.provider import ClusterExistsError, ClusterNotFoundError, ClusterProvider, ClusterStatus
from discord_ml.cluster.spec import ClusterSpec
from discord_ml.jobs.client import RayJobs
from discord_ml_tests.support.k8s_emulator import serve
from discord_ml_tests.support.schemas import require_crds

pytestmark = pytest.mark.integration


@pytest.fixture(params=["local", "kuberay"])
def provider(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ClusterProvider]:
    if request.param == "local":
        yield LocalRayProvider(tmp_path)
        return
    require_crds()
    with serve(tmp_path) as (_, kubeconfig):
        yield KubeRayProvider(kubeconfig=str(kubeconfig), dashboard_access="service-ip", backoff_s=0.05)


def test_create_list_connect_run_delete_and_nothing_left(provider: ClusterProvider) -> None:
    assert isinstance(provider, ClusterProvider)
    name = f"pc-{provider.backend}"
    spec = ClusterSpec.build(name=name, owner="alice", team="ads", purpose="train", workers=1, head_memory="1Gi")
    provider.create(spec)
    try:
        progress: list[str] = []
        info = provider.wait_ready(name, timeout=180, on_progress=lambda i: progress.append(i.status))
        assert (info.status, info.workers_ready, info.workers_desired) == (ClusterStatus.READY, 1, 1)
        [listed] = provider.list({"discord-ml.io/owner": "alice"})
        assert (listed.name, listed.owner, listed.team, listed.purpose, listed.gpu_pool, listed.backend) == (
            name, "alice", "ads", "train", "cpu", provider.backend)  # fmt: skip
        assert provider.list({"discord-ml.io/owner": "bob"}) == []
        connection = provider.connect(name)
        lines: list[str] = []
        outcome = RayJobs.of(connection).submit_and_follow(entrypoint=f"python -c \"print('hello from {name}')\"",
                                                           on_line=lines.append)  # fmt: skip
        assert outcome.status == "SUCCEEDED" and f"hello from {name}" in lines
        with pytest.raises(ClusterExistsError, match=f"'{name}' already exists in namespace 'ml'"):
            provider.create(spec)
    finally:
        provider.delete(name)
    assert provider.list() == []
    assert processes_using(str(cluster_dir_prefix(name))) == []
    with pytest.raises(ClusterNotFoundError, match=f"'{name}' in namespace 'ml'"):
        provider.get(name)
    provider.delete(name)  # deleting twice is fine
    # The job's log outlived the cluster (archived before it was deleted).
    found = LogStore().find_job(outcome.job_id)
    assert found is not None and found[1].status == "SUCCEEDED"
    assert f"hello from {name}" in LogStore().log(found[0].key, outcome.job_id)
