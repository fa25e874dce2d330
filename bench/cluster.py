"""Benchmark of the local backend against the references measured in the same run.

    python -m bench.cluster [--workers 2] [--repeats 3] [--lines 100]

Prints:
- cluster ready time: LocalRayProvider.create+wait_ready vs a bare `ray start --head` + workers;
- per-job overhead: submit_and_follow (streaming every line) vs a bare `ray job submit` (CLI);
- log latency: from a line printed inside the Ray job to its record in the Dagster event log.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import dagster as dg

from discord_ml.cluster.local.processes import free_ports, group_alive, ray_executable
from discord_ml.cluster.local.provider import LocalRayProvider
from discord_ml.cluster.spec import ClusterSpec
from discord_ml.jobs.client import RayJobs
from discord_ml.orchestration.resources import RayClusterResource

JOB = "python -c \"print('hello', flush=True)\""


def _alive_nodes(dashboard: str, headers: dict[str, str]) -> int:
    try:
        request = urllib.request.Request(f"{dashboard}/api/v0/nodes?limit=100", headers=headers)
        with urllib.request.urlopen(request, timeout=5) as response:
            nodes = json.loads(response.read())["data"]["result"]["result"]
    except OSError:
        return 0
    return sum(1 for n in nodes if n.get("state") == "ALIVE")


def bare_cluster(workers: int) -> float:
    """Seconds until a hand-started head + workers are all alive (then stopped)."""
    root = Path(tempfile.mkdtemp(prefix="b-", dir="/tmp"))
    token = "bench-token-" + os.urandom(8).hex()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}  # fmt: skip
    gcs, dash = free_ports(2)
    procs: list[subprocess.Popen[Any]] = []
    started = time.monotonic()
    head = [ray_executable(), "start", "--head", "--block", f"--port={gcs}", f"--dashboard-port={dash}",
            "--dashboard-host=127.0.0.1", "--node-ip-address=127.0.0.1", f"--temp-dir={root}",
            "--num-cpus=0"]  # fmt: skip
    quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True}
    procs.append(subprocess.Popen(head, env=env, **quiet))
    headers = {"Authorization": f"Bearer {token}"}
    dashboard = f"http://127.0.0.1:{dash}"
    while _alive_nodes(dashboard, headers) < 1:
        time.sleep(0.2)
    for i in range(workers):
        ports = free_ports(6)
        worker = [ray_executable(), "start", "--block", f"--address=127.0.0.1:{gcs}", "--node-ip-address=127.0.0.1",
                  "--num-cpus=1", f"--node-manager-port={ports[0]}", f"--object-manager-port={ports[1]}",
                  f"--metrics-export-port={ports[2]}", f"--dashboard-agent-listen-port={ports[3]}",
                  f"--dashboard-agent-grpc-port={ports[4]}", f"--runtime-env-agent-port={ports[5]}"]  # fmt: skip
        procs.append(subprocess.Popen(worker, env=env, **quiet))
        while _alive_nodes(dashboard, headers) < 2 + i:
            time.sleep(0.2)
    elapsed = time.monotonic() - started
    for proc in procs:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    while any(group_alive(p.pid) for p in procs):
        time.sleep(0.1)
    return elapsed


def platform_cluster(provider: LocalRayProvider, workers: int, name: str) -> float:
    started = time.monotonic()
    provider.create(ClusterSpec.build(name=name, owner="bench", workers=workers, head_memory="1Gi"))
    provider.wait_ready(name)
    return time.monotonic() - started


def bare_job(dashboard: str, token: str) -> float:
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    started = time.monotonic()
    subprocess.run([ray_executable(), "job", "submit", "--address", dashboard, "--", *["python", "-c",
                    "print('hello', flush=True)"]], env=env, check=True, capture_output=True)  # fmt: skip
    return time.monotonic() - started


def platform_job(dashboard: str, headers: dict[str, str]) -> float:
    started = time.monotonic()
    RayJobs(dashboard, headers=headers).submit_and_follow(entrypoint=JOB, on_line=lambda _: None)
    return time.monotonic() - started


@dg.asset
def latency_probe(
    context: dg.AssetExecutionContext, ray_cluster: RayClusterResource, config: dg.PermissiveConfig
) -> Any:
    lines = int(config.model_dump().get("lines", 100))
    script = f"import time; [print(f'LAT {{time.time():.6f}}', flush=True) or time.sleep(0.05) for _ in range({lines})]"
    yield from ray_cluster.run_job(context, f'python -c "{script}"') or [dg.MaterializeResult()]


def log_latency(lines: int) -> list[float]:
    """Seconds from `print` in the Ray job to the event-log record, for each of `lines` lines."""
    job = dg.Definitions(
        assets=[latency_probe],
        jobs=[dg.define_asset_job("latency", selection=[latency_probe], executor_def=dg.in_process_executor)],
        resources={"ray_cluster": RayClusterResource(workers=1)},
    ).resolve_job_def("latency")
    with tempfile.TemporaryDirectory() as home, dg.instance_for_test(temp_dir=home) as instance:
        result = job.execute_in_process(
            instance=instance, run_config={"ops": {"latency_probe": {"config": {"lines": lines}}}}, raise_on_error=False
        )
        records = [r for r in instance.all_logs(result.run_id) if r.user_message.startswith("LAT ")]
    return [r.timestamp - float(r.user_message.split()[1]) for r in records]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lines", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        provider = LocalRayProvider(Path(home))
        bare = [bare_cluster(args.workers) for _ in range(args.repeats)]
        ours = []
        for i in range(args.repeats):
            ours.append(platform_cluster(provider, args.workers, f"bench-{i}"))
            if i < args.repeats - 1:
                provider.delete(f"bench-{i}")
        name = f"bench-{args.repeats - 1}"
        connection = provider.connect(name)
        bare_jobs = [bare_job(connection.dashboard_url, connection.token) for _ in range(args.repeats)]
        our_jobs = [platform_job(connection.dashboard_url, dict(connection.headers)) for _ in range(args.repeats)]
        provider.delete(name)
    latencies = log_latency(args.lines)

    b, o = statistics.median(bare), statistics.median(ours)
    bj, oj = statistics.median(bare_jobs), statistics.median(our_jobs)
    print(f"machine: {os.cpu_count()} cores; {args.workers} workers; median of {args.repeats}")
    print(f"{'measure':<34}{'reference':>12}{'discord_ml':>12}{'ratio':>8}")
    print(f"{'cluster ready (s)':<34}{b:>12.2f}{o:>12.2f}{o / b:>8.2f}  (bare ray start head + workers)")
    print(f"{'job round trip (s)':<34}{bj:>12.2f}{oj:>12.2f}{oj / bj:>8.2f}  (bare `ray job submit`)")
    if latencies:
        print(f"{'log line -> event log p50 (s)':<34}{'':>12}{_pct(latencies, 0.5):>12.3f}")
        print(f"{'log line -> event log p95 (s)':<34}{'':>12}{_pct(latencies, 0.95):>12.3f}  ({len(latencies)} lines)")
    else:
        print("log latency: no lines recorded", file=sys.stderr)


if __name__ == "__main__":
    main()
