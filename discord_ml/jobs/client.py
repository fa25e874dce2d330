"""Ray Jobs API: submit an entrypoint to a cluster's dashboard and follow it line by line.

`ray` is imported inside functions: the code location imports this module at start-up.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx

TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
LOG_POLL_S = 0.1  # how often the head re-reads the driver's log for new lines
STATUS_INTERVAL_S = 0.5
STATUS_TIMEOUT_S = 10.0
# The head has refused connections for this long: the cluster is gone. A head that answers too
# slowly (a busy machine) gets three times as long.
LOST_AFTER_S = 20.0
# Ray colours the `(RayTrainWorker pid=…)` prefixes of worker output: escape codes mean nothing in an
# event log, a file or a web page.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def job_time(value: Any) -> datetime | None:
    """A Jobs API time (epoch milliseconds: `start_time`, `end_time`) as a UTC datetime; None if unset."""
    try:
        return datetime.fromtimestamp(int(value) / 1000, UTC) if value else None
    except (TypeError, ValueError):
        return None


def plain_text(line: str) -> str:
    """`line` without terminal escape sequences (colours, cursor moves)."""
    return _ANSI.sub("", line)


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


class _UnreachableError(Exception):
    """Raised by the follower when the head has not answered for its patience (`seconds`)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no answer for {seconds:.0f}s")
        self.seconds = seconds


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


def submit_and_follow(
    dashboard_url: str,
    *,
    entrypoint: str,
    headers: Mapping[str, str] | None = None,
    runtime_env: Mapping[str, Any] | None = None,
    on_line: Callable[[str], None] = print,
    on_submitted: Callable[[str], None] | None = None,
    submission_id: str | None = None,
    tail_lines: int = 30,
    raise_on_failure: bool = True,
) -> JobOutcome:
    """Submit `entrypoint` as a Ray job and call `on_line` for every log line as it is produced.

    Args:
        dashboard_url: the cluster's dashboard / Jobs API base URL.
        entrypoint: shell command run by the job driver.
        headers: auth headers (the cluster's bearer token).
        runtime_env: Ray runtime env (env_vars, working_dir, py_modules...).
        on_line: called once per stdout/stderr line, in order, without terminal colour codes.
        on_submitted: called with the job id right after submission.
        submission_id: the job id to use (default: Ray generates one).
        tail_lines: how many trailing lines to keep for the outcome / error.
        raise_on_failure: raise RayJobFailedError when the job does not succeed.

    Returns:
        The job's outcome (id, final status, message, duration, line count, last lines).

    Raises:
        RayJobFailedError: the job ended FAILED or STOPPED (when `raise_on_failure`).
    """
    from ray.job_submission import JobSubmissionClient

    # Ray's SDK logs "WebSocket closed" at INFO on stderr, in the middle of the job's own lines.
    logging.getLogger("ray.dashboard.modules.job.sdk").setLevel(logging.WARNING)
    client = JobSubmissionClient(dashboard_url, headers=dict(headers or {}))
    started = time.monotonic()
    job_id = client.submit_job(
        entrypoint=entrypoint, runtime_env=dict(runtime_env) if runtime_env else None, submission_id=submission_id
    )
    if on_submitted is not None:
        on_submitted(job_id)
    tail: deque[str] = deque(maxlen=tail_lines)
    count = 0

    def emit(raw: str) -> None:
        nonlocal count
        line = plain_text(raw)
        count += 1
        tail.append(line)
        on_line(line)

    try:
        follower = _LogFollower(dashboard_url, dict(headers or {}), job_id)
        follower.run(emit)
    except _UnreachableError as exc:  # nothing left to stop the job on
        raise RayClusterLostError(job_id, exc.seconds, exc.__cause__ or exc, list(tail)) from None
    except BaseException:
        # Interrupted (the Dagster run was terminated, Ctrl-C) or the cluster was lost: never leave
        # the job running on the cluster.
        _stop_quietly(client, job_id)
        raise
    info = follower.info  # its last status poll found the job ended
    outcome = JobOutcome(
        job_id=job_id,
        status=str(info.get("status")),
        message=str(info.get("message") or "").split("\n", 1)[0],  # Ray appends the whole log; we keep a tail
        duration_s=time.monotonic() - started,
        lines=count,
        tail=list(tail),
        exit_code=info.get("driver_exit_code"),
    )
    if raise_on_failure and outcome.status != "SUCCEEDED":
        raise RayJobFailedError(job_id, outcome.status, outcome.message, outcome.tail)
    return outcome


