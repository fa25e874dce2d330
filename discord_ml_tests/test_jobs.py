"""Ray Jobs API submission: every line streamed in order, failures carry the log tail."""

from __future__ import annotations

import pytest

from discord_ml.cluster.local import LocalRayCluster
from discord_ml.jobs import RayJobFailedError, submit_and_follow

pytestmark = pytest.mark.slow


def test_lines_are_streamed_in_order(local_cluster: LocalRayCluster) -> None:
    lines: list[str] = []
    script = "import time\nfor i in range(20):\n    print(f'line-{i}', flush=True)\n    time.sleep(0.02)"
    outcome = submit_and_follow(
        local_cluster.dashboard_url,
        entrypoint=f'python -c "{script}"',
        headers=local_cluster.auth_headers(),
        on_line=lines.append,
    )
    assert outcome.status == "SUCCEEDED"
    printed = [line for line in lines if line.startswith("line-")]
    assert printed == [f"line-{i}" for i in range(20)]
    assert outcome.lines == len(lines)


def test_failed_job_raises_with_its_last_lines(local_cluster: LocalRayCluster) -> None:
    with pytest.raises(RayJobFailedError) as failure:
        submit_and_follow(
            local_cluster.dashboard_url,
            entrypoint="python -c \"import sys; print('about to fail', flush=True); sys.exit(3)\"",
            headers=local_cluster.auth_headers(),
            on_line=lambda _: None,
        )
    assert failure.value.status == "FAILED"
    assert "exit code 3" in str(failure.value)
    assert "about to fail" in failure.value.tail
