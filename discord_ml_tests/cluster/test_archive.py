"""Job logs that outlive their cluster: the log store, archiving bounded and never blocking a
deletion, and a real local cluster's jobs read back through `dml job logs` and X-Ray after it is gone."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from discord_ml.cli.main import app
from discord_ml.cluster.archive import LogStore, archive_before_delete
from discord_ml.cluster.lifecycle import no_run_statuses
from discord_ml.cluster.local.provider import LocalRayProvider
from discord_ml.cluster.provider import ClusterConnection, ClusterInfo, ClusterNotFoundError, ClusterStatus
from discord_ml.cluster.spec import ClusterSpec
from discord_ml.jobs.client import RayJobs
from discord_ml.jobs.records import JobInfo, parse_job
from discord_ml.xray.app import create_app
from discord_ml.xray.config import XRayConfig

ALICE = {"X-Forwarded-User": "alice"}


def _info(name: str = "gone", run_id: str | None = "run-1") -> ClusterInfo:
    labels = {"dagster.io/run-id": run_id} if run_id else {}
    return ClusterInfo(name=name, namespace="ml", backend="local", owner="alice", team="ads", purpose="train",
                       gpu_pool="cpu", gpu_type="none", gpus_per_worker=0, workers_ready=1, workers_desired=1,
                       status=ClusterStatus.READY, reason="", created=datetime(2026, 11, 1, tzinfo=UTC),
                       dashboard_url="http://127.0.0.1:1", labels=labels)  # fmt: skip


def _ray_job(submission: str, status: str = "SUCCEEDED") -> JobInfo:
    """A job as the Jobs API lists it."""
    return parse_job({"submission_id": submission, "job_id": "02000000", "status": status, "entrypoint": "python x.py",
                      "message": "", "start_time": 1_790_000_000_000, "end_time": 1_790_000_060_000, "metadata": {}},
                     datetime.now(UTC))  # fmt: skip


def test_store_round_trip_window_and_what_is_visible(tmp_path: Path) -> None:
    store = LogStore(str(tmp_path))
    now = datetime.now(UTC)
    old = store.save(_info("old"), [_ray_job("old_1")], {"old_1": "a\n"}, deleted=now - timedelta(days=9))
    key = store.save(_info(), [_ray_job("gone_1"), _ray_job("gone_2", "FAILED")], {"gone_1": "line 1\nline 2\n"},
                     problem="1 of 2 job logs saved: TimeoutError", deleted=now)  # fmt: skip
    assert [a.key for a in store.clusters(since=timedelta(days=7))] == [key]
    assert [a.key for a in store.clusters()] == [key, old]  # newest first
    archive, job = store.find_job("gone_1") or (None, None)
    assert archive is not None and job is not None
    assert (archive.name, archive.cluster["owner"], job.status, job.run_id, job.log_saved) == (
        "gone", "alice", "SUCCEEDED", "run-1", True)  # fmt: skip
    assert job.start == datetime.fromtimestamp(1_790_000_000, UTC)
    assert store.log(key, "gone_1") == "line 1\nline 2\n"
    failed = store.find_job("gone_2")
    assert failed is not None and not failed[1].log_saved and failed[0].problem
    with pytest.raises(LookupError):
        store.log(key, "gone_2")
    assert store.find_job("never") is None
    # A record is written last: logs without one (a save cut short) are not an archive.
    half = store.store.path("clusters", "20261101T000000000000Z_local_ml_half", "logs", "x.log")
    store.store.write_bytes_atomic(half, b"partial")
    assert "half" not in [a.name for a in store.clusters()]


class _Unreachable:
    """A cluster whose dashboard nothing answers (a dead head)."""

    def get(self, name: str, *, namespace: str | None = None) -> ClusterInfo:
        return _info(name)

    def connect(self, name: str, *, namespace: str | None = None) -> ClusterConnection:
        return ClusterConnection("http://127.0.0.1:1", {"Authorization": "Bearer t"})


def test_archiving_is_bounded_records_what_failed_and_never_raises(tmp_path: Path) -> None:
    store = LogStore(str(tmp_path / "logs"))
    key = archive_before_delete(_Unreachable(), "dead", "ml", store=store, timeout=5)
    assert key is not None
    archive = store.cluster(key)
    assert archive.jobs == [] and archive.problem and "ConnectError" in archive.problem
    # An unwritable store (its root is a file): the deletion goes on, within the bound.
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    started = time.monotonic()
    assert archive_before_delete(_Unreachable(), "dead", "ml", store=LogStore(str(blocked)), timeout=5) is None
    assert time.monotonic() - started < 10


@pytest.mark.integration
def test_a_deleted_clusters_job_logs_read_back_through_the_cli_and_xray(tmp_path: Path) -> None:
    provider = LocalRayProvider()
    provider.create(ClusterSpec.build(name="archived-run", owner="alice", workers=0, head_memory="1Gi"))
    try:
        provider.wait_ready("archived-run", timeout=180)
        connection = provider.connect("archived-run")
        script = "import sys\nfor i in range(300): print(f'line {i}')\nsys.exit(3)\n"
        (tmp_path / "job.py").write_text(script)
        outcome = RayJobs.of(connection).submit_and_follow(
            entrypoint="python job.py", runtime_env={"working_dir": str(tmp_path)}, on_line=lambda _: None,
            submission_id="archived-run_0a1b2c3d", raise_on_failure=False)  # fmt: skip
        assert outcome.status == "FAILED"
    finally:
        runner = CliRunner()
        deleted = runner.invoke(app, ["cluster", "delete", "archived-run", "--yes"], env={"DML_OWNER": "alice"})
        assert deleted.exit_code == 0, deleted.output
    with pytest.raises(ClusterNotFoundError):
        provider.get("archived-run")
    logs = runner.invoke(app, ["job", "logs", "archived-run_0a1b2c3d"])
    assert logs.exit_code == 0, logs.output
    assert [f"line {i}" for i in range(300)] == [x for x in logs.stdout.splitlines() if x.startswith("line ")]
    assert "archived: cluster archived-run was deleted at" in logs.stderr
    status = runner.invoke(app, ["job", "status", "archived-run_0a1b2c3d", "-o", "json"])
    assert json.loads(status.stdout)["status"] == "FAILED"

    config = XRayConfig(auth="header", backends=("local",))
    with TestClient(create_app(config, providers={"local": provider}, run_statuses=no_run_statuses,
                               notebooks_root=tmp_path)) as client:  # fmt: skip
        [archived] = [c for c in client.get("/api/archive?days=1", headers=ALICE).json()["clusters"]
                      if c["cluster"]["name"] == "archived-run"]  # fmt: skip
        assert [(j["job_id"], j["status"]) for j in archived["jobs"]] == [("archived-run_0a1b2c3d", "FAILED")]
        # The live job page of a deleted cluster leads to its archive.
        page = client.get("/clusters/local/ml/archived-run/jobs/archived-run_0a1b2c3d", headers=ALICE)
        assert page.status_code == 200 and f"/archive/{archived['key']}/jobs/" in str(page.url)
        assert 'id="archived"' in page.text and "line 299" in page.text
        download = client.get(f"/api/archive/{archived['key']}/jobs/archived-run_0a1b2c3d/logs", headers=ALICE)
        assert [x for x in download.text.splitlines() if x.startswith("line ")] == [f"line {i}" for i in range(300)]
        assert "archived-run" in client.get("/archive", headers=ALICE).text
