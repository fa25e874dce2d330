"""Ray Jobs API: submit an entrypoint to a cluster's dashboard and follow it line by line.

`ray` is imported inside functions: the code location imports this module at start-up.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
# Ray colours the `(RayTrainWorker pid=…)` prefixes of worker output: escape codes mean nothing in an
# event log, a file or a web page.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def plain_text(line: str) -> str:
    """`line` without terminal escape sequences (colours, cursor moves)."""
    return _ANSI.sub("", line)


class RayJobFailedError(RuntimeError):
    """A Ray job ended in FAILED or STOPPED; the message carries its last log lines."""

    def __init__(self, job_id: str, status: str, message: str, tail: list[str]) -> None:
        self.job_id, self.status, self.tail = job_id, status, tail
        lines = "\n".join(tail)
        super().__init__(f"Ray job {job_id} ended {status}: {message}\n--- last {len(tail)} log lines ---\n{lines}")


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

    async def follow() -> None:
        pending = ""
        async for chunk in client.tail_job_logs(job_id):
            pending += chunk
            *complete, pending = pending.split("\n")
            for line in complete:
                emit(line)
        if pending:
            emit(pending)

    def emit(raw: str) -> None:
        nonlocal count
        line = plain_text(raw)
        count += 1
        tail.append(line)
        on_line(line)

    try:
        asyncio.run(follow())
    except BaseException:
        # Interrupted (the Dagster run was terminated, Ctrl-C) or the stream broke: never leave
        # the job running on the cluster.
        _stop_quietly(client, job_id)
        raise
    info = _wait_terminal(client, job_id)
    outcome = JobOutcome(
        job_id=job_id,
        status=str(info.status),
        message=(info.message or "").split("\n", 1)[0],  # Ray appends the whole log; we keep a tail
        duration_s=time.monotonic() - started,
        lines=count,
        tail=list(tail),
        exit_code=getattr(info, "driver_exit_code", None),
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


def _wait_terminal(client: Any, job_id: str, timeout: float = 30.0) -> Any:
    # The log stream closes when the driver exits; the status lags it by a moment.
    end = time.monotonic() + timeout
    info = client.get_job_info(job_id)
    while str(info.status) not in TERMINAL_STATES and time.monotonic() < end:
        time.sleep(0.2)
        info = client.get_job_info(job_id)
    return info
