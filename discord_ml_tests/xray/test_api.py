"""The JSON API and pages over real local Ray clusters: each endpoint, auth failures, bad parameters."""

from __future__ import annotations

import json
import os
import shlex
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from fastapi.testclient import TestClient

from discord_ml.cluster.kuberay.provider import KubeRayProvider
from discord_ml.cluster.lifecycle import no_run_statuses
from discord_ml.cluster.local.processes import group_alive
from discord_ml.cluster.provider import ClusterStatus
from discord_ml.cluster.spec import ClusterSpec
from discord_ml.jobs.client import RayJobs
from discord_ml.orchestration.run_statuses import DagsterRunStatuses
from discord_ml.xray.app import create_app
from discord_ml.xray.config import XRayConfig
from discord_ml_tests.support.k8s_emulator import KubeEmulator
from discord_ml_tests.xray.conftest import XRayWorld, make_app

pytestmark = pytest.mark.integration

ALICE = {"X-Forwarded-User": "alice"}
BOB = {"X-Forwarded-User": "bob"}
ADMIN = {"X-Forwarded-User": "root", "X-Forwarded-Groups": "ml, ml-platform-admins"}


@pytest.fixture(scope="module")
def client(xray_world: XRayWorld) -> Iterator[TestClient]:
    with TestClient(make_app(xray_world)) as test_client:
        yield test_client


def token(client: TestClient, headers: dict[str, str]) -> str:
    return client.get("/api/me", headers=headers).json()["csrf_token"]


def test_health_and_identity(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}  # probes carry no identity
    me = client.get("/api/me", headers=ADMIN).json()
    assert (me["user"], me["groups"], me["admin"]) == ("root", ["ml", "ml-platform-admins"], True)
    assert len(me["csrf_token"]) == 64
    for path in ("/api/me", "/api/clusters", "/api/clusters/local/ml/xr-alice"):
        answer = client.get(path)
        assert answer.status_code == 401, path
        assert "X-Forwarded-User header is missing" in answer.json()["detail"]
    page = client.get("/")
    assert page.status_code == 401 and "X-Forwarded-User header is missing" in page.text  # a page, not JSON


def test_clusters_lists_every_cluster_with_its_columns_and_filters(client: TestClient) -> None:
    body = client.get("/api/clusters", headers=ALICE).json()
    rows = {r["name"]: r for r in body["clusters"]}
    assert {"xr-alice", "xr-bob"} <= set(rows) and body["problems"] == []
    bob = rows["xr-bob"]
    assert (bob["owner"], bob["team"], bob["purpose"], bob["gpu_label"], bob["status"]) == (
        "bob", "quests", "adhoc", "cpu", "ready")  # fmt: skip
    assert (bob["workers_ready"], bob["workers_desired"], bob["backend"], bob["namespace"]) == (1, 1, "local", "ml")
    assert bob["dashboard_url"].startswith("http://127.0.0.1:") and bob["age_seconds"] >= 0
    assert rows["xr-alice"]["may_manage"] and not bob["may_manage"]
    only_bob = client.get("/api/clusters", params={"owner": "bob"}, headers=ALICE).json()
    assert [r["name"] for r in only_bob["clusters"]] == ["xr-bob"] and only_bob["filters"] == {"owner": "bob"}
    ads_ready = client.get("/api/clusters?team=ads&status=ready", headers=ALICE).json()["clusters"]
    assert "xr-alice" in [r["name"] for r in ads_ready] and "xr-bob" not in [r["name"] for r in ads_ready]
    assert client.get("/api/clusters?status=dead&owner=bob", headers=ALICE).json()["clusters"] == []


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("status=running", "status 'running' is not known; use one of: pending, ready, failed, dead, deleting"),
        ("owner=a%20b", "owner 'a b' is not a valid label value"),
        ("team=" + "t" * 70, "team '" + "t" * 70 + "' is not a valid label value"),
    ],
)
def test_bad_filters_are_422_naming_field_value_and_fix(client: TestClient, query: str, detail: str) -> None:
    answer = client.get(f"/api/clusters?{query}", headers=ALICE)
    assert answer.status_code == 422 and answer.json()["detail"].startswith(detail)
    page = client.get(f"/?{query}", headers=ALICE)
    assert page.status_code == 422 and "is not" in page.text and "<html" in page.text


