"""`dagster dev` (the README's way to open the UI) loads the code location with no errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from discord_ml.cluster.local.processes import free_ports

REPO = Path(__file__).resolve().parents[1]
QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message }
    ... on RepositoryLocation { repositories { jobs { name } } } } } } } }"""

pytestmark = pytest.mark.e2e


def _graphql(port: int) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": QUERY}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.parametrize("home", ["project", "unset"])
def test_dagster_dev_loads_the_code_location(tmp_path: Path, home: str) -> None:
    """With the project's DAGSTER_HOME, and from a plain shell (DAGSTER_HOME unset: dagster dev keeps
    its state in a temp dir it removes on exit)."""
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    if home == "project":
        (tmp_path / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
        env["DAGSTER_HOME"] = str(tmp_path)
    [port] = free_ports(1)
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster"), "dev", "-w", "workspace.yaml", "-p", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # dagster dev spawns a webserver, a daemon and code servers
    )
    try:
        deadline, entries = time.monotonic() + 180, []
        while time.monotonic() < deadline:
            try:
                entries = _graphql(port)["data"]["workspaceOrError"]["locationEntries"]  # type: ignore[index]
            except OSError:
                entries = []
            if entries and entries[0]["loadStatus"] == "LOADED":
                break
            time.sleep(1)
        [entry] = entries
        assert entry["name"] == "discord_ml"
        location = entry["locationOrLoadError"]
        assert location["__typename"] == "RepositoryLocation", location
        jobs = {job["name"] for repo in location["repositories"] for job in repo["jobs"]}
        assert "platform_check" in jobs
    finally:
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: dagster dev stops its processes and its temp dir
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
