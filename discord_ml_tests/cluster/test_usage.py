"""Usage and cost: rates from the pool catalog's prices, windows clipped exactly, and `dml usage -o json`
totals equal to lifetimes × resources × prices with a fixed clock (`--until`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from discord_ml.cli.main import app
from discord_ml.cluster.archive import LogStore
from discord_ml.cluster.lifecycle import no_run_statuses
from discord_ml.cluster.local.provider import LocalRayProvider
from discord_ml.cluster.pools import get_catalog, parse_catalog
from discord_ml.cluster.provider import ClusterInfo, ClusterStatus
from discord_ml.cluster.usage import Rates, collect, rates, totals
from discord_ml.xray.app import create_app
from discord_ml.xray.auth import Identity
from discord_ml.xray.config import XRayConfig
from discord_ml.xray.views import cluster_row

ALICE = Identity("alice", frozenset(), admin=False)

CATALOG = """
pools:
  - {name: cpu, cpu_per_node: "16", memory_per_node: 64Gi, max_workers: 32, price_per_node_hour: 0.8}
  - {name: h100, accelerator: nvidia-h100-80gb, resource_key: nvidia.com/gpu, gpus_per_node: 8, cpu_per_node: "200",
     memory_per_node: 1800Gi, max_workers: 8, price_per_node_hour: 98.32}
  - {name: l4, accelerator: nvidia-l4, resource_key: nvidia.com/gpu, gpus_per_node: 4, cpu_per_node: "46",
     memory_per_node: 180Gi, max_workers: 8}