def test_clusters_page_and_its_fragment_render_the_rows(client: TestClient) -> None:
    page = client.get("/", headers=ALICE)
    assert page.status_code == 200 and 'data-cluster="local/ml/xr-bob"' in page.text
    assert '<meta name="csrf-token"' in page.text and "Ray dashboard" in page.text
    fragment = client.get("/fragments/clusters?owner=alice", headers=ALICE).text
    assert 'data-cluster="local/ml/xr-alice"' in fragment and "xr-bob" not in fragment and "<html" not in fragment
    empty = client.get("/fragments/clusters?owner=nobody", headers=ALICE).text
    assert "No cluster matches these filters" in empty


def test_cluster_detail_has_nodes_jobs_and_events(client: TestClient) -> None:
    body = client.get("/api/clusters/local/ml/xr-bob", headers=ALICE).json()
    assert body["dashboard_error"] is None and body["cluster"]["name"] == "xr-bob"
    roles = sorted(n["role"] for n in body["nodes"])
    assert roles == ["head", "worker"] and all(n["state"] == "ALIVE" for n in body["nodes"])
    worker = next(n for n in body["nodes"] if n["role"] == "worker")
    assert worker["cpus"] >= 1 and 0 < worker["memory_used"] < worker["memory_total"]
    assert [(e["source"], e["reason"]) for e in body["events"]][:3] == [
        ("xr-bob", "Created"), ("head", "Running"), ("worker-0", "Running")]  # fmt: skip
    page = client.get("/clusters/local/ml/xr-bob", headers=ALICE)
    assert page.status_code == 200 and 'id="nodes"' in page.text and "Launch notebook" not in page.text  # not hers
    assert "Launch notebook" in client.get("/clusters/local/ml/xr-alice", headers=ALICE).text


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("/api/clusters/local/ml/nope", "no local cluster 'nope' in namespace 'ml'"),
        ("/api/clusters/kuberay/ml/xr-bob", "backend 'kuberay' is not served here; X-Ray shows: local"),
        ("/api/clusters/local/ml/xr-bob/jobs/nope", "no Ray job 'nope' on this cluster"),
        ("/api/clusters/local/ml/xr-bob/jobs/nope/logs", "not on this cluster's dashboard"),
    ],
)
def test_unknown_things_are_404_with_what_exists(client: TestClient, path: str, detail: str) -> None:
    answer = client.get(path, headers=ALICE)
    assert answer.status_code == 404 and detail in answer.json()["detail"]


def test_bad_job_id_is_422(client: TestClient) -> None:
    answer = client.get("/api/clusters/local/ml/xr-bob/jobs/a%20b/logs/stream", headers=ALICE)
    assert answer.status_code == 422 and "job id 'a b' is not valid" in answer.json()["detail"]


def test_job_status_download_and_live_stream(client: TestClient, xray_world: XRayWorld) -> None:
    connection = xray_world.provider.connect("xr-alice")
    script = "import time\nfor i in range(6):\n    print(f'step {i}', flush=True)\n    time.sleep(0.5)"
    ids: list[str] = []
    done = threading.Event()

    def run() -> None:
        RayJobs.of(connection).submit_and_follow(entrypoint=f"python -c {shlex.quote(script)}",
                                                 on_line=lambda _: None, on_submitted=ids.append)  # fmt: skip
        done.set()

    threading.Thread(target=run, daemon=True).start()
    deadline = time.monotonic() + 60
    while not ids:
        assert time.monotonic() < deadline, "the job was not submitted"
        time.sleep(0.1)
    base = f"/api/clusters/local/ml/xr-alice/jobs/{ids[0]}"
    lines, events = [], []
    with client.stream("GET", base + "/logs/stream", headers=ALICE) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        event = "message"
        for raw in stream.iter_lines():
            if raw.startswith("event: "):
                event = raw.removeprefix("event: ")
            elif raw.startswith("data: "):
                (lines if event == "message" else events).append((event, raw.removeprefix("data: ")))
                if event == "end":
                    break
                event = "message"
    steps = [text for _, text in lines if text.startswith("step ")]
    assert steps == [f"step {i}" for i in range(6)]
    assert events == [("end", '{"status": "SUCCEEDED"}')]
    assert done.wait(30)
    job = client.get(base, headers=ALICE).json()
    assert job["status"] == "SUCCEEDED" and job["duration_seconds"] >= 2.5 and job["has_logs"]
    download = client.get(base + "/logs", headers=ALICE)
    assert download.headers["content-disposition"] == f'attachment; filename="xr-alice-{ids[0]}.log"'
    assert "step 5" in download.text
    jobs = client.get("/api/clusters/local/ml/xr-alice", headers=ALICE).json()["jobs"]
    assert ids[0] in [j["job_id"] for j in jobs]


