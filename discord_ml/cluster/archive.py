"""Job logs that outlive their cluster. Before a cluster is deleted (by the resource, the CLI, X-Ray
or the sweeper: every path goes through a provider's `delete`), each Ray job's whole log and final
status are saved to the log store, keyed by cluster, job id and Dagster run.

The store is `DML_LOG_ROOT` (else `$DML_HOME/logs`): a path or an object-store URL, written by the
store's rules (`discord_ml.storage`: each file under a temporary name, then moved into place). A cluster's record,
written last, is what makes its archive visible. Archiving is bounded (`DML_ARCHIVE_TIMEOUT_S`) and
never stops a deletion: what could not be saved is logged and recorded with the archive.

Layout: `clusters/<deleted>_<backend>_<namespace>_<name>/cluster.json` and `.../logs/<job>.log`;
`jobs/<job>.json` points a job id at its cluster's archive.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from discord_ml.cluster.provider import ClusterConnection, ClusterError, ClusterInfo
from discord_ml.settings import get_settings
from discord_ml.storage import Store

if TYPE_CHECKING:
    from discord_ml.jobs.records import JobInfo

log = logging.getLogger(__name__)
STAMP = "%Y%m%dT%H%M%S%fZ"


class _Connectable(Protocol):
    def get(self, name: str, *, namespace: str | None = None) -> ClusterInfo: ...
    def connect(self, name: str, *, namespace: str | None = None) -> ClusterConnection: ...


@dataclass(frozen=True)
class ArchivedJob:
    """A Ray job as it ended, with where its log is."""

    job_id: str  # the submission id (dml's `<cluster>_<hex>` or Ray's raysubmit_…)
    status: str
    entrypoint: str
    message: str
    start: datetime | None
    end: datetime | None
    run_id: str | None
    log_saved: bool


@dataclass(frozen=True)
class ArchivedCluster:
    """A deleted cluster's record: what it was, when it went, its jobs."""

    key: str
    cluster: dict[str, Any]  # ClusterInfo.as_json() at deletion
    deleted: datetime
    jobs: list[ArchivedJob] = field(default_factory=list[ArchivedJob])
    problem: str | None = None  # why some logs are missing
    rate: dict[str, Any] | None = None  # usage.Rates at deletion (CPUs, GPUs, $/hour)

    @property
    def name(self) -> str:
        return str(self.cluster["name"])


class LogStore:
    """The archive under one root."""

    def __init__(self, root: str | None = None) -> None:
        self.store = Store(root or get_settings().log_root)

    def save(self, info: ClusterInfo, jobs: list[JobInfo], logs: dict[str, str], *,
             problem: str | None = None, deleted: datetime | None = None,
             rate: dict[str, Any] | None = None) -> str:  # fmt: skip
        """Write the logs, then the cluster's record, then each job's pointer; return the archive key."""
        deleted = deleted or datetime.now(UTC)
        key = f"{deleted.strftime(STAMP)}_{info.backend}_{info.namespace}_{info.name}"
        for job_id, text in logs.items():
            path = self.store.path("clusters", key, "logs", f"{quote(job_id)}.log")
            self.store.write_bytes_atomic(path, text.encode())
        archived = [_job(j, run_id=info.run_id, saved=j.job_id in logs) for j in jobs]
        record = {"key": key, "cluster": info.as_json(), "deleted": deleted.isoformat(), "problem": problem,
                  "rate": rate, "jobs": [_job_json(j) for j in archived]}  # fmt: skip
        self.store.write_bytes_atomic(self.store.path("clusters", key, "cluster.json"), json.dumps(record).encode())
        for job in archived:
            self.store.write_bytes_atomic(self.store.path("jobs", f"{quote(job.job_id)}.json"),
                                         json.dumps({"cluster": key}).encode())  # fmt: skip
        return key

    def clusters(self, *, since: timedelta | None = None, now: datetime | None = None) -> list[ArchivedCluster]:
        """Archived clusters deleted within `since` (all if None), newest first."""
        from pyarrow import fs as pafs

        selector = pafs.FileSelector(self.store.path("clusters"), allow_not_found=True)
        keys = sorted((i.base_name for i in self.store.filesystem.get_file_info(selector)
                       if i.type == pafs.FileType.Directory), reverse=True)  # fmt: skip
        oldest = (now or datetime.now(UTC)) - since if since else None
        found = []
        for key in keys:
            if oldest and datetime.strptime(key.split("_", 1)[0], STAMP).replace(tzinfo=UTC) < oldest:
                break  # keys sort by deletion time
            if self.store.exists(self.store.path("clusters", key, "cluster.json")):
                found.append(self.cluster(key))
        return found

    def cluster(self, key: str) -> ArchivedCluster:
        """One archive. Raises LookupError."""
        path = self.store.path("clusters", key, "cluster.json")
        if "/" in key or not self.store.exists(path):
            raise LookupError(f"no archived cluster {key!r}")
        record = self.store.read_json(path)
        jobs = [ArchivedJob(**{**j, "start": _iso(j["start"]), "end": _iso(j["end"])}) for j in record["jobs"]]
        return ArchivedCluster(key, record["cluster"], datetime.fromisoformat(record["deleted"]), jobs,
                               record.get("problem"), record.get("rate"))  # fmt: skip

    def find_job(self, job_id: str) -> tuple[ArchivedCluster, ArchivedJob] | None:
        """The archived job with this id and its cluster's archive, if any."""
        pointer = self.store.path("jobs", f"{quote(job_id)}.json")
        if not self.store.exists(pointer):
            return None
        archive = self.cluster(self.store.read_json(pointer)["cluster"])
        return next(((archive, j) for j in archive.jobs if j.job_id == job_id), None)

    def log(self, key: str, job_id: str) -> str:
        """An archived job's whole log. Raises LookupError."""
        path = self.store.path("clusters", key, "logs", f"{quote(job_id)}.log")
        if not self.store.exists(path):
            raise LookupError(f"no archived log of job {job_id!r} in {key!r}")
        with self.store.filesystem.open_input_stream(path) as f:
            return f.read().decode()