"""


def _cluster(name: str, owner: str, team: str, pool: str, *, workers: int, gpus: int, worker_cpu: float,
             created: datetime) -> ClusterInfo:  # fmt: skip
    return ClusterInfo(name=name, namespace="ml", backend="local", owner=owner, team=team, purpose="train",
                       gpu_pool=pool, gpu_type="x", gpus_per_worker=gpus, workers_ready=workers,
                       workers_desired=workers, status=ClusterStatus.READY, reason="", created=created,
                       dashboard_url=None, head_cpu=2.0, worker_cpu=worker_cpu)  # fmt: skip


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_rates_price_each_node_share_and_leave_unpriced_pools_without_cost() -> None:
    catalog = parse_catalog(CATALOG, source="test")
    cpu = _cluster("a", "alice", "ads", "cpu", workers=2, gpus=0, worker_cpu=4, created=at("2026-11-18T00:00"))
    cpu_rate = rates(cpu.as_json(), catalog)
    assert (cpu_rate.cpus, cpu_rate.gpus, cpu_rate.price_per_hour) == (10.0, 0, pytest.approx(10 / 16 * 0.8))
    h100 = _cluster("b", "bob", "quests", "h100", workers=1, gpus=4, worker_cpu=100, created=at("2026-11-10T00:00"))
    assert rates(h100.as_json(), catalog).price_per_hour == pytest.approx(4 / 8 * 98.32 + 2 / 16 * 0.8)
    l4 = _cluster("c", "carol", "ads", "l4", workers=1, gpus=1, worker_cpu=8, created=at("2026-11-18T00:00"))
    assert rates(l4.as_json(), catalog) == Rates(cpus=10.0, gpus=1, price_per_hour=None)


def test_windows_clip_lifetimes_and_totals_group_them() -> None:
    catalog = parse_catalog(CATALOG, source="test")
    a = _cluster("a", "alice", "ads", "cpu", workers=2, gpus=0, worker_cpu=4, created=at("2026-11-18T00:00"))
    b = _cluster("b", "bob", "quests", "h100", workers=1, gpus=4, worker_cpu=100, created=at("2026-11-10T00:00"))
    live = _cluster("c", "alice", "ads", "l4", workers=1, gpus=1, worker_cpu=8, created=at("2026-11-19T12:00"))
    archived = [(a.as_json(), at("2026-11-18T10:00"), None), (b.as_json(), at("2026-11-14T00:00"), None)]
    used = collect([live.as_json()], archived, since=timedelta(days=7), until=at("2026-11-20T00:00"), catalog=catalog)
    by_name = {u.name: u for u in used}
    assert by_name["a"].hours == pytest.approx(10) and by_name["b"].hours == pytest.approx(24)  # from 11-13 on
    assert by_name["c"].live and by_name["c"].hours == pytest.approx(12) and by_name["c"].cost is None
    assert by_name["b"].gpu_hours == pytest.approx(96)
    [quests, ads] = totals(used, "team")  # most expensive first
    assert (quests["team"], quests["cost"]) == ("quests", pytest.approx(24 * (4 / 8 * 98.32 + 2 / 16 * 0.8)))
    assert (ads["clusters"], ads["unpriced_clusters"], ads["cost"]) == (2, 1, pytest.approx(10 * 10 / 16 * 0.8))
    with pytest.raises(ValueError, match="--by 'pool' is not supported"):
        totals(used, "pool")


@pytest.fixture
def priced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LogStore]:
    """A catalog with prices and a log store of its own, as the CLI reads them from the environment."""
    pools = tmp_path / "pools.yaml"
    pools.write_text(CATALOG)
    monkeypatch.setenv("DML_POOLS_FILE", str(pools))
    monkeypatch.setenv("DML_LOG_ROOT", str(tmp_path / "logs"))
    get_catalog.cache_clear()
    yield LogStore()
    monkeypatch.undo()
    get_catalog.cache_clear()


def test_dml_usage_totals_match_archived_lifetimes_with_a_fixed_clock(priced: LogStore) -> None:
    catalog = get_catalog()
    clusters = [
        (_cluster("a", "alice", "ads", "cpu", workers=2, gpus=0, worker_cpu=4, created=at("2026-11-18T00:00")),
         at("2026-11-18T10:00")),
        (_cluster("b", "bob", "quests", "h100", workers=1, gpus=4, worker_cpu=100, created=at("2026-11-10T00:00")),
         at("2026-11-14T00:00")),
        (_cluster("old", "bob", "quests", "h100", workers=1, gpus=8, worker_cpu=100, created=at("2026-11-01T00:00")),
         at("2026-11-02T00:00")),  # deleted before the window
    ]  # fmt: skip
    for info, deleted in clusters:
        rate = rates(info.as_json(), catalog)
        priced.save(info, [], {}, deleted=deleted, rate={"cpus": rate.cpus, "gpus": rate.gpus,
                                                          "price_per_hour": rate.price_per_hour})  # fmt: skip
    result = CliRunner().invoke(app, ["usage", "--by", "owner", "--since", "7d", "--until", "2026-11-20T00:00:00Z",
                                      "-o", "json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    body: dict[str, Any] = json.loads(result.stdout)
    rows = {r["owner"]: r for r in body["totals"]}
    assert set(rows) == {"alice", "bob"}  # live clusters began after --until; `old` ended before the window
    assert rows["alice"]["cpu_hours"] == pytest.approx(10 * 10) and rows["alice"]["cost"] == pytest.approx(10 * 0.5)
    assert rows["bob"]["gpu_hours"] == pytest.approx(24 * 4)
    assert rows["bob"]["cost"] == pytest.approx(24 * (0.5 * 98.32 + 2 / 16 * 0.8))
    assert [c["name"] for c in body["clusters"]] == ["b", "a"]  # by start within the window
    bad = CliRunner().invoke(app, ["usage", "--since", "a week"])
    assert bad.exit_code == 2 and "--since" in bad.output


def test_xray_shows_cost_per_cluster_and_a_usage_page_by_team(priced: LogStore, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    live = _cluster("live", "alice", "ads", "h100", workers=2, gpus=8, worker_cpu=200, created=now - timedelta(hours=2))
    row = cluster_row(live, now=now, run_statuses={}, dagster_url="http://dagster", identity=ALICE)
    assert row.price_per_hour == pytest.approx(2 * 98.32 + 2 / 16 * 0.8)
    assert row.cost_so_far == pytest.approx(2 * (2 * 98.32 + 2 / 16 * 0.8))
    gone = _cluster("gone", "bob", "quests", "cpu", workers=1, gpus=0, worker_cpu=16, created=now - timedelta(hours=3))
    rate = rates(gone.as_json(), get_catalog())
    priced.save(gone, [], {}, deleted=now - timedelta(hours=1),
                rate={"cpus": rate.cpus, "gpus": rate.gpus, "price_per_hour": rate.price_per_hour})  # fmt: skip
    config = XRayConfig(auth="header", backends=("local",))
    app_ = create_app(config, providers={"local": LocalRayProvider(tmp_path / "none")}, run_statuses=no_run_statuses,
                      notebooks_root=tmp_path)  # fmt: skip
    with TestClient(app_) as client:
        report = client.get("/api/usage?days=1&by=team", headers={"X-Forwarded-User": "alice"}).json()
        [quests] = report["totals"]
        assert quests["team"] == "quests" and quests["cpu_hours"] == pytest.approx(2 * 18)
        assert quests["cost"] == pytest.approx(2 * (16 / 16 * 0.8 + 2 / 16 * 0.8))
        page = client.get("/usage?days=1&by=team", headers={"X-Forwarded-User": "alice"}).text
        assert 'id="usage-plot"' in page and 'class="bar"' in page and 'data-group="quests"' in page
        assert client.get("/api/usage?by=pool", headers={"X-Forwarded-User": "alice"}).status_code == 422
