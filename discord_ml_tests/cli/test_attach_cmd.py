"""`dml cluster env` and `dml cluster session`: the real `ray` CLI, `ray.init()` and the Jobs client
reach a cluster using only what these commands print (local Ray; kuberay through the emulator's
`pods/portforward`)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from discord_ml.cluster.kuberay.provider import KubeRayProvider
from discord_ml.cluster.local.provider import LocalRayProvider
from discord_ml.cluster.spec import ClusterSpec
from discord_ml.settings import get_settings
from discord_ml_tests.support.k8s_emulator import KubeEmulator

DML = [str(Path(sys.executable).parent / "dml")]


def _user_env(owner: str, **extra: str) -> dict[str, str]:
    """A user's shell: no Ray settings of its own, the venv's `ray` and `dml` on PATH."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "DML_OWNER", "DML_KUBERAY_"))}
    clean["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{clean['PATH']}"
    return {**clean, "DML_OWNER": owner, "RAY_USAGE_STATS_ENABLED": "0", **extra}


@pytest.mark.integration
def test_cluster_env_is_all_the_ray_cli_and_ray_init_need(tmp_path: Path) -> None:
    provider = LocalRayProvider()
    provider.create(ClusterSpec.build(name="cli-env", owner="alice", workers=0, head_memory="1Gi"))
    alice, bob = _user_env("alice"), _user_env("bob")  # nothing from the platform but what `env` prints
    try:
        provider.wait_ready("cli-env", timeout=180)
        printed = subprocess.run([*DML, "cluster", "env", "cli-env"], capture_output=True, text=True, timeout=60,
                                 check=True, env=alice).stdout  # fmt: skip
        connection = provider.connect("cli-env")
        token = connection.token
        assert token not in printed  # only the path to it
        env = dict(line.removeprefix("export ").split("=", 1) for line in printed.splitlines())
        assert env["RAY_ADDRESS"] == connection.address
        assert env["RAY_API_SERVER_ADDRESS"] == connection.dashboard_url
        token_file = Path(env["RAY_AUTH_TOKEN_PATH"])
        assert token_file.read_text().strip() == token
        assert token_file.stat().st_mode & 0o777 == 0o600

        script = tmp_path / "hello.py"
        script.write_text("import ray\nray.init()\nprint('nodes', len(ray.nodes()))\n")
        session = f"""set -e
eval "$(dml cluster env cli-env)"
ray job submit --working-dir {tmp_path} -- python hello.py
ray job list
ray list nodes
python -c "
import ray
from ray.job_submission import JobSubmissionClient
print('jobs seen from python', len(JobSubmissionClient().list_jobs()))
ray.init()
print('init reached', ray.get_runtime_context().gcs_address)
"
"""
        run = subprocess.run(["bash", "-c", session], capture_output=True, text=True, timeout=300, check=False,
                             env=alice)  # fmt: skip
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert "nodes 1" in run.stdout  # the job ran ray.init() on the cluster (a head only)
        assert "succeeded" in run.stdout.lower()
        assert "ALIVE" in run.stdout  # `ray list nodes`: the State API answered
        assert "jobs seen from python 1" in run.stdout
        [reached] = [line for line in run.stdout.splitlines() if line.startswith("init reached ")]
        assert reached.endswith(f":{env['RAY_ADDRESS'].rsplit(':', 1)[1]}")  # this cluster's GCS (by its node IP)
        job_id = next(word.strip("'") for line in run.stdout.splitlines() for word in line.split()
                      if word.strip("'").startswith("raysubmit_"))  # fmt: skip
        logs = subprocess.run(["bash", "-c", f'eval "$(dml cluster env cli-env)" && ray job logs {job_id}'],
                              capture_output=True, text=True, timeout=120, check=True,
                              env=alice)  # fmt: skip
        assert "nodes 1" in logs.stdout

        # Another user is refused (exit 2, saying why and what to do); --force is the admin's way.
        refused = subprocess.run([*DML, "cluster", "env", "cli-env"], capture_output=True, text=True, timeout=60,
                                 check=False, env=bob)  # fmt: skip
        assert refused.returncode == 2
        assert refused.stdout == ""
        assert "owned by 'alice', not 'bob'" in refused.stderr and "--force" in refused.stderr
        forced = subprocess.run([*DML, "cluster", "env", "cli-env", "--force", "--shell", "json"], capture_output=True,
                                text=True, timeout=60, check=True, env=bob)  # fmt: skip
        assert json.loads(forced.stdout)["RAY_AUTH_TOKEN_PATH"] == str(token_file)
    finally:
        provider.delete("cli-env")


# Ray's client proxier starts a server per client; once under a loaded suite that server's start failed
# ("Starting Ray client server failed") though the forward had carried the request to the proxier.
# That is Ray's own start-up, not the forward: one retry, and the first error is printed.
RAY_CLIENT = """
import time
import ray
# Ray's client server gives its per-connection server a fixed start-up window, which a busy machine
# can miss; Ray's own answer is to connect again.
for attempt in (1, 2, 3):
    try:
        ray.init()
        break
    except ConnectionAbortedError as exc:
        if attempt == 3:
            raise
        print("Ray Client start failed, connecting again:", exc)
        time.sleep(5)
print("client sees", ray.cluster_resources()["CPU"], "CPUs")
"""


def _read_env_block(proc: subprocess.Popen[str], count: int = 4, timeout: float = 120) -> dict[str, str]:
    """The `export` lines a running `dml cluster session` printed."""
    assert proc.stdout is not None
    env: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while len(env) < count and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        key, value = line.strip().removeprefix("export ").split("=", 1)
        env[key] = value
    assert len(env) == count, f"session printed {env}; stderr: {proc.stderr.read() if proc.stderr else ''}"
    return env


@pytest.mark.integration
def test_session_forwards_a_kuberay_cluster_to_the_laptop_until_ctrl_c(
    kuberay_api: KubeEmulator, tmp_path: Path
) -> None:
    provider = KubeRayProvider()
    provider.create(ClusterSpec.build(name="kr-session", owner="alice", workers=1, head_memory="1Gi"))
    alice, bob = _user_env("alice"), _user_env("bob")
    session = None
    try:
        provider.wait_ready("kr-session", timeout=180)
        kuberay_api.requests.clear()
        # Not the owner: refused before anything is forwarded.
        refused = subprocess.run([*DML, "cluster", "session", "kr-session", "-b", "kuberay"], capture_output=True,
                                 text=True, timeout=60, check=False, env=bob)  # fmt: skip
        assert refused.returncode == 2 and "owned by 'alice', not 'bob'" in refused.stderr
        assert not [r for r in kuberay_api.requests if r[1].endswith("/portforward")]
        # Outside the cluster without a session, the in-cluster addresses are refused, saying what to run.
        no_session = subprocess.run([*DML, "cluster", "env", "kr-session", "-b", "kuberay"], capture_output=True,
                                    text=True, timeout=60, check=False,
                                    env={**alice, "DML_KUBERAY_DASHBOARD": "port-forward"})  # fmt: skip
        assert no_session.returncode == 2 and "dml cluster session kr-session" in no_session.stderr

        session = subprocess.Popen([*DML, "cluster", "session", "kr-session", "-b", "kuberay", "--dashboard-port", "0",
                                    "--client-port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env=alice, start_new_session=True)  # fmt: skip
        printed = _read_env_block(session)
        assert printed["RAY_API_SERVER_ADDRESS"].startswith("http://127.0.0.1:")
        assert printed["RAY_ADDRESS"].startswith("ray://127.0.0.1:")
        token = provider.connect("kr-session").token
        assert Path(printed["RAY_AUTH_TOKEN_PATH"]).read_text() == token
        script = tmp_path / "hello.py"
        script.write_text("import ray\nray.init()\nprint('nodes', len(ray.nodes()))\n")
        client_script = tmp_path.parent / f"{tmp_path.name}-client.py"  # outside the job's working dir
        client_script.write_text(RAY_CLIENT)
        # Another terminal: `dml cluster env` prints the session's forwarded addresses; the real ray CLI,
        # Ray Client (`ray.init()`) and dml's own job commands (their own forwards) work through them.
        shell = f"""set -e
eval "$(dml cluster env kr-session -b kuberay)"
echo "api $RAY_API_SERVER_ADDRESS"
ray job submit --working-dir {tmp_path} -- python hello.py
python {client_script}
DML_KUBERAY_DASHBOARD=port-forward dml job submit -c kr-session -b kuberay -- python -c "print('dml job ran')"
"""
        run = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=300, check=False,
                             env=alice)  # fmt: skip
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert f"api {printed['RAY_API_SERVER_ADDRESS']}" in run.stdout
        assert "nodes 2" in run.stdout and "succeeded" in run.stdout.lower()  # head + worker pod
        assert "client sees" in run.stdout and "dml job ran" in run.stdout
        job_id = next(word.strip("'") for line in run.stdout.splitlines() for word in line.split()
                      if word.strip("'").startswith("raysubmit_"))  # fmt: skip
        logs = subprocess.run(["bash", "-c", f'eval "$(dml cluster env kr-session -b kuberay)"; ray job logs {job_id}'],
                              capture_output=True, text=True, timeout=120, check=True, env=alice)  # fmt: skip
        assert "nodes 2" in logs.stdout
        assert [r for r in kuberay_api.requests if r[1].endswith("/portforward")]  # it went through the API

        # Ctrl-C: the session ends cleanly, its ports close, no stream is left open in the API server.
        os.killpg(session.pid, signal.SIGINT)
        assert session.wait(timeout=30) == 0
        assert session.stderr is not None and "session closed" in session.stderr.read()
        dashboard_port = int(printed["RAY_API_SERVER_ADDRESS"].rsplit(":", 1)[1])
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", dashboard_port), timeout=5)
        deadline = time.monotonic() + 10
        while kuberay_api.forwards_open and time.monotonic() < deadline:
            time.sleep(0.1)
        assert kuberay_api.forwards_open == 0
        assert not (get_settings().home / "sessions" / "ml.kr-session.json").exists()
        after = subprocess.run([*DML, "cluster", "env", "kr-session", "-b", "kuberay", "--shell", "json"],
                               capture_output=True, text=True, timeout=60, check=True, env=alice)  # fmt: skip
        assert json.loads(after.stdout)["RAY_API_SERVER_ADDRESS"].startswith(
            "http://kr-session-head-svc.ml.svc.cluster.local:"
        )
        assert "dml cluster session kr-session" in after.stderr
    finally:
        if session is not None and session.poll() is None:
            os.killpg(session.pid, signal.SIGKILL)
            session.wait()
        provider.delete("kr-session")
