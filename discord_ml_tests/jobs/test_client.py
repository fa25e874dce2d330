"""Ray Jobs API submission: every line streamed in order, failures carry the log tail."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import time

import pytest

from discord_ml.cluster.local.nodes import LocalRayCluster
from discord_ml.jobs.client import RayJobFailedError, RayJobs
from discord_ml_tests.support.hung import stacks_then_kill

pytestmark = pytest.mark.integration


def test_lines_are_streamed_in_order(local_cluster: LocalRayCluster) -> None:
    lines: list[str] = []
    script = "import time\nfor i in range(20):\n    print(f'line-{i}', flush=True)\n    time.sleep(0.02)"
    outcome = RayJobs(local_cluster.dashboard_url, headers=local_cluster.auth_headers()).submit_and_follow(
        entrypoint=f'python -c "{script}"',
        on_line=lines.append,
    )
    assert outcome.status == "SUCCEEDED"
    printed = [line for line in lines if line.startswith("line-")]
    assert printed == [f"line-{i}" for i in range(20)]
    assert outcome.lines == len(lines)


def test_lines_arrive_without_colour_codes(local_cluster: LocalRayCluster) -> None:
    lines: list[str] = []
    # A task's output comes back through the driver with Ray's coloured `(task pid=…)` prefix.
    script = (
        "import ray; ray.init()\n"
        "@ray.remote\ndef task(): print('from-a-task', flush=True)\n"
        "ray.get(task.remote()); print('\\x1b[31mred\\x1b[0m', flush=True)"
    )
    jobs = RayJobs(local_cluster.dashboard_url, headers=local_cluster.auth_headers())
    outcome = jobs.submit_and_follow(entrypoint=f"python -c {shlex.quote(script)}", on_line=lines.append)
    assert outcome.status == "SUCCEEDED"
    assert "red" in lines and any(line.startswith("(task pid=") and "from-a-task" in line for line in lines), lines
    assert not any("\x1b" in line for line in lines)


def test_failed_job_raises_with_its_last_lines(local_cluster: LocalRayCluster) -> None:
    with pytest.raises(RayJobFailedError) as failure:
        RayJobs(local_cluster.dashboard_url, headers=local_cluster.auth_headers()).submit_and_follow(
            entrypoint="python -c \"import sys; print('about to fail', flush=True); sys.exit(3)\"",
            on_line=lambda _: None,
        )
    assert failure.value.status == "FAILED"
    assert "exit code 3" in str(failure.value)
    assert "about to fail" in failure.value.tail


FOLLOW_AND_WAIT = """
import faulthandler, signal, sys
faulthandler.register(signal.SIGUSR1, all_threads=True)
from discord_ml.jobs.client import RayJobs
RayJobs(sys.argv[1], headers={"Authorization": sys.argv[2]}).submit_and_follow(
    entrypoint="python -c \\"import time; print('started', flush=True); time.sleep(300)\\"",
    on_line=lambda line: print(line, flush=True), on_submitted=lambda job_id: print("JOB", job_id, flush=True))
"""


def test_interrupting_the_follower_stops_the_ray_job(local_cluster: LocalRayCluster) -> None:
    from ray.job_submission import JobSubmissionClient

    follower = subprocess.Popen(
        [
            sys.executable,
            "-c",
            FOLLOW_AND_WAIT,
            local_cluster.dashboard_url,
            local_cluster.auth_headers()["Authorization"],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert follower.stdout is not None
    job_id = None
    for line in follower.stdout:
        if line.startswith("JOB "):
            job_id = line.split()[1]
        if line.strip() == "started":
            break
    assert job_id is not None
    follower.send_signal(signal.SIGINT)  # Ctrl-C, or a terminated Dagster run
    try:
        follower.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the follower did not exit within 60 s of SIGINT; its stacks:\n{stacks_then_kill(follower)}")
    client = JobSubmissionClient(local_cluster.dashboard_url, headers=local_cluster.auth_headers())
    deadline = time.monotonic() + 30
    while str(client.get_job_status(job_id)) not in ("STOPPED", "FAILED") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert str(client.get_job_status(job_id)) == "STOPPED"
