"""Test tiers, assigned from what a test uses; a guard for the unit tier; per-tier timeouts that dump
the hung processes' stacks; and one leftover check for the whole session.

A test's tier is the highest of: the tier of each fixture it uses (directly or through other
fixtures, see `FIXTURE_TIERS`) and a tier marker its module declares (`pytestmark =
pytest.mark.e2e`). Everything else is `unit`, and a unit test that starts any process (`ray start`,
a raylet, a Dagster run worker, a CLI subprocess, a multiprocessing child) fails with `TierViolationError`,
so a test cannot land in the wrong tier without the run saying so.
"""

from __future__ import annotations

import _posixsubprocess
import contextlib
import faulthandler
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

TIERS = ("unit", "integration", "e2e", "kube")
TIMEOUTS = {"unit": 60, "integration": 300, "e2e": 900, "kube": 900}
# Fixtures that bring a tier with them. A fixture that starts Ray, a Dagster run or a server process
# belongs here; the unit guard names any that is missing.
FIXTURE_TIERS = {
    "local_cluster": "integration",  # a real local Ray cluster for the session
    "kuberay_api": "integration",  # the emulator whose operator starts real local Ray clusters
    "dagster_instance": "integration",  # a real Dagster instance, for runs executed in process
    "xray_world": "integration",  # real local clusters behind X-Ray
    "browser": "e2e",  # Chromium driven by Playwright
    "testbed": "kube",  # the real control plane and KubeRay operator (support/kube)
}
# Helpers the interpreter starts for itself (torch's multiprocessing spawn) and ends at its exit.
LIVES_WITH_PYTEST = ("multiprocessing.resource_tracker",)
# Set in every process the suite starts (inherited through daemonizing), so the leftover check
# finds exactly this session's processes and nobody else's.
SESSION_MARK = "DISCORD_ML_TEST_SESSION"  # not DML_*: the suite clears those for isolation


class TierViolationError(AssertionError):
    """A unit test did something only a higher tier may do."""


def tier_of(item: pytest.Item) -> str:
    """The tier of one collected test: the highest its fixtures and its markers ask for."""
    wanted = [FIXTURE_TIERS[name] for name in getattr(item, "fixturenames", ()) if name in FIXTURE_TIERS]
    wanted += [tier for tier in TIERS if item.get_closest_marker(tier)]
    return max(wanted, key=TIERS.index, default="unit")


def pytest_configure(config: pytest.Config) -> None:
    for tier in TIERS:
        config.addinivalue_line("markers", f"{tier}: the {tier} tier (assigned by discord_ml_tests/support/tiers.py)")
    # A mark of this session's own: a pytest run inside a test (pytester) must not take the outer
    # session's processes for its leftovers.
    config.stash[_outer_mark] = os.environ.get(SESSION_MARK)
    os.environ[SESSION_MARK] = uuid.uuid4().hex
    config.stash[_started] = (time.time(), set(_temp_dirs()))


def pytest_unconfigure(config: pytest.Config) -> None:
    outer = config.stash.get(_outer_mark, None)
    if outer is None:
        os.environ.pop(SESSION_MARK, None)
    else:
        os.environ[SESSION_MARK] = outer


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    conflicts = []
    for item in items:
        tier = tier_of(item)
        declared = {tier for tier in TIERS if item.get_closest_marker(tier)}
        if declared - {tier}:  # `-m` would select it in two tiers
            conflicts.append(f"{item.nodeid}: declares {sorted(declared)} but its fixtures make it {tier}")
        if not item.get_closest_marker(tier):
            item.add_marker(getattr(pytest.mark, tier))
        if not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(TIMEOUTS[tier]))
        item.stash[_tier] = tier
    if conflicts:
        raise pytest.UsageError("a test belongs to one tier; remove the lower declaration:\n" + "\n".join(conflicts))
    # Several tiers in one run go in order (file order within each), so they share the session's
    # clusters and a failing tier stops the later ones (see pytest_runtest_setup).
    items.sort(key=lambda item: TIERS.index(item.stash[_tier]))


