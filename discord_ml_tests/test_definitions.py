"""The code location loads, validates with Dagster's own CLI, and stays light at import time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from discord_ml.definitions import defs

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("ray", "torch", "torchrec", "fbgemm_gpu", "kubernetes", "xgboost")


def test_definitions_wire_the_platform_job() -> None:
    job = defs.resolve_job_def("platform_check")
    assert [node.name for node in job.nodes_in_topological_order] == ["ray_cluster_check"]
    assert defs.resolve_assets_def("ray_cluster_check").key == dg.AssetKey("ray_cluster_check")


@pytest.mark.integration
@pytest.mark.parametrize("home", ["project", "unset"])
def test_dagster_definitions_validate_passes(tmp_path: Path, home: str) -> None:
    """With the scripts' DAGSTER_HOME, and in a plain shell where it is unset."""
    (tmp_path / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    if home == "project":
        env["DAGSTER_HOME"] = str(tmp_path)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful" in result.stdout + result.stderr


@pytest.mark.integration
def test_code_location_import_does_not_load_heavy_libraries() -> None:
    probe = (
        "import json, sys; import discord_ml.definitions, discord_ml.cli.main; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_instance_config_is_a_valid_local_instance(tmp_path: Path) -> None:
    (tmp_path / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        assert instance.run_monitoring_enabled
        coordinator = instance.run_coordinator
        assert type(coordinator).__name__ == "QueuedRunCoordinator"
        assert coordinator.get_run_queue_config().max_concurrent_runs == 2  # pyright: ignore[reportAttributeAccessIssue]
        assert str(tmp_path) in str(instance.root_directory)
    finally:
        instance.dispose()