def test_delete_needs_csrf_same_origin_and_ownership(client: TestClient, xray_world: XRayWorld,
                                                    dagster_instance: dg.DagsterInstance) -> None:  # fmt: skip
    dagster_instance.add_run(dg.DagsterRun(job_name="quests_retrain", run_id="run-over",
                                           status=dg.DagsterRunStatus.FAILURE))  # fmt: skip
    xray_world.provider.create(xray_world.spec("xr-del", "alice", "ads", dagster_run_id="run-over"))
    url = "/api/clusters/local/ml/xr-del/delete"
    with TestClient(make_app(xray_world, run_statuses=DagsterRunStatuses(dagster_instance))) as dagster_aware:
        listed = dagster_aware.get("/api/clusters", headers=ALICE).json()["clusters"]
    [row] = [r for r in listed if r["name"] == "xr-del"]
    assert row["badges"] == [{"kind": "orphaned", "reason": "its Dagster run run-over is FAILURE"}]
    assert row["run_status"] == "FAILURE" and row["dagster_run_url"].endswith("/runs/run-over")

    refused = [
        (client.post(url, headers=ALICE), 403, "missing or wrong CSRF token"),
        (client.post(url, headers={**ALICE, "X-CSRF-Token": token(client, BOB)}), 403, "missing or wrong CSRF"),
        (client.post(url, headers={**ALICE, "X-CSRF-Token": token(client, ALICE), "Origin": "https://evil.example"}),
         403, "Origin https://evil.example is not this site"),
        (client.post(url, headers={**BOB, "X-CSRF-Token": token(client, BOB)}), 403,
         "bob may not delete cluster 'xr-del': only its owner (alice) or a member of ml-platform-admins may"),
        (client.post(url, headers={"X-CSRF-Token": token(client, BOB)}), 401, "header is missing"),
        (client.get(url, headers=ALICE), 405, ""),
    ]  # fmt: skip
    for answer, status, detail in refused:
        assert answer.status_code == status, answer.text
        assert detail in answer.text
    assert xray_world.provider.get("xr-del").status == ClusterStatus.READY  # still there

    deleted = client.post(url, headers={**ALICE, "X-CSRF-Token": token(client, ALICE), "Origin": str(client.base_url)})
    assert deleted.status_code == 200 and deleted.json() == {"deleted": "local/ml/xr-del", "by": "alice"}
    assert "xr-del" not in [c.name for c in xray_world.provider.list()]
    assert client.post(url, headers={**ALICE, "X-CSRF-Token": token(client, ALICE)}).status_code == 404