def job_url(dashboard_url: str, job_id: str) -> str:
    """The Ray dashboard page of a job."""
    return f"{dashboard_url}/#/jobs/{job_id}"


def _stop_quietly(client: Any, job_id: str) -> None:
    try:
        client.stop_job(job_id)
    except Exception:  # the cluster may already be gone; the caller's error matters more
        logging.getLogger(__name__).warning("could not stop Ray job %s", job_id, exc_info=True)


class _LogFollower:
    """Follows a job's driver log through the State API's log stream until the job ends.

    Ray's own job tail (`tail_job_logs`) re-reads the log once a second, so a line waits up to a
    second before anything else happens; the State API streams the same file at `LOG_POLL_S`.
    Once the job has ended, the part of the file the stream had not delivered is read whole, so
    no line is lost however the stream behaved.
    """

    def __init__(self, dashboard_url: str, headers: dict[str, str], job_id: str) -> None:
        self.base, self.headers, self.job_id = dashboard_url, headers, job_id
        self.node_id = ""  # the driver's node, known once the job runs (the State API asks for it)
        self.info: dict[str, Any] = {}  # the Jobs API's last record of the job (status, message, exit code)
        self.received = 0  # bytes of the log handed to `emit` so far
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def run(self, emit: Callable[[str], None]) -> None:
        asyncio.run(self._follow(emit))

    async def _follow(self, emit: Callable[[str], None]) -> None:
        timeout = httpx.Timeout(STATUS_TIMEOUT_S, read=None)  # the stream may stay quiet for hours
        async with httpx.AsyncClient(headers=self.headers, timeout=timeout) as client:
            stream: asyncio.Task[None] | None = None
            unreachable_since: float | None = None
            try:
                while True:
                    now = time.monotonic()
                    try:
                        self.info = await _get_json(client, f"{self.base}/api/jobs/{self.job_id}")
                        status = str(self.info.get("status"))
                        self.node_id = str(self.info.get("driver_node_id") or "")
                        unreachable_since = None
                    except (httpx.HTTPError, ValueError) as exc:
                        unreachable_since = unreachable_since or now
                        patience = LOST_AFTER_S if isinstance(exc, httpx.ConnectError) else 3 * LOST_AFTER_S
                        if now - unreachable_since > patience:
                            raise _UnreachableError(patience) from exc
                        status = "UNKNOWN"
                    if status in TERMINAL_STATES:
                        break
                    if self.node_id and (stream is None or stream.done()):
                        stream = asyncio.create_task(self._stream(client, emit))  # (re)started: skips what we have
                    await asyncio.sleep(STATUS_INTERVAL_S)
            finally:
                if stream is not None:
                    stream.cancel()  # the stream never ends by itself: the head keeps polling the file
                    with contextlib.suppress(asyncio.CancelledError):
                        await stream
            if self.node_id:
                response = await client.get(self._url("file"))
                if response.status_code == 200:
                    self._feed(response.content[self.received :], emit)
        if self._pending:
            emit(self._pending)

    async def _stream(self, client: httpx.AsyncClient, emit: Callable[[str], None]) -> None:
        skip = self.received  # a stream starts at byte 0
        try:
            async with client.stream("GET", f"{self._url('stream')}&interval={LOG_POLL_S}") as response:
                if response.status_code != 200:
                    return  # the driver's log does not exist yet; the next status poll retries
                async for raw in response.aiter_raw():
                    data, skip = raw[skip:], max(0, skip - len(raw))
                    if data:
                        self._feed(data, emit)
        except httpx.HTTPError:
            pass  # the head went away or restarted: the status poll decides which

    def _url(self, media: str) -> str:
        query = urlencode({"submission_id": self.job_id, "node_id": self.node_id, "lines": -1})
        return f"{self.base}/api/v0/logs/{media}?{query}"

    def _feed(self, data: bytes, emit: Callable[[str], None]) -> None:
        self.received += len(data)
        self._pending += self._decoder.decode(data)
        *complete, self._pending = self._pending.split("\n")
        for line in complete:
            emit(line)


async def _get_json(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    response = await client.get(url)
    response.raise_for_status()
    return dict(response.json())