def _rate(info: ClusterInfo) -> dict[str, Any] | None:
    """The cluster's usage rate at deletion (prices change; its cost so far must not)."""
    from discord_ml.cluster.pools import PoolError
    from discord_ml.cluster.usage import rates, rates_json

    try:
        return rates_json(rates(info.as_json()))
    except PoolError:
        return None


def _iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _job(job: JobInfo, *, run_id: str | None, saved: bool) -> ArchivedJob:
    return ArchivedJob(job_id=job.job_id, status=job.status, entrypoint=job.entrypoint, message=job.message,
                       start=job.start, end=job.end, run_id=job.metadata.get("dagster_run_id") or run_id,
                       log_saved=saved)  # fmt: skip


def _job_json(job: ArchivedJob) -> dict[str, Any]:
    return {"job_id": job.job_id, "status": job.status, "entrypoint": job.entrypoint, "message": job.message,
            "start": job.start.isoformat() if job.start else None, "end": job.end.isoformat() if job.end else None,
            "run_id": job.run_id, "log_saved": job.log_saved}  # fmt: skip


def archive_before_delete(provider: _Connectable, name: str, namespace: str, *, store: LogStore | None = None,
                          timeout: float | None = None) -> str | None:  # fmt: skip
    """Save the cluster's Ray jobs and logs (bounded by `timeout`); return the archive key, or None
    when nothing could be archived. Never raises: a deletion must not wait on its logs."""
    from discord_ml.jobs.client import RayJobs

    timeout = get_settings().archive_timeout_s if timeout is None else timeout
    deadline = time.monotonic() + timeout
    try:
        info = provider.get(name, namespace=namespace)
    except ClusterError:
        return None  # nothing to archive: already gone
    jobs: list[JobInfo] = []
    logs: dict[str, str] = {}
    problem = None
    try:
        api = RayJobs.of(provider.connect(name, namespace=namespace))

        def in_time() -> RayJobs:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"archiving took over {timeout:.0f}s (DML_ARCHIVE_TIMEOUT_S)")
            return api.with_timeout(min(left, 10.0))

        jobs = in_time().list()
        for job in jobs:
            if job.has_logs:  # drivers started by `ray.init()` alone have no submission and no log API
                logs[job.job_id] = in_time().logs(job_id=job.job_id)
    except Exception as exc:  # recorded: the cluster is deleted anyway
        problem = f"{len(logs)} of {len(jobs) or '?'} job logs saved: {type(exc).__name__}: {exc}"
        log.warning("cluster %s/%s: %s", namespace, name, problem)
    try:
        key = (store or LogStore()).save(info, jobs, logs, problem=problem, rate=_rate(info))
    except Exception as exc:  # an unwritable store must not keep a cluster alive
        log.warning("cluster %s/%s: job logs could not be archived: %s: %s", namespace, name, type(exc).__name__, exc)
        return None
    log.info("cluster %s/%s: %d job log(s) archived as %s", namespace, name, len(logs), key)
    return key
