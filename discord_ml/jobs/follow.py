"""Following a Ray job's driver log line by line while it runs, with nothing lost at the end."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import queue
import threading
import time
from collections.abc import AsyncIterator, Generator
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from discord_ml.jobs.records import TERMINAL_STATES, ClusterUnreachableError, plain_text

LOG_POLL_S = 0.1  # how often the head re-reads the driver's log for new lines
STATUS_INTERVAL_S = 0.5
STATUS_TIMEOUT_S = 10.0
# The head has refused connections for this long: the cluster is gone. A head that answers too
# slowly (a busy machine) gets three times as long.
LOST_AFTER_S = 20.0


class LineSplitter:
    """Bytes in any chunking → complete text lines, UTF-8 decoded across chunk boundaries."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self.received = 0  # bytes fed so far

    def feed(self, data: bytes) -> list[str]:
        """The lines `data` completes, without colour codes."""
        self.received += len(data)
        self._pending += self._decoder.decode(data)
        *complete, self._pending = self._pending.split("\n")
        return [plain_text(line) for line in complete]

    def rest(self) -> list[str]:
        """The unterminated last line, if any (call once, at the end)."""
        rest, self._pending = self._pending + self._decoder.decode(b"", final=True), ""
        return [plain_text(rest)] if rest else []


class LogFollower:
    """Follows one job's driver log through the State API's log stream until the job ends.

    Ray's own job tail (`tail_job_logs`) re-reads the log once a second, so a line waits up to a
    second before anything else happens; the State API streams the same file at `LOG_POLL_S`.
    Once the job has ended, the part of the file the stream had not delivered is read whole, so
    no line is lost however the stream behaved.
    """

    def __init__(self, address: str, headers: dict[str, str], job_id: str) -> None:
        self.base, self.headers, self.job_id = address, headers, job_id
        self.node_id = ""  # the driver's node, known once the job runs (the State API asks for it)
        self.info: dict[str, Any] = {}  # the Jobs API's last record of the job (status, message, exit code)
        self.count = 0  # lines yielded
        self._splitter = LineSplitter()
        self._queue: asyncio.Queue[str] = asyncio.Queue()

    async def lines(self, *, heartbeat: float | None = None,
                    stop: threading.Event | None = None) -> AsyncIterator[str | None]:  # fmt: skip
        """Each line as the driver prints it; None after `heartbeat` quiet seconds. Ends early, within
        one status poll, once `stop` is set.

        Raises:
            ClusterUnreachableError: the head stopped answering for its patience.
        """
        timeout = httpx.Timeout(STATUS_TIMEOUT_S, read=None)  # the stream may stay quiet for hours
        async with httpx.AsyncClient(headers=self.headers, timeout=timeout) as client:
            stream: asyncio.Task[None] | None = None
            unreachable_since: float | None = None
            quiet_since = time.monotonic()
            try:
                while True:
                    if stop is not None and stop.is_set():
                        return
                    now = time.monotonic()
                    try:
                        self.info = await _get_json(client, f"{self.base}/api/jobs/{quote(self.job_id)}")
                        status = str(self.info.get("status"))
                        self.node_id = str(self.info.get("driver_node_id") or "")
                        unreachable_since = None
                    except (httpx.HTTPError, ValueError) as exc:
                        unreachable_since = unreachable_since or now
                        patience = LOST_AFTER_S if isinstance(exc, httpx.ConnectError) else 3 * LOST_AFTER_S
                        if now - unreachable_since > patience:
                            raise ClusterUnreachableError(patience) from exc
                        status = "UNKNOWN"
                    if status in TERMINAL_STATES:
                        break
                    if self.node_id and (stream is None or stream.done()):
                        stream = asyncio.create_task(self._stream(client))  # (re)started: skips what we have
                    poll_at = now + STATUS_INTERVAL_S
                    while (left := poll_at - time.monotonic()) > 0:
                        try:
                            line = await asyncio.wait_for(self._queue.get(), timeout=left)
                        except TimeoutError:
                            break
                        quiet_since = time.monotonic()
                        yield self._counted(line)
                    if heartbeat is not None and time.monotonic() - quiet_since >= heartbeat:
                        quiet_since = time.monotonic()
                        yield None
            finally:
                if stream is not None:
                    stream.cancel()  # the stream never ends by itself: the head keeps polling the file
                    with contextlib.suppress(asyncio.CancelledError):
                        await stream
            await self._read_rest(client)
        while not self._queue.empty():
            yield self._counted(self._queue.get_nowait())
        for line in self._splitter.rest():
            yield self._counted(line)

    def _counted(self, line: str) -> str:
        self.count += 1
        return line

    def _put(self, data: bytes) -> None:
        for line in self._splitter.feed(data):
            self._queue.put_nowait(line)

    async def _read_rest(self, client: httpx.AsyncClient) -> None:
        """What the stream had not delivered: from the driver's log file, else the Jobs API's copy
        (a job that failed before its driver started has no file)."""
        with contextlib.suppress(httpx.HTTPError, ValueError):
            if self.node_id:
                response = await client.get(self._url("file"))
                if response.status_code == 200:
                    self._put(response.content[self._splitter.received :])
                    return
            if self._splitter.received == 0:
                response = await client.get(f"{self.base}/api/jobs/{quote(self.job_id)}/logs")
                if response.status_code == 200:
                    self._put(str(response.json().get("logs", "")).encode())

    async def _stream(self, client: httpx.AsyncClient) -> None:
        skip = self._splitter.received  # a stream starts at byte 0
        try:
            async with client.stream("GET", f"{self._url('stream')}&interval={LOG_POLL_S}") as response:
                if response.status_code != 200:
                    return  # the driver's log does not exist yet; the next status poll retries
                async for raw in response.aiter_raw():
                    data, skip = raw[skip:], max(0, skip - len(raw))
                    if data:
                        self._put(data)
        except httpx.HTTPError:
            pass  # the head went away or restarted: the status poll decides which

    def _url(self, media: str) -> str:
        query = urlencode({"submission_id": self.job_id, "node_id": self.node_id, "lines": -1})
        return f"{self.base}/api/v0/logs/{media}?{query}"


def lines_in_thread(follower: LogFollower) -> Generator[str]:
    """The follower's lines, followed on a thread of its own and handed over to the caller's.

    The caller's thread only ever waits on a queue with a timeout, so Ctrl-C, SIGTERM or a terminated
    Dagster run interrupt it at once, whatever the event loop is doing (asyncio's own Ctrl-C handling
    cancels a task, and a cancellation can be swallowed by a wait that completes at the same moment).
    Closing the iterator stops the follower within one status poll.

    Raises:
        ClusterUnreachableError: as `LogFollower.lines`, and whatever else stopped the follower.
    """
    handoff: queue.Queue[object] = queue.Queue()
    stop = threading.Event()

    async def pump() -> None:
        async for line in follower.lines(stop=stop):
            if line is not None:
                handoff.put(line)

    def run() -> None:
        try:
            asyncio.run(pump())
            handoff.put(_END)
        except BaseException as exc:  # handed to the caller's thread, which raises it
            handoff.put(exc)

    threading.Thread(target=run, name=f"follow {follower.job_id}", daemon=True).start()
    try:
        while True:
            try:
                item = handoff.get(timeout=0.5)
            except queue.Empty:
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield str(item)
    finally:
        stop.set()


_END = object()


async def _get_json(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    response = await client.get(url)
    response.raise_for_status()
    return dict(response.json())
