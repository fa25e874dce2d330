"""Process-level helpers for the local backend: free ports, detached process groups, liveness
from /proc (zombies count as gone), finding a cluster's processes by a marker in their command line."""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path

LOCALHOST = "127.0.0.1"
_PORT_FLOOR = 20000


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(count: int, *, exclude: Collection[int] = ()) -> list[int]:
    """`count` distinct TCP ports free on 127.0.0.1, chosen *below* the kernel's ephemeral range.

    Ports from `bind(0)` are ephemeral: the kernel may hand them out again as the source port of
    an outgoing connection (Ray makes many) before our raylet binds them. Holding every probe
    socket until the batch is complete keeps the batch free of repeats; `exclude` keeps out ports
    handed out earlier that their process has not bound yet.
    """
    rng = random.SystemRandom()
    high = min(_ephemeral_floor(), 65535)
    held: list[socket.socket] = []
    try:
        while len(held) < count:
            port = rng.randrange(_PORT_FLOOR, high)
            if port in exclude:
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((LOCALHOST, port))
            except OSError:
                sock.close()
                continue
            held.append(sock)
        return [int(s.getsockname()[1]) for s in held]
    finally:
        for sock in held:
            sock.close()


def cluster_dir_prefix(name: str, root: Path | None = None) -> Path:
    """Where a cluster's directory starts: `<tmp>/dml-<uid>/<first 8 chars of name>-`.

    Ray puts Unix sockets at `<temp dir>/session_<date>_<pid>/sockets/dash_MetricsHead`, and
    AF_UNIX paths are limited to 107 bytes: the full cluster name does not fit.
    """
    base = root or Path(tempfile.gettempdir()) / f"dml-{os.getuid()}"
    return base / f"{name[:8]}-"


def ray_executable() -> str:
    """The `ray` CLI of this interpreter's environment (never one found elsewhere on PATH)."""
    candidate = Path(sys.executable).parent / "ray"
    if not candidate.exists():
        raise FileNotFoundError(f"{candidate} not found; install discord_ml with its dependencies (ray[default])")
    return str(candidate)


def _cmdline(pid: int | str) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def _environ(pid: int | str) -> str:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def processes_using(marker: str) -> list[int]:
    """PIDs whose command line or environment mentions `marker` (a cluster's unique directory).

    The environment finds what a cluster started in a session of its own, such as Ray job drivers:
    they inherit the cluster's `RAY_AUTH_TOKEN_PATH` and outlive a killed head otherwise.
    """
    me = os.getpid()
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit()
        and int(entry.name) != me
        and (marker in (_cmdline(entry.name) or "") or marker in _environ(entry.name))
    ]


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) of `pid` from /proc, or None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces
    return fields[0], int(fields[2])


def process_start(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot): with the pid, it names one process even after
    the pid is reused. None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def same_process_alive(pid: int, started: int | None) -> bool:
    """Whether the process that had `pid` and started at `started` still runs."""
    return pid_alive(pid) and (started is None or process_start(pid) == started)


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie counts as gone: whoever reaps it, it does nothing)."""
    stat = _proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def live_groups(pgids: Iterable[int]) -> set[int]:
    """Which of `pgids` still have a live process (one pass over /proc for all of them)."""
    wanted, live = set(pgids), set()
    if not wanted:
        return live
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None and stat[1] in wanted and stat[0] != "Z":
                live.add(stat[1])
    return live


def group_alive(pgid: int) -> bool:
    """Whether any live process remains in process group `pgid`."""
    return bool(live_groups([pgid]))


_TRAMPOLINE = (
    "import subprocess, sys\n"
    "log = open(sys.argv[1], 'ab')\n"
    "p = subprocess.Popen(sys.argv[2:], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,"
    " start_new_session=True)\n"
    "print(p.pid)\n"
)


def spawn_detached(argv: list[str], *, log: Path, env: dict[str, str]) -> int:
    """Start `argv` in a new session that no process of ours owns; return its pid (== its pgid).

    A short-lived trampoline starts it and exits, so the node outlives whoever created the cluster
    (`dml cluster create` returns; a Dagster step creates, another process deletes) and never
    lingers as our zombie.
    """
    out = subprocess.run(
        [sys.executable, "-c", _TRAMPOLINE, str(log), *argv], env=env, capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


def log_tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a process's log, for error messages ("(no log)" when unreadable)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send `sig` to a process group; one that is already gone (or not ours to signal) is left be."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def is_ours(pid: int, markers: tuple[str, ...]) -> bool:
    """Whether `pid`'s command line mentions one of `markers` (it is still the process we started)."""
    cmdline = _cmdline(pid)
    return cmdline is not None and any(marker in cmdline for marker in markers)


def wait_gone(groups: list[int], marker: str | None = None, timeout: float = 10.0) -> None:
    """Block until the process groups and every process using `marker` have exited."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not live_groups(groups) and not (marker and processes_using(marker)):
            return
        time.sleep(0.1)


@contextlib.contextmanager
def file_lock(path: Path, *, timeout: float, holder: str) -> Iterator[None]:
    """Hold an exclusive lock on `path` (released by the kernel if this process dies).

    Raises:
        TimeoutError: `holder` held it for `timeout` seconds.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{holder} and has held {path} for over {timeout:.0f} s; wait for it, or stop the process "
                        f"that holds it (fuser {path})"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_summary() -> str:
    """ "load average 3.1 on 2 cores", for messages about a slow start."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return f"{os.cpu_count()} cores"
    return f"load average {load:.1f} on {os.cpu_count()} cores"
