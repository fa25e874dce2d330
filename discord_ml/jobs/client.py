"""`RayJobs`: the Ray Jobs API of one cluster (submit, follow, logs, status, stop, list).

The one client the Dagster resource, the CLI, X-Ray, the log archive and the idle reaper use. Reads
go through the Jobs REST API with `httpx` (X-Ray calls them from a thread, the rest directly); `submit`
goes through Ray's SDK, which packages and uploads a local `working_dir`. `ray` is imported inside
functions: the code location imports this module at start-up.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from discord_ml.jobs.follow import LogFollower, lines_in_thread
from discord_ml.jobs.records import (
    ClusterUnreachableError,
    DashboardUnavailableError,
    InvalidJobIdError,
    JobInfo,
    JobNotFoundError,
    JobOutcome,
    RayClusterLostError,
    RayJobFailedError,
    check_job_id,
    parse_job,
    parse_jobs,
    plain_text,
)

log = logging.getLogger(__name__)


def unreachable(address: str, exc: httpx.HTTPError) -> DashboardUnavailableError:
    """The error for a dashboard that could not be reached."""
    return DashboardUnavailableError(f"Ray dashboard {address} unreachable ({type(exc).__name__}: {exc})")


def answer(response: httpx.Response, address: str, path: str, *, missing: Exception | None = None) -> Any:
    """A dashboard response's JSON.

    Raises:
        LookupError: HTTP 404 (`missing` when given).
        DashboardUnavailableError: any other error status, or a body that is not JSON.
    """
    if response.status_code == 404:
        raise missing or LookupError(f"{path} is not on this cluster's dashboard")
    if response.status_code >= 400:
        raise DashboardUnavailableError(f"Ray dashboard {address}{path} answered HTTP {response.status_code}")
    try:
        return response.json()
    except ValueError as exc:
        raise DashboardUnavailableError(f"Ray dashboard {address}{path} answered non-JSON") from exc


class Connection(Protocol):
    """What a cluster provider's `connect` returns: where the Jobs API is and how to authenticate."""

    @property
    def dashboard_url(self) -> str: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


