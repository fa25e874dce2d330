"""`dml` through the CLI runner and as a subprocess, against real local Ray clusters and the
Kubernetes API emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from discord_ml.cli.main import app
from discord_ml.cluster.local.processes import cluster_dir_prefix, processes_using
from discord_ml.cluster.local.provider import LocalRayProvider
from discord_ml.cluster.spec import ClusterSpec
from discord_ml_tests.support.hung import stacks_then_kill
from discord_ml_tests.support.k8s_emulator import KubeEmulator

DML = [str(Path(sys.executable).parent / "dml")]
HEAVY = ("ray", "torch", "kubernetes", "xgboost", "dagster", "httpx")


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("DML_OWNER", "alice")
    return CliRunner()


@pytest.mark.integration
def test_create_list_submit_delete(runner: CliRunner) -> None:
    result = runner.invoke(app, ["cluster", "create", "cli-a", "--pool", "cpu", "--workers", "1", "--purpose", "train"])
    assert result.exit_code == 0, result.output
    assert "cluster cli-a is ready: dashboard http://127.0.0.1:" in result.output
    assert "dml job submit --cluster cli-a -- python train.py" in result.output
    try:
        listed = json.loads(runner.invoke(app, ["cluster", "list", "-o", "json"]).output)
        [info] = listed
        assert (info["name"], info["owner"], info["gpu_pool"], info["purpose"]) == ("cli-a", "alice", "cpu", "train")
        assert (info["workers_ready"], info["workers_desired"], info["status"]) == (1, 1, "ready")
        assert "cli-a" in runner.invoke(app, ["cluster", "list"]).output
        # As a subprocess: the job's lines stream to stdout and the exit code mirrors the job's.
        submit = [*DML, "job", "submit", "--cluster", "cli-a", "--", "python", "-c"]
        ok = subprocess.run([*submit, "print('line one')"], capture_output=True, text=True, timeout=120, check=False)
        assert ok.returncode == 0, ok.stderr
        assert "line one" in ok.stdout.splitlines()
        failing = "import sys; print('going down'); sys.exit(3)"
        bad = subprocess.run([*submit, failing], capture_output=True, text=True, timeout=120, check=False)
        assert bad.returncode == 3
        assert "going down" in bad.stdout
        job_id = next(line.split()[1] for line in bad.stderr.splitlines() if line.startswith("job "))
        status = json.loads(runner.invoke(app, ["job", "status", job_id, "-o", "json"]).output)
        assert (status["status"], status["exit_code"]) == ("FAILED", 3)
        assert "going down" in runner.invoke(app, ["job", "logs", job_id]).output
        jobs = json.loads(runner.invoke(app, ["job", "list", "--cluster", "cli-a", "-o", "json"]).output)
        assert {j["status"] for j in jobs} == {"SUCCEEDED", "FAILED"}
    finally:
        deleted = runner.invoke(app, ["cluster", "delete", "cli-a", "--yes"])
    assert deleted.exit_code == 0, deleted.output
    assert json.loads(runner.invoke(app, ["cluster", "list", "-o", "json"]).output) == []
    assert processes_using(str(cluster_dir_prefix("cli-a"))) == []


@pytest.mark.integration
def test_delete_refuses_another_owners_cluster_without_force(runner: CliRunner) -> None:
    LocalRayProvider().create(ClusterSpec.build(name="cli-bob", owner="bob", workers=0, head_memory="1Gi"))
    try:
        refused = runner.invoke(app, ["cluster", "delete", "cli-bob", "--yes"])
        assert refused.exit_code == 2
        assert "owned by 'bob', not 'alice'; pass --force" in refused.output
        assert [c.name for c in LocalRayProvider().list()] == ["cli-bob"]
        assert runner.invoke(app, ["cluster", "delete", "cli-bob", "--yes", "--force"]).exit_code == 0
    finally:
        LocalRayProvider().delete("cli-bob")


@pytest.mark.integration
def test_ephemeral_submit_leaves_nothing_also_on_sigint(tmp_path: Path) -> None:
    env = {**os.environ, "DML_OWNER": "alice"}
    ephemeral = [*DML, "job", "submit", "--pool", "cpu", "--workers", "1", "--", "python", "-c"]
    done = subprocess.run(
        [*ephemeral, "print('eph')"], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "eph" in done.stdout.splitlines()
    assert "deleting ephemeral cluster" in done.stderr
    assert LocalRayProvider().list() == []
    # Interrupted while the job runs: the job is stopped and the cluster deleted.
    marker = "dml-sigint-marker"
    script = f"import time; print('{marker}', flush=True); time.sleep(600)"
    proc = subprocess.Popen([*ephemeral, script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if marker in line:
                break
        proc.send_signal(signal.SIGINT)
        try:
            _, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"dml did not exit within 120 s of SIGINT; its stacks:\n{stacks_then_kill(proc)}")
    finally:  # a failure here must not leave its cluster running under the rest of the suite
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.returncode < 0:  # killed above: it could not delete its cluster itself
            for leftover in LocalRayProvider().list():
                LocalRayProvider().delete(leftover.name, namespace=leftover.namespace)
    assert proc.returncode != 0
    assert "deleting ephemeral cluster" in stderr
    assert LocalRayProvider().list() == []
    deadline = time.monotonic() + 10
    while processes_using(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_using(marker) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["cluster", "create", "--gpus", "h200:1"],
            "gpu_pool 'h200' is not defined; known pools: cpu, t4, l4, a100, h100",
        ),
        (["cluster", "create", "--gpus", "h100:9"], "one h100 node has 8 GPUs; ask for at most 'h100:8'"),
        (["cluster", "create", "--memory", "12GB"], "worker_memory: '12GB' is not a Kubernetes quantity"),
        (["cluster", "create", "Bad_Name"], "name 'Bad_Name' is not a valid cluster name"),
        (["cluster", "create", "--gpus", "h100:1", "--pool", "a100"], "give --gpus (e.g. h100:8) or --pool, not both"),
        (["cluster", "create", "--timeout", "soon"], "--timeout: 'soon' is not a duration"),
        (["cluster", "get", "nope"], "no local cluster 'nope' in namespace 'ml'"),
        (["cluster", "delete", "nope", "--yes"], "no local cluster 'nope'"),
        (["job", "submit", "--cluster", "nope", "--", "python", "x.py"], "no local cluster 'nope'"),
        (["job", "submit", "--", "python", "x.py"], "say where to run: --cluster NAME"),
        (["job", "submit", "--cluster", "x"], "no command to run; put it after --"),
        (["job", "submit", "--cluster", "x", "--env", "NOEQUALS", "--", "python"], "--env 'NOEQUALS' is not KEY=VALUE"),
        (["job", "logs", "nounderscore"], "does not name its cluster; pass --cluster NAME"),
        (["cluster", "list", "-o", "xml"], "--output 'xml' is not supported"),
        (["cluster", "list", "--backend", "nomad"], "backend 'nomad' is not known; use one of: local, kuberay"),
    ],
)
def test_bad_input_exits_2_and_creates_nothing(runner: CliRunner, args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert LocalRayProvider().list() == []


def test_dry_run_prints_valid_hardened_manifests(runner: CliRunner) -> None:
    result = runner.invoke(
        app, ["cluster", "create", "rank", "--gpus", "h100:8", "--workers", "4", "--dry-run", "-o", "json"]
    )
    assert result.exit_code == 0, result.output
    cluster, policy = json.loads(result.output)
    assert (cluster["kind"], policy["kind"]) == ("RayCluster", "NetworkPolicy")
    assert cluster["spec"]["workerGroupSpecs"][0]["replicas"] == 4
    assert LocalRayProvider().list() == []


@pytest.mark.integration
@pytest.mark.parametrize("argv", [["--help"], ["cluster", "create", "--pool", "cpu", "--dry-run"], ["pools"]])
def test_fast_paths_import_no_heavy_library(argv: list[str]) -> None:
    probe = (
        "import json, sys\n"
        "from discord_ml.cli.main import app\n"
        f"try:\n    app({argv!r})\nexcept SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n"
        f"print('HEAVY', json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_kuberay_create_list_all_namespaces_delete(runner: CliRunner, kuberay_api: KubeEmulator) -> None:
    kube = kuberay_api
    kube.default_mode = "pending"  # no Ray needed to check what the CLI applies
    for name, namespace in (("kr-a", "team-a"), ("kr-b", "team-b")):
        result = runner.invoke(app, ["cluster", "create", name, "-n", namespace, "--gpus", "t4:1", "--no-wait",
                                     "--backend", "kuberay"])  # fmt: skip
        assert result.exit_code == 0, result.output
    # The emulator validated each RayCluster against the KubeRay CRD schema before storing it.
    assert kube.ray_clusters() == ["kr-a", "kr-b"]
    listed = json.loads(runner.invoke(app, ["cluster", "list", "-A", "-o", "json", "--backend", "kuberay"]).output)
    assert sorted((c["namespace"], c["name"], c["gpu_type"]) for c in listed) == [
        ("team-a", "kr-a", "nvidia-tesla-t4"), ("team-b", "kr-b", "nvidia-tesla-t4")]  # fmt: skip
    only_a = json.loads(runner.invoke(app, ["cluster", "list", "-n", "team-a", "-o", "json", "-b", "kuberay"]).output)
    assert [c["name"] for c in only_a] == ["kr-a"]
    pending = json.loads(
        runner.invoke(app, ["cluster", "get", "kr-a", "-n", "team-a", "-o", "json", "-b", "kuberay"]).output
    )
    assert pending["status"] == "pending" and "FailedScheduling" in pending["reason"]
    assert runner.invoke(app, ["cluster", "delete", "kr-a", "-n", "team-a", "--yes", "-b", "kuberay"]).exit_code == 0
    assert kube.ray_clusters() == ["kr-b"]


@pytest.mark.integration
def test_notebook_runs_jupyterlab_attached_to_the_cluster() -> None:
    import urllib.request

    from discord_ml.cluster.local.processes import free_ports

    provider = LocalRayProvider()
    provider.create(ClusterSpec.build(name="cli-nb", owner="alice", workers=0, head_memory="1Gi"))
    [port] = free_ports(1)
    proc = subprocess.Popen([*DML, "notebook", "cli-nb", "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "JupyterLab attached to cli-nb (127.0.0.1:" in first
        url = first.strip().rsplit(" ", 1)[-1]
        token = url.split("token=")[1]
        deadline, status = time.monotonic() + 90, None
        while time.monotonic() < deadline and status is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=5) as r:
                    status = r.status
            except OSError:
                time.sleep(0.5)
        assert status == 200, "JupyterLab did not answer"
        # The server (and so every kernel it starts) has the cluster's address and token.
        [server] = processes_using(f"--port={port}")
        environ = dict(
            item.split("=", 1) for item in Path(f"/proc/{server}/environ").read_text().split("\0") if "=" in item
        )
        connection = provider.connect("cli-nb")
        assert environ["RAY_ADDRESS"] == connection.address
        assert f"Bearer {environ['RAY_AUTH_TOKEN']}" == connection.headers["Authorization"]
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # fail, but leave no JupyterLab or cluster behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            provider.delete("cli-nb")
