"""The test tiers: assignment from fixtures and module declarations, the unit guard, the timeouts that
dump hung processes, and the leftover check."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from discord_ml_tests.support.tiers import TIMEOUTS, TierViolationError, leftovers

CONFTEST = """
import pytest
pytest_plugins = ["discord_ml_tests.support.tiers"]

@pytest.fixture
def local_cluster(): ...

@pytest.fixture
def uses_cluster(local_cluster): ...

@pytest.fixture
def browser(): ...
"""


def test_tiers_come_from_fixtures_and_module_declarations(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_plain="def test_pure(): ...\ndef test_cluster(uses_cluster): ...\ndef test_browser(browser): ...",
        test_declared="import pytest\npytestmark = pytest.mark.e2e\ndef test_declared(local_cluster): ...",
    )
    items, _ = pytester.inline_genitems()
    tiers = {item.name: [m.name for m in item.iter_markers() if m.name in TIMEOUTS] for item in items}
    assert tiers == {
        "test_pure": ["unit"],  # nothing it uses brings a tier
        "test_cluster": ["integration"],  # through a fixture of a fixture
        "test_browser": ["e2e"],
        "test_declared": ["e2e"],  # the module's declaration wins over its fixture's lower tier
    }
    timeouts = {item.name: item.get_closest_marker("timeout").args[0] for item in items}  # type: ignore[union-attr]
    assert timeouts == {"test_pure": 60, "test_cluster": 300, "test_browser": 900, "test_declared": 900}


def test_tiers_run_in_order_and_a_failing_tier_stops_the_later_ones(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_mixed="def test_e2e(browser): ...\ndef test_unit_fails(): assert False\ndef test_unit(): ..."
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines(["tier unit: 2 tests in *", "*SKIPPED*not run: the unit tier failed*"])


def test_a_unit_test_that_starts_ray_fails_loudly() -> None:
    fix = r"a unit test started a process .*ray start --head.*pytest.mark.integration"
    with pytest.raises(TierViolationError, match=fix):
        subprocess.run(["ray", "start", "--head"], check=False)
    with pytest.raises(TierViolationError, match=r"raylet"):
        subprocess.Popen(["/opt/ray/raylet", "--node_ip_address=127.0.0.1"])
    with pytest.raises(TierViolationError, match=r"dagster api execute_run"):
        subprocess.Popen(["dagster", "api", "execute_run", "{}"])
    with pytest.raises(TierViolationError, match=r"fork_exec"):  # torch's and multiprocessing's spawned children
        multiprocessing.get_context("spawn").Process(target=print).start()
    with pytest.raises(TierViolationError):
        os.fork()


@pytest.mark.integration
def test_a_timeout_dumps_the_hung_processes_stacks_then_kills_them(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_hang="""
import subprocess, sys, time
import pytest

@pytest.mark.integration
@pytest.mark.timeout(4)
def test_hangs():
    code = "import time\\ndef hung_in_here():\\n    time.sleep(600)\\nhung_in_here()"
    child = subprocess.Popen([sys.executable, "-c", code])
    open("child.pid", "w").write(str(child.pid))
    time.sleep(600)
"""
    )
    started = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    assert time.monotonic() - started < 100
    result.assert_outcomes(failed=1)
    out = result.stdout.str() + result.stderr.str()
    pid = int((pytester.path / "child.pid").read_text())
    assert f"+++ pid {pid}:" in out and "hung_in_here" in out, out[-3000:]  # py-spy's dump of the child
    assert "the integration tier's limit" in out or "timeout: 4" in out
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@pytest.mark.integration
def test_leftover_processes_and_cluster_directories_are_found() -> None:
    started = time.time()
    root = Path(tempfile.gettempdir()) / f"dml-{os.getuid()}"
    root.mkdir(exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="leftover-", dir=root))
    # A process of this session that uses the directory: the process is reported, the directory is its.
    child = subprocess.Popen([sys.executable, "-c", "import time, sys; time.sleep(60)", str(directory)])
    try:
        found = leftovers(started, set(), grace=1)
        assert [line for line in found if line.startswith(f"process {child.pid}:")], found
        assert f"directory {directory}" not in found
    finally:
        child.kill()
        child.wait()
    found = leftovers(started, set(), grace=1)
    assert not [line for line in found if f" {child.pid}:" in line]
    assert f"directory {directory}" in found  # nobody uses it any more: left behind
    directory.rmdir()
