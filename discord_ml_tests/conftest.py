"""Shared fixtures: one real local Ray cluster per test session, a real Dagster instance per test."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from discord_ml.cluster.local.nodes import LocalRayCluster
from discord_ml.cluster.spec import ClusterSpec
from discord_ml_tests.support.k8s_emulator import KubeEmulator, serve
from discord_ml_tests.support.schemas import require_crds

pytest_plugins = ["discord_ml_tests.support.tiers", "pytester"]


def pytest_configure(config: pytest.Config) -> None:
    """Let Ctrl-C reach the processes the tests start.

    A shell without job control starts background commands (`./scripts/test &`, a CI runner's
    script) with SIGINT ignored, and children inherit that: Python then installs no KeyboardInterrupt,
    and the tests that press Ctrl-C on a `dml` would wait on a process that never hears it. A Python
    handler here is reset to the default in each child at exec.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def _isolated_platform_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keep platform state (registry, tokens) out of the developer's home directory, and the
    developer's own DML_* settings out of the tests (snapshots and defaults must not depend on them)."""
    home = tmp_path_factory.mktemp("dml-home")
    saved = {k: v for k, v in os.environ.items() if k.startswith("DML_") and k != "DML_KUBERAY_CRDS"}
    for key in saved:
        del os.environ[key]
    os.environ["DML_HOME"] = str(home)
    yield home
    os.environ.pop("DML_HOME", None)
    os.environ.update(saved)


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[LocalRayCluster]:
    """A real local Ray cluster (head + 2 worker raylets) shared by the tests that only submit jobs."""
    spec = ClusterSpec.build(name="test-session", owner="pytest", workers=2, head_memory="2Gi", ttl="1h")
    with LocalRayCluster(spec) as cluster:
        yield cluster


@pytest.fixture
def kuberay_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeEmulator]:
    """The Kubernetes API emulator, with the kuberay backend pointed at it as a user would (KUBECONFIG)."""
    yield from _emulated(tmp_path, monkeypatch, mode="run")


@pytest.fixture
def kube_status_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeEmulator]:
    """The emulator in status-only mode (its operator marks clusters ready and starts no Ray), with the
    kuberay backend pointed at it (KUBECONFIG): the API's behaviour, for the unit tier."""
    yield from _emulated(tmp_path, monkeypatch, mode="status")


def _emulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, mode: str) -> Iterator[KubeEmulator]:
    require_crds()
    with serve(tmp_path, mode=mode) as (emulator, kubeconfig):
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.setenv("DML_KUBERAY_DASHBOARD", "service-ip")
        yield emulator


@pytest.fixture
def dagster_instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """A real, SQLite-backed Dagster instance in a temp dir."""
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield instance