class RayJobs:
    """The Ray Jobs API of one cluster, in the manner of `ray.job_submission.JobSubmissionClient`.

    Every method raises `DashboardUnavailableError` when the cluster's dashboard cannot be reached
    or answers nonsense, and `JobNotFoundError` (a `LookupError`) for a job the cluster does not have.
    """

    def __init__(self, address: str, *, headers: Mapping[str, str] | None = None, timeout: float = 10.0) -> None:
        """
        Args:
            address: the dashboard / Jobs API base URL, e.g. `http://127.0.0.1:8265`.
            headers: sent with every request (the cluster's bearer token).
            timeout: seconds each request may take.
        """
        self.address = address.rstrip("/")
        self.headers = dict(headers or {})
        self.timeout = timeout

    @classmethod
    def of(cls, connection: Connection, *, timeout: float = 10.0) -> RayJobs:
        """The Jobs API of a connected cluster (`ClusterProvider.connect`)."""
        return cls(connection.dashboard_url, headers=connection.headers, timeout=timeout)

    def with_timeout(self, timeout: float) -> RayJobs:
        """The same client with another per-request timeout (for callers working to a deadline)."""
        return RayJobs(self.address, headers=self.headers, timeout=timeout)

    def url(self, *, job_id: str) -> str:
        """The Ray dashboard page of a job."""
        return f"{self.address}/#/jobs/{job_id}"

    # --- submitting and following ----------------------------------------------------------------

    def submit(self, *, entrypoint: str, submission_id: str | None = None, runtime_env: Mapping[str, Any] | None = None,
               metadata: Mapping[str, str] | None = None) -> str:  # fmt: skip
        """Submit a job.

        Args:
            entrypoint: the shell command the job's driver runs.
            submission_id: the job id to use (default: Ray generates one).
            runtime_env: Ray runtime env (env_vars, a local working_dir to upload, pip...).
            metadata: string pairs recorded with the job (e.g. the Dagster run id).

        Returns:
            The job id (its submission id).

        Raises:
            DashboardUnavailableError: the Jobs API refused or could not be reached.
        """
        from ray.job_submission import JobSubmissionClient

        # Ray's SDK logs "WebSocket closed" at INFO on stderr, in the middle of the job's own lines.
        logging.getLogger("ray.dashboard.modules.job.sdk").setLevel(logging.WARNING)
        try:
            client = JobSubmissionClient(self.address, headers=self.headers)
            return client.submit_job(entrypoint=entrypoint, submission_id=submission_id,
                                     runtime_env=dict(runtime_env) if runtime_env else None,
                                     metadata=dict(metadata) if metadata else None)  # fmt: skip
        except (OSError, RuntimeError) as exc:  # requests' errors are OSErrors; Ray's own HTTP errors RuntimeErrors
            raise DashboardUnavailableError(f"Ray job could not be submitted to {self.address}: {exc}") from exc

    def follow(self, *, job_id: str, on_line: Callable[[str], None] = print, tail_lines: int = 30,
               raise_on_failure: bool = True, stop_on_interrupt: bool = True) -> JobOutcome:  # fmt: skip
        """Call `on_line` for every line the job prints (from its start), until it ends.

        Args:
            job_id: the job to follow.
            on_line: called once per stdout/stderr line, in order, without terminal colour codes.
            tail_lines: how many trailing lines to keep for the outcome / error.
            raise_on_failure: raise RayJobFailedError when the job does not succeed.
            stop_on_interrupt: stop the job when following is interrupted (Ctrl-C, a terminated
                Dagster run, an error in `on_line`), so no job is left running unwatched.

        Returns:
            The job's outcome (id, final status, message, duration, line count, last lines).

        Raises:
            RayJobFailedError: the job ended FAILED or STOPPED (when `raise_on_failure`).
            RayClusterLostError: the cluster stopped answering while the job ran.
        """
        started = time.monotonic()
        tail: deque[str] = deque(maxlen=tail_lines)
        follower = LogFollower(self.address, self.headers, job_id)
        try:
            with contextlib.closing(lines_in_thread(follower)) as lines:
                for line in lines:
                    tail.append(line)
                    on_line(line)
        except ClusterUnreachableError as exc:  # nothing left to stop the job on
            raise RayClusterLostError(job_id, exc.seconds, exc.__cause__ or exc, list(tail)) from None
        except BaseException:
            if stop_on_interrupt:
                self._stop_quietly(job_id)
            raise
        info = follower.info  # its last status poll found the job ended
        outcome = JobOutcome(
            job_id=job_id, status=str(info.get("status")),
            message=str(info.get("message") or "").split("\n", 1)[0],  # Ray appends the whole log; we keep a tail
            duration_s=time.monotonic() - started, lines=follower.count, tail=list(tail),
            exit_code=info.get("driver_exit_code"),
        )  # fmt: skip
        if raise_on_failure and outcome.status != "SUCCEEDED":
            raise RayJobFailedError(job_id, outcome.status, outcome.message, outcome.tail)
        return outcome

    def submit_and_follow(self, *, entrypoint: str, submission_id: str | None = None,
                          runtime_env: Mapping[str, Any] | None = None, metadata: Mapping[str, str] | None = None,
                          on_submitted: Callable[[str], None] | None = None, on_line: Callable[[str], None] = print,
                          tail_lines: int = 30, raise_on_failure: bool = True) -> JobOutcome:  # fmt: skip
        """`submit`, then `follow` (stopping the job if following is interrupted); `on_submitted` gets
        the job id in between. Arguments, result and errors as theirs."""
        job_id = self.submit(entrypoint=entrypoint, submission_id=submission_id, runtime_env=runtime_env,
                             metadata=metadata)  # fmt: skip
        try:
            if on_submitted is not None:
                on_submitted(job_id)
        except BaseException:
            self._stop_quietly(job_id)
            raise
        return self.follow(job_id=job_id, on_line=on_line, tail_lines=tail_lines, raise_on_failure=raise_on_failure)

    async def lines(self, *, job_id: str, heartbeat: float | None = None) -> AsyncIterator[str | None]:
        """The job's log lines as it prints them (from its start), until it ends; with `heartbeat`,
        None after that many seconds without a line, so a caller can keep its own connection alive.

        Raises:
            DashboardUnavailableError: the cluster stopped answering.
        """
        async for line in LogFollower(self.address, self.headers, check_job_id(job_id)).lines(heartbeat=heartbeat):
            yield line

    # --- reading and stopping ---------------------------------------------------------------------

    def list(self) -> list[JobInfo]:
        """Every job the cluster knows, newest first."""
        return parse_jobs(self._request("GET", "/api/jobs/"), datetime.now(UTC))

    def status(self, *, job_id: str) -> JobInfo:
        """One job's status, entrypoint, message and timing."""
        return parse_job(self._request("GET", f"/api/jobs/{quote(check_job_id(job_id))}", job_id=job_id),
                         datetime.now(UTC))  # fmt: skip

    def logs(self, *, job_id: str) -> str:
        """Everything the job has printed so far, without terminal colour codes."""
        payload = self._request("GET", f"/api/jobs/{quote(check_job_id(job_id))}/logs", job_id=job_id)
        return plain_text(str(payload.get("logs", ""))) if isinstance(payload, Mapping) else ""

    def stop(self, *, job_id: str) -> bool:
        """Ask the job to stop. Returns False when it was not running."""
        payload = self._request("POST", f"/api/jobs/{quote(check_job_id(job_id))}/stop", job_id=job_id)
        return bool(payload.get("stopped")) if isinstance(payload, Mapping) else False

    def _request(self, method: str, path: str, *, job_id: str | None = None) -> Any:
        try:
            with httpx.Client(headers=self.headers, timeout=self.timeout) as client:
                response = client.request(method, self.address + path)
        except httpx.HTTPError as exc:
            raise unreachable(self.address, exc) from exc
        missing = None
        if job_id is not None and path.endswith(quote(job_id)):
            missing = JobNotFoundError(f"no Ray job {job_id!r} on this cluster; `dml job list` or the cluster page "
                                       "lists its jobs")  # fmt: skip
        elif job_id is not None:  # the job's logs or its stop: Ray answers 404 for a job it never had
            missing = JobNotFoundError(f"{path} is not on this cluster's dashboard: no Ray job {job_id!r} here; "
                                       "`dml job list` or the cluster page lists its jobs")  # fmt: skip
        return answer(response, self.address, path, missing=missing)

    def _stop_quietly(self, job_id: str) -> None:
        try:
            self.stop(job_id=job_id)
        except Exception:  # the cluster may already be gone; the caller's error matters more
            log.warning("could not stop Ray job %s", job_id, exc_info=True)


__all__ = [
    "ClusterUnreachableError",
    "DashboardUnavailableError",
    "InvalidJobIdError",
    "JobInfo",
    "JobNotFoundError",
    "JobOutcome",
    "RayClusterLostError",
    "RayJobFailedError",
    "RayJobs",
    "check_job_id",
]