_tier = pytest.StashKey[str]()
_started = pytest.StashKey[tuple[float, set[Path]]]()
_outer_mark = pytest.StashKey[str | None]()
_failed_tier = pytest.StashKey[str]()
_clock = pytest.StashKey[dict[str, list[float]]]()  # tier -> [first start, last end, tests]
_durations = pytest.StashKey[dict[str, list[tuple[float, str]]]]()  # tier -> (seconds, "when nodeid")
SLOWEST = 15


# --- several tiers in one run: in order, each timed, none after a failing one ----------------------


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    tier = item.stash.get(_tier, "unit")
    failed = item.config.stash.get(_failed_tier, None)
    if failed is not None and TIERS.index(tier) > TIERS.index(failed):
        pytest.skip(f"not run: the {failed} tier failed")
    clock = item.config.stash.setdefault(_clock, {})
    clock.setdefault(tier, [time.monotonic(), 0.0, 0])[2] += 1


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    tier = item.stash.get(_tier, "unit")
    if report.failed:
        item.config.stash.setdefault(_failed_tier, tier)
    if report.when == "teardown" and tier in item.config.stash.get(_clock, {}):
        item.config.stash[_clock][tier][1] = time.monotonic()
    durations = item.config.stash.setdefault(_durations, {}).setdefault(tier, [])
    durations.append((report.duration, f"{report.when} {item.nodeid}"))
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    clock = terminalreporter.config.stash.get(_clock, None) or {}
    durations = terminalreporter.config.stash.get(_durations, None) or {}
    for tier in clock:
        terminalreporter.write_sep("-", f"the {SLOWEST} slowest of the {tier} tier")
        for seconds, what in sorted(durations.get(tier, []), reverse=True)[:SLOWEST]:
            terminalreporter.write_line(f"{seconds:8.2f}s {what}")
    for tier, (start, end, count) in clock.items():
        terminalreporter.write_line(f"tier {tier}: {count} tests in {max(end - start, 0):.0f} s")


# --- the unit guard ------------------------------------------------------------------------------


# Short-lived tools the code itself runs (the model registry records the git commit): not servers.
HARMLESS = {"git"}


def _refuse(what: str, original: Callable[..., Any]) -> Callable[..., Any]:
    def refused(*args: Any, **kwargs: Any) -> Any:
        argv = args[0] if args else what
        shown = " ".join(os.fsdecode(a) for a in argv) if isinstance(argv, (list, tuple)) else str(argv)
        if isinstance(argv, (list, tuple)) and argv and os.path.basename(os.fsdecode(argv[0])) in HARMLESS:
            return original(*args, **kwargs)
        raise TierViolationError(
            f"a unit test started a process ({what}: {shown[:200]}); unit tests start no Ray, no Dagster run "
            "worker and no subprocess. Use a fixture that brings its tier (FIXTURE_TIERS in "
            "discord_ml_tests/support/tiers.py) or declare it in the module: pytestmark = pytest.mark.integration"
        )

    return refused


_GUARDED: list[tuple[Any, str]] = [
    (subprocess, "_fork_exec"),  # subprocess.Popen, and so `ray start`, dagster's run workers, CLIs
    (_posixsubprocess, "fork_exec"),  # multiprocessing's spawn and forkserver
    (os, "fork"),
    (os, "posix_spawn"),
    (os, "posix_spawnp"),
    (os, "system"),
]


@pytest.fixture(autouse=True)
def _unit_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """In the unit tier, starting any process fails the test loudly."""
    if request.node.stash.get(_tier, "unit") != "unit":
        yield
        return
    saved = [(owner, name, getattr(owner, name)) for owner, name in _GUARDED if hasattr(owner, name)]
    for owner, name, original in saved:
        setattr(owner, name, _refuse(f"{owner.__name__}.{name}", original))
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


