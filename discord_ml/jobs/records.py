"""What the Ray Jobs API answers, as typed records, and the errors `RayJobs` raises."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Ray colours the `(RayTrainWorker pid=…)` prefixes of worker output: escape codes mean nothing in an
# event log, a file or a web page.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
JOB_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:")
TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


class DashboardUnavailableError(Exception):
    """The cluster's dashboard (Jobs API) could not be reached or answered nonsense."""


class ClusterUnreachableError(DashboardUnavailableError):
    """The head has not answered for `seconds` while a job was followed: the cluster is gone."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the Ray cluster has not answered for {seconds:.0f}s")
        self.seconds = seconds


class JobNotFoundError(LookupError):
    """The cluster has no job of that id."""


class InvalidJobIdError(ValueError):
    """A string that could not be a Ray submission id."""


class RayJobFailedError(RuntimeError):
    """A Ray job ended in FAILED or STOPPED; the message carries its last log lines."""

    def __init__(self, job_id: str, status: str, message: str, tail: list[str]) -> None:
        self.job_id, self.status, self.tail = job_id, status, tail
        lines = "\n".join(tail)
        super().__init__(f"Ray job {job_id} ended {status}: {message}\n--- last {len(tail)} log lines ---\n{lines}")


class RayClusterLostError(RayJobFailedError):
    """The cluster stopped answering while a job ran (its head was killed, evicted or lost its node)."""

    def __init__(self, job_id: str, seconds: float, cause: BaseException, tail: list[str]) -> None:
        super().__init__(job_id, "LOST", f"the Ray cluster stopped answering for {seconds:.0f}s "
                         f"({type(cause).__name__}: {cause}); its head is gone or unreachable", tail)  # fmt: skip


@dataclass(frozen=True)
class JobInfo:
    """One Ray job as the Jobs API describes it."""

    job_id: str  # the submission id when there is one: the id the log endpoints take
    status: str
    entrypoint: str
    message: str
    start: datetime | None
    end: datetime | None
    duration_seconds: float | None
    has_logs: bool  # drivers started by `ray.init()` alone have no submission and no log API
    exit_code: int | None = None
    metadata: Mapping[str, str] = field(default_factory=dict[str, str])


@dataclass
class JobOutcome:
    """How a followed Ray job ended."""

    job_id: str
    status: str
    message: str
    duration_s: float
    lines: int
    tail: list[str] = field(default_factory=list[str])
    exit_code: int | None = None  # the entrypoint's exit code, when Ray reports it


def job_time(value: Any) -> datetime | None:
    """A Jobs API time (epoch milliseconds: `start_time`, `end_time`) as a UTC datetime; None if unset."""
    try:
        return datetime.fromtimestamp(int(value) / 1000, UTC) if value else None
    except (TypeError, ValueError):
        return None


def plain_text(line: str) -> str:
    """`line` without terminal escape sequences (colours, cursor moves)."""
    return _ANSI.sub("", line)


def parse_job(entry: Mapping[str, Any], now: datetime) -> JobInfo:
    """One job of `GET /api/jobs/` or `GET /api/jobs/{id}`."""
    start, end = job_time(entry.get("start_time")), job_time(entry.get("end_time"))
    submission = entry.get("submission_id")
    exit_code = entry.get("driver_exit_code")
    return JobInfo(
        job_id=str(submission or entry.get("job_id") or ""), status=str(entry.get("status", "UNKNOWN")),
        entrypoint=str(entry.get("entrypoint") or ""), message=str(entry.get("message") or ""), start=start,
        end=end, duration_seconds=((end or now) - start).total_seconds() if start else None,
        has_logs=bool(submission), exit_code=exit_code if isinstance(exit_code, int) else None,
        metadata={str(k): str(v) for k, v in (entry.get("metadata") or {}).items()},
    )  # fmt: skip


def parse_jobs(payload: Any, now: datetime) -> list[JobInfo]:
    """Jobs from `GET /api/jobs/`, newest first."""
    if not isinstance(payload, list):
        raise DashboardUnavailableError("the Jobs API answered something that is not a job list")
    jobs = [parse_job(entry, now) for entry in payload if isinstance(entry, Mapping)]
    oldest = datetime.min.replace(tzinfo=UTC)
    return sorted(jobs, key=lambda j: j.start or oldest, reverse=True)


def check_job_id(job_id: str) -> str:
    """Refuse ids that could not be a Ray submission id (they end up in URLs).

    Raises:
        InvalidJobIdError: naming the id and what is allowed.
    """
    if not job_id or len(job_id) > 128 or not set(job_id) <= JOB_ID_CHARS:
        raise InvalidJobIdError(f"job id {job_id!r} is not valid: use the id `dml job list` or the cluster page "
                                "shows (letters, digits, _-.:)")  # fmt: skip
    return job_id
