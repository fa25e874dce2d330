"""Usage and estimated cost of clusters: CPU-hours, GPU-hours and dollars, for live clusters (so far)
and deleted ones (their whole life, from the log archive), within a time window.

A cluster's rate is its resources times the pool catalog's `price_per_node_hour`: each worker costs
its share of a node of its pool (GPUs of the node's GPUs, else CPUs of the node's CPUs), the head
its CPU share of a node of the `cpu` pool. A pool without a price gives no cost (shown as `—`).
Workers count as desired at the last snapshot (an autoscaled cluster's changes are not replayed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from discord_ml.cluster.pools import PoolCatalog, PoolError, get_catalog

if TYPE_CHECKING:
    from discord_ml.cluster.archive import LogStore
    from discord_ml.cluster.provider import ClusterProvider

HEAD_POOL = "cpu"
GROUPS = ("owner", "team")


@dataclass(frozen=True)
class Rates:
    """What a cluster uses per hour of its life."""

    cpus: float
    gpus: int
    price_per_hour: float | None  # None: its pool has no price


def rates(cluster: Mapping[str, Any], catalog: PoolCatalog | None = None) -> Rates:
    """Per-hour CPUs, GPUs and estimated cost of a cluster (`ClusterInfo.as_json()`)."""
    catalog = catalog or get_catalog()
    workers, gpus_each = int(cluster["workers_desired"]), int(cluster["gpus_per_worker"])
    head_cpu, worker_cpu = float(cluster.get("head_cpu", 0)), float(cluster.get("worker_cpu", 0))
    cpus, gpus = head_cpu + workers * worker_cpu, workers * gpus_each
    try:
        pool = catalog.get(str(cluster["gpu_pool"]))
    except PoolError:
        return Rates(cpus, gpus, None)
    if pool.price_per_node_hour is None:
        return Rates(cpus, gpus, None)
    share = gpus_each / pool.gpus_per_node if pool.gpus_per_node and gpus_each else worker_cpu / float(pool.node_cpu)
    price = workers * share * pool.price_per_node_hour
    try:
        head_pool = catalog.get(HEAD_POOL)
        price += head_cpu / float(head_pool.node_cpu) * (head_pool.price_per_node_hour or 0.0)
    except PoolError:
        pass
    return Rates(cpus, gpus, price)


@dataclass(frozen=True)
class ClusterUsage:
    """One cluster's use within a window."""

    name: str
    namespace: str
    backend: str
    owner: str
    team: str
    gpu_pool: str
    live: bool
    start: datetime  # within the window
    end: datetime
    hours: float
    cpu_hours: float
    gpu_hours: float
    price_per_hour: float | None
    cost: float | None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "start": self.start.isoformat(), "end": self.end.isoformat()}


def usage(cluster: Mapping[str, Any], *, ended: datetime | None, window: tuple[datetime, datetime],
          catalog: PoolCatalog | None = None, rate: Rates | None = None) -> ClusterUsage | None:  # fmt: skip
    """The cluster's use between `window`'s bounds (None if it did not live then). `ended`: when it was
    deleted, None while it lives. `rate`: as recorded at deletion, else from the catalog now."""
    created = datetime.fromisoformat(str(cluster["created"]))
    start, end = max(created, window[0]), min(ended or window[1], window[1])
    if end <= start:
        return None
    rate = rate or rates(cluster, catalog)
    hours = (end - start).total_seconds() / 3600
    cost = None if rate.price_per_hour is None else hours * rate.price_per_hour
    return ClusterUsage(
        name=str(cluster["name"]), namespace=str(cluster["namespace"]), backend=str(cluster["backend"]),
        owner=str(cluster["owner"]), team=str(cluster["team"]), gpu_pool=str(cluster["gpu_pool"]), live=ended is None,
        start=start, end=end, hours=hours, cpu_hours=hours * rate.cpus, gpu_hours=hours * rate.gpus,
        price_per_hour=rate.price_per_hour, cost=cost,
    )  # fmt: skip


Archived = tuple[Mapping[str, Any], datetime, Rates | None]  # a deleted cluster, when, its rate then


def collect(live: Iterable[Mapping[str, Any]], archived: Iterable[Archived], *, since: timedelta, until: datetime,
            catalog: PoolCatalog | None = None) -> list[ClusterUsage]:  # fmt: skip
    """Use of live clusters and of archived ones within `since` before `until`."""
    window = (until - since, until)
    found = [usage(c, ended=None, window=window, catalog=catalog) for c in live]
    found += [usage(c, ended=deleted, window=window, catalog=catalog, rate=rate) for c, deleted, rate in archived]
    return sorted((u for u in found if u is not None), key=lambda u: (u.start, u.name))


def totals(usages: Sequence[ClusterUsage], by: str) -> list[dict[str, Any]]:
    """Sums per owner or team, most expensive first (then most GPU-hours); cost None when no cluster had a price."""
    if by not in GROUPS:
        raise ValueError(f"--by {by!r} is not supported; use one of: {', '.join(GROUPS)}")
    groups: dict[str, dict[str, Any]] = {}
    for u in usages:
        row = groups.setdefault(getattr(u, by), {by: getattr(u, by), "clusters": 0, "hours": 0.0, "cpu_hours": 0.0,
                                                  "gpu_hours": 0.0, "cost": None, "unpriced_clusters": 0})  # fmt: skip
        row["clusters"] += 1
        for key in ("hours", "cpu_hours", "gpu_hours"):
            row[key] += getattr(u, key)
        if u.cost is None:
            row["unpriced_clusters"] += 1
        else:
            row["cost"] = (row["cost"] or 0.0) + u.cost
    return sorted(groups.values(), key=lambda r: (-(r["cost"] or 0.0), -r["gpu_hours"], r[by]))


def rates_json(rate: Rates) -> dict[str, Any]:
    """A rate as recorded in a cluster's archive."""
    return asdict(rate)


def rates_from_json(data: Mapping[str, Any] | None) -> Rates | None:
    """The rate recorded with an archive, or None when none was recorded."""
    return Rates(float(data["cpus"]), int(data["gpus"]), data.get("price_per_hour")) if data else None


def gather(providers: Mapping[str, ClusterProvider], *, since: timedelta, until: datetime,
           store: LogStore | None = None) -> tuple[list[ClusterUsage], list[str]]:  # fmt: skip
    """Every backend's live clusters and the archive's deleted ones, within the window; and what could not
    be read (a backend down), so totals are never silently short."""
    from discord_ml.cluster.archive import LogStore
    from discord_ml.cluster.provider import ClusterError

    live: list[Mapping[str, Any]] = []
    problems: list[str] = []
    for backend, provider in providers.items():
        try:
            live += [c.as_json() for c in provider.list()]
        except (ClusterError, OSError) as exc:
            problems.append(f"{backend}: clusters could not be listed: {exc}")
    deleted_after = until - since
    archive = (store or LogStore()).clusters(since=datetime.now(deleted_after.tzinfo) - deleted_after)
    archived = [(a.cluster, a.deleted, rates_from_json(a.rate)) for a in archive]
    return collect(live, archived, since=since, until=until), problems


def money(cost: float | None, unpriced: int = 0) -> str:
    """`$12.34`, `—` without a price, and how many clusters had none beside a partial sum."""
    if cost is None:
        return "—"
    return f"${cost:,.2f}" + (f" (+{unpriced} unpriced)" if unpriced else "")