# --- timeouts that say where everything hung -----------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """SIGALRM after the tier's timeout: dump this process's threads, then the Python stacks of every
    process the test started (py-spy), kill those, and fail the test."""
    if settings.method != "signal":
        return None
    tier = item.stash.get(_tier, "unit")
    before = {p.pid for p in _ours()} if tier != "unit" else set()  # a unit test starts none

    def on_timeout(signum: int, frame: Any) -> None:
        __tracebackhide__ = True
        sys.stderr.write(f"\n+++ timeout after {settings.timeout}s in {item.nodeid}: stacks of this process\n")
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        hung = [p for p in _ours() if p.pid not in before]
        for proc in hung:
            sys.stderr.write(f"\n+++ pid {proc.pid}: {_cmdline(proc)}\n{_py_stack(proc.pid)}\n")
        _kill(hung)
        message = f"timeout: {settings.timeout}s (the {tier} tier's limit); {len(hung)} process(es) it started"
        pytest.fail(f"{message} were dumped above and killed", pytrace=False)

    def cancel() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)

    item.cancel_timeout = cancel  # pyright: ignore[reportAttributeAccessIssue]  # read by pytest-timeout
    signal.signal(signal.SIGALRM, on_timeout)
    signal.setitimer(signal.ITIMER_REAL, settings.timeout)
    return True


def _py_stack(pid: int) -> str:
    spy = Path(sys.executable).parent / "py-spy"
    try:
        argv = [str(spy), "dump", "--pid", str(pid)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"(py-spy failed: {e})"
    return done.stdout or done.stderr.strip() or "(no Python stack)"


# --- one leftover check for the session ----------------------------------------------------------


def _ours() -> list[psutil.Process]:
    """Live processes carrying this session's mark, except pytest itself."""
    mark, me = os.environ.get(SESSION_MARK), os.getpid()
    if not mark:
        return []
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid == me or proc.environ().get(SESSION_MARK) != mark or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.ppid() == me and any(helper in _cmdline(proc) for helper in LIVES_WITH_PYTEST):
                continue
            found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())[:300]
    except psutil.Error:
        return "(gone)"


def _kill(procs: list[psutil.Process]) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(procs, timeout=10)


def _temp_dirs() -> Iterator[Path]:
    """Local clusters' directories (where `cluster_dir_prefix` puts them)."""
    from discord_ml.cluster.local.processes import cluster_dir_prefix

    root = cluster_dir_prefix("any").parent
    if root.is_dir():
        yield from root.iterdir()


def leftovers(started: float, dirs_before: set[Path], grace: float = 20.0) -> list[str]:
    """What the session left: its processes (after a grace period for ones still exiting) and new
    cluster directories."""
    deadline = time.monotonic() + grace
    while (procs := _ours()) and time.monotonic() < deadline:
        time.sleep(0.5)
    found = [f"process {p.pid}: {_cmdline(p)}" for p in procs]
    for directory in _temp_dirs():
        # New since the start, and used by no process: a cluster another session runs now is not ours.
        if directory not in dirs_before and directory.stat().st_mtime >= started - 1 and not _in_use(directory):
            found.append(f"directory {directory}")
    return found


def _in_use(directory: Path) -> bool:
    from discord_ml.cluster.local.processes import processes_using

    return bool(processes_using(str(directory)))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if it left a process or a cluster directory behind (and clean them up)."""
    if session.config.option.collectonly or not session.config.stash.get(_started, None):
        return  # nothing ran
    started, dirs_before = session.config.stash[_started]
    found = leftovers(started, dirs_before)
    if not found:
        return
    writer = session.config.get_terminal_writer()
    writer.sep("!", "the tests left these behind (now removed)", red=True)
    for line in found:
        writer.line(line)
    _kill(_ours())
    for line in found:
        if line.startswith("directory "):
            shutil.rmtree(line.removeprefix("directory "), ignore_errors=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
