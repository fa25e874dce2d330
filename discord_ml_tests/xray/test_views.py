"""Page models: filters, rows, idle/orphan badges, GPU and age labels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from discord_ml.cluster.provider import ClusterInfo, ClusterStatus
from discord_ml.xray.auth import Identity
from discord_ml.xray.views import ClusterRow, FilterError, Filters, cluster_rows, gpu_label, human_age

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
ALICE = Identity("alice", frozenset(), admin=False)


def info(name: str, *, owner: str = "alice", team: str = "ads", status: ClusterStatus = ClusterStatus.READY,
         age: float = 60, ttl: int | None = 3600, run_id: str | None = None, gpus: int = 0, gpu_type: str = "none",
         workers: int = 2) -> ClusterInfo:  # fmt: skip
    labels = {"dagster.io/run-id": run_id} if run_id else {}
    return ClusterInfo(name=name, namespace="ml", backend="local", owner=owner, team=team, purpose="train",
                       gpu_pool="a100" if gpus else "cpu", gpu_type=gpu_type, gpus_per_worker=gpus,
                       workers_ready=workers, workers_desired=workers, status=status, reason="",
                       created=NOW - timedelta(seconds=age), dashboard_url="http://127.0.0.1:1", labels=labels,
                       ttl_seconds=ttl)  # fmt: skip


def rows(clusters: list[ClusterInfo], filters: Filters | None = None,
         statuses: dict[str, str | None] | None = None) -> list[ClusterRow]:  # fmt: skip
    return cluster_rows(clusters, filters or Filters(), now=NOW, run_statuses=statuses or {}, dagster_url="http://dagster:3000/",
                        identity=ALICE)  # fmt: skip


def test_filters_match_owner_team_and_status_and_rows_come_newest_first() -> None:
    clusters = [info("old", age=500), info("new", age=5), info("bobs", owner="bob", team="quests"),
                info("down", status=ClusterStatus.DEAD)]  # fmt: skip
    assert [r.name for r in rows(clusters)] == ["new", "bobs", "down", "old"]
    assert [r.name for r in rows(clusters, Filters.parse("bob", None, None))] == ["bobs"]
    assert [r.name for r in rows(clusters, Filters.parse(None, "ads", "dead"))] == ["down"]
    assert [r.name for r in rows(clusters, Filters.parse(" alice ", "", "READY"))] == ["new", "old"]
    assert Filters.parse("bob", "", "ready").query() == {"owner": "bob", "status": "ready"}


@pytest.mark.parametrize(
    ("owner", "team", "status", "message"),
    [
        (None, None, "running", "status 'running' is not known; use one of: pending, ready, failed, dead, deleting"),
        ("al ice", None, None, "owner 'al ice' is not a valid label value"),
        (None, "-ads", None, "team '-ads' is not a valid label value"),
        ("x" * 64, None, None, "is not a valid label value: use up to 63 letters"),
    ],
)
def test_bad_filters_name_the_field_the_value_and_the_fix(
    owner: str | None, team: str | None, status: str | None, message: str
) -> None:
    with pytest.raises(FilterError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Filters.parse(owner, team, status)


def test_badges_mark_clusters_past_their_ttl_and_clusters_whose_run_ended_or_vanished() -> None:
    clusters = [info("expired", age=7200, ttl=3600), info("finished", run_id="r-done"), info("gone", run_id="r-gone"),
                info("running", run_id="r-live"), info("unknown", run_id="r-unknown"), info("adhoc")]  # fmt: skip
    statuses: dict[str, str | None] = {"r-done": "SUCCESS", "r-gone": None, "r-live": "STARTED"}
    by_name = {r.name: r for r in rows(clusters, statuses=statuses)}
    expired = [(b.kind, b.reason) for b in by_name["expired"].badges]
    assert expired == [("expired", "past its TTL: 7200s old, TTL 3600s")]
    assert [b.reason for b in by_name["finished"].badges] == ["its Dagster run r-done is SUCCESS"]
    assert [b.reason for b in by_name["gone"].badges] == ["its Dagster run r-gone does not exist"]
    assert by_name["running"].badges == [] and by_name["adhoc"].badges == []
    assert by_name["unknown"].badges == [] and by_name["unknown"].run_status is None  # no Dagster verdict: no badge
    assert by_name["finished"].dagster_run_url == "http://dagster:3000/runs/r-done"
    assert by_name["gone"].run_status == "missing" and by_name["running"].run_status == "STARTED"


def test_row_shows_total_gpus_workers_age_links_and_who_may_manage_it() -> None:
    [theirs, mine] = rows([info("gpu", gpus=8, gpu_type="nvidia-a100", workers=4, age=3 * 3600 + 120),
                           info("cpu", owner="bob", age=30)])  # fmt: skip
    assert (theirs.name, mine.name) == ("cpu", "gpu")  # newest first
    assert (mine.gpus, mine.gpu_label, mine.workers_ready, mine.workers_desired) == (32, "nvidia-a100 × 32", 4, 4)
    assert (mine.age, theirs.age, theirs.gpu_label) == ("3h2m", "30s", "cpu")
    assert mine.href == "/clusters/local/ml/gpu" and mine.key == "local/ml/gpu"
    assert mine.may_manage and not theirs.may_manage
    assert mine.to_json()["badges"] == [{"kind": "expired", "reason": "past its TTL: 10920s old, TTL 3600s"}]
    assert theirs.to_json()["badges"] == [] and theirs.to_json()["dashboard_url"] == "http://127.0.0.1:1"


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (59, "59s"), (61, "1m"), (3600, "1h"), (3720, "1h2m"),
                                               (90000, "1d1h"), (-5, "0s")])  # fmt: skip
def test_human_age(seconds: float, text: str) -> None:
    assert human_age(seconds) == text


def test_gpu_label_of_a_cpu_pool_is_cpu_even_with_a_gpu_count() -> None:
    assert gpu_label(info("x", gpus=0)) == (0, "cpu")
    assert gpu_label(info("y", gpus=1, gpu_type="nvidia-l4", workers=3)) == (3, "nvidia-l4 × 3")