def test_dead_dashboard_is_an_inline_message_and_an_admin_deletes_it_with_a_plain_form(
    client: TestClient, xray_world: XRayWorld
) -> None:
    xray_world.provider.create(xray_world.spec("xr-dead", "bob", "quests"))
    record = xray_world.provider.registry.get("ml", "xr-dead")
    assert record is not None
    [head] = [n for n in record.nodes if n["role"] == "head"]
    os.killpg(int(head["pid"]), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while group_alive(int(head["pid"])) and time.monotonic() < deadline:
        time.sleep(0.1)
    body = client.get("/api/clusters/local/ml/xr-dead", headers=BOB).json()
    assert body["cluster"]["status"] == "dead" and "head process is gone" in body["cluster"]["reason"]
    assert body["dashboard_error"].startswith("Ray dashboard not available: cluster 'xr-dead' is dead")
    assert any(e["reason"] == "Exited" and e["type"] == "Warning" for e in body["events"])
    page = client.get("/clusters/local/ml/xr-dead", headers=BOB)
    assert page.status_code == 200 and 'class="inline-error"' in page.text and "is dead" in page.text
    form = client.post("/api/clusters/local/ml/xr-dead/delete", data={"csrf_token": token(client, ADMIN)},
                       headers={**ADMIN, "Accept": "text/html"}, follow_redirects=False)  # fmt: skip
    assert form.status_code == 303 and form.headers["location"] == "/"
    assert "xr-dead" not in [c.name for c in xray_world.provider.list()]


def test_notebook_is_owner_only_and_attached_to_the_cluster(client: TestClient) -> None:
    url = "/api/clusters/local/ml/xr-alice/notebook"
    refused = client.post(url, headers={**BOB, "X-CSRF-Token": token(client, BOB)})
    assert refused.status_code == 403 and "bob may not attach a notebook to cluster 'xr-alice'" in refused.text
    started = client.post(url, headers={**ALICE, "X-CSRF-Token": token(client, ALICE)})
    assert started.status_code == 200, started.text
    lab = started.json()["url"]
    assert lab.startswith("http://127.0.0.1:") and started.json()["started_by"] == "alice"
    status_url = lab.replace("/lab?token=", "/api/status?token=")
    with urllib.request.urlopen(status_url, timeout=10) as answer:
        assert answer.status == 200 and "started" in json.loads(answer.read())
    again = client.post(url, headers={**ALICE, "X-CSRF-Token": token(client, ALICE)})
    assert again.json()["url"] == lab  # one notebook per cluster
    assert lab in client.get("/clusters/local/ml/xr-alice", headers=ALICE).text


def test_local_mode_acts_as_the_local_user(xray_world: XRayWorld) -> None:
    with TestClient(make_app(xray_world, auth="local")) as local:
        assert local.get("/api/me", headers=BOB).json()["user"] == "alice"  # the header is not trusted
        rows = {r["name"]: r["may_manage"] for r in local.get("/api/clusters").json()["clusters"]}
        assert rows["xr-alice"] and not rows["xr-bob"]


def test_kuberay_clusters_show_pending_reasons_and_events_and_a_broken_backend_is_one_line(
    xray_world: XRayWorld, kuberay_api: KubeEmulator, tmp_path: Path
) -> None:
    kuberay_api.modes["xr-gpu"] = "pending"
    kuberay = KubeRayProvider()
    kuberay.create(ClusterSpec.build(name="xr-gpu", owner="alice", team="ads", gpu_pool="a100:8", workers=2))
    config = XRayConfig(auth="header", backends=("local", "kuberay"))
    both = create_app(config, providers={"local": xray_world.provider, "kuberay": kuberay},
                      run_statuses=no_run_statuses, notebooks_root=tmp_path)  # fmt: skip
    try:
        with TestClient(both) as client:
            rows = {r["key"]: r for r in client.get("/api/clusters", headers=ALICE).json()["clusters"]}
            gpu = rows["kuberay/ml/xr-gpu"]
            assert "local/ml/xr-bob" in rows and gpu["status"] == "pending" and gpu["gpus"] == 16
            assert "FailedScheduling" in gpu["reason"] and gpu["workers_desired"] == 2
            detail = client.get("/api/clusters/kuberay/ml/xr-gpu", headers=ALICE).json()
            assert detail["dashboard_error"].startswith("Ray dashboard not available")
            [event] = detail["events"]
            assert (event["type"], event["reason"]) == ("Warning", "FailedScheduling")
            assert event["source"].startswith("Pod/xr-gpu-head")
            # On kuberay "Launch notebook" creates the user's notebook pod next to the cluster and lists it.
            url = "/api/clusters/kuberay/ml/xr-gpu/notebook"
            assert client.post(url, headers={**BOB, "X-CSRF-Token": token(client, BOB)}).status_code == 403
            launched = client.post(url, headers={**ALICE, "X-CSRF-Token": token(client, ALICE)})
            assert launched.status_code == 200, launched.text
            assert launched.json()["pod"] == "xr-gpu-nb-alice"
            assert launched.json()["open_with"] == "dml notebook xr-gpu -n ml -b kuberay"
            listed = client.get("/api/clusters/kuberay/ml/xr-gpu", headers=ALICE).json()["notebook_pods"]
            assert [(n["name"], n["owner"]) for n in listed] == [("xr-gpu-nb-alice", "alice")]
            page = client.get("/clusters/kuberay/ml/xr-gpu", headers=ALICE).text
            assert 'id="notebooks"' in page and "dml notebook xr-gpu -n ml -b kuberay" in page
    finally:
        kuberay.delete("xr-gpu")
    assert kuberay_api.find("pods") == []  # the notebook pod went with its cluster
    kubeconfig = Path(os.environ["KUBECONFIG"])
    dead = tmp_path / "dead-kubeconfig"
    dead.write_text(kubeconfig.read_text().replace(kuberay_api.url, "http://127.0.0.1:1"))  # nothing listens
    broken = create_app(config, run_statuses=no_run_statuses, notebooks_root=tmp_path,
                        providers={"local": xray_world.provider,
                                   "kuberay": KubeRayProvider(kubeconfig=str(dead), retries=1)})  # fmt: skip
    with TestClient(broken) as client:
        body = client.get("/api/clusters", headers=ALICE).json()
        assert [p.split(":")[0] for p in body["problems"]] == ["kuberay"]
        assert "the Kubernetes API at http://127.0.0.1:1 is unreachable" in body["problems"][0]
        assert "xr-bob" in [r["name"] for r in body["clusters"]]  # the other backend still shows
        assert "the Kubernetes API at http://127.0.0.1:1 is unreachable" in client.get("/", headers=ALICE).text
