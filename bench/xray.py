"""Server time to render X-Ray's clusters page: 1,000 clusters from a provider stubbed at its interface
(this benchmark only), then the real local clusters; each against the bare cost of the same data
measured in the same run (the provider's `list()` plus a JSON dump of what it returned).

python -m bench.xray [--clusters 1000] [--repeats 15] [--local 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from discord_ml.cluster.local.provider import LocalRayProvider
from discord_ml.cluster.provider import ClusterConnection, ClusterEvent, ClusterInfo, ClusterStatus
from discord_ml.cluster.spec import ClusterSpec
from discord_ml.xray.app import create_app
from discord_ml.xray.config import XRayConfig

HEADERS = {"X-Forwarded-User": "owner-7"}


class StubProvider:
    """`count` clusters of varied owners, teams, statuses, GPUs and Dagster runs; nothing else works."""

    backend = "local"

    def __init__(self, count: int) -> None:
        now = datetime.now(UTC)
        statuses = list(ClusterStatus)
        self.clusters = [
            ClusterInfo(name=f"cluster-{i:04d}", namespace=f"team-{i % 7}", backend="local", owner=f"owner-{i % 40}",
                        team=f"team-{i % 7}", purpose=("train", "eval", "notebook")[i % 3], gpu_pool="a100",
                        gpu_type="nvidia-a100" if i % 4 else "none", gpus_per_worker=8 if i % 4 else 0,
                        workers_ready=i % 5, workers_desired=4, status=statuses[i % len(statuses)],
                        reason="pod Pending: 0/12 nodes are available" if i % 5 == 0 else "",
                        created=now - timedelta(minutes=i), dashboard_url=f"http://10.0.{i // 250}.{i % 250}:8265",
                        labels={"dagster.io/run-id": f"run-{i}"} if i % 2 else {}, ttl_seconds=8 * 3600)
            for i in range(count)
        ]  # fmt: skip

    def list(self, selector: Mapping[str, str] | None = None, *, namespace: str | None = None) -> list[ClusterInfo]:
        return list(self.clusters)

    def preflight(self, spec: ClusterSpec) -> list[str]:
        raise NotImplementedError

    def touch(self, name: str, *, namespace: str | None = None) -> None:
        raise NotImplementedError

    def create(self, spec: ClusterSpec) -> ClusterInfo:
        raise NotImplementedError

    def wait_ready(self, name: str, **_: object) -> ClusterInfo:
        raise NotImplementedError

    def get(self, name: str, *, namespace: str | None = None) -> ClusterInfo:
        raise NotImplementedError

    def delete(self, name: str, *, namespace: str | None = None) -> None:
        raise NotImplementedError

    def connect(self, name: str, *, namespace: str | None = None) -> ClusterConnection:
        raise NotImplementedError

    def events(self, name: str, *, namespace: str | None = None, limit: int = 20) -> list[ClusterEvent]:
        raise NotImplementedError


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm: template compilation, first-call imports
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def measure(label: str, provider: object, repeats: int, home: Path) -> None:
    config = XRayConfig(auth="header", backends=("local",))
    statuses = {f"run-{i}": ("SUCCESS", "STARTED", None)[i % 3] for i in range(0, 5000)}
    app = create_app(config, providers={"local": provider},  # type: ignore[dict-item]
                     run_statuses=lambda ids: {i: statuses.get(i) for i in ids}, notebooks_root=home)  # fmt: skip
    list_clusters: Callable[[], list[ClusterInfo]] = provider.list  # type: ignore[attr-defined]
    with TestClient(app) as client:
        page = client.get("/", headers=HEADERS)
        assert page.status_code == 200, page.text
        rows = page.text.count("<tr data-cluster=")
        bare = median_ms(lambda: json.dumps([dataclasses.asdict(c) for c in list_clusters()], default=str), repeats)
        html = median_ms(lambda: client.get("/", headers=HEADERS), repeats)
        api = median_ms(lambda: client.get("/api/clusters", headers=HEADERS), repeats)
        fragment = median_ms(lambda: client.get("/fragments/clusters?status=ready", headers=HEADERS), repeats)
    print(f"\n{label}: {rows} rows, {len(page.text) / 1024:.0f} KiB of HTML, median of {repeats}")
    print(f"  {'reference: provider.list() + JSON dump':42s} {bare:8.1f} ms   1.00x")
    for name, value in (("clusters page (GET /)", html), ("JSON API (GET /api/clusters)", api),
                        ("refresh fragment, status=ready", fragment)):  # fmt: skip
        print(f"  {name:42s} {value:8.1f} ms {value / bare:6.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clusters", type=int, default=1000, help="Stubbed clusters.")
    parser.add_argument("--repeats", type=int, default=15, help="Timed requests per case.")
    parser.add_argument("--local", type=int, default=3, help="Real local clusters (head only) for the second case.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-xray-") as tmp:
        home = Path(tmp)
        measure(f"{args.clusters} clusters (provider stubbed at its interface)", StubProvider(args.clusters),
                args.repeats, home)  # fmt: skip
        local = LocalRayProvider(home / "local")
        try:
            for i in range(args.local):
                local.create(ClusterSpec.build(name=f"bench-xray-{i}", owner="owner-7", workers=0, head_memory="1Gi"))
            measure(f"{args.local} real local Ray clusters", local, args.repeats, home)
        finally:
            for info in local.list():
                local.delete(info.name, namespace=info.namespace)


if __name__ == "__main__":
    main()
