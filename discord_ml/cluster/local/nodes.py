"""A real Ray cluster made of local processes: `ray start --head` plus one raylet per worker.

Each cluster is isolated: its own free ports, its own temp dir (which also identifies its
processes), its own auth token, the dashboard bound to 127.0.0.1. Each node runs
`ray start --block` in a new process session so that stopping a cluster signals exactly its
own process groups, never anyone else's Ray.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

from discord_ml.cluster.local.processes import (
    LOCALHOST,
    cluster_dir_prefix,
    file_lock,
    free_ports,
    is_ours,
    live_groups,
    load_summary,
    log_tail,
    pid_alive,
    processes_using,
    ray_executable,
    signal_group,
    spawn_detached,
    wait_gone,
)
from discord_ml.cluster.quantity import parse_quantity
from discord_ml.cluster.spec import ClusterSpec
from discord_ml.settings import get_settings

_OBJECT_STORE_FRACTION = Decimal("0.3")
_MIN_OBJECT_STORE = 80 * 2**20  # Ray refuses less than 75 MiB


class LocalClusterError(RuntimeError):
    """A local Ray cluster failed to start or stop; the message carries the log tail."""


class _HeadExitedError(LocalClusterError):
    """The head exited while a worker was starting: only a whole new cluster can help."""


@dataclass(frozen=True)
class _StartPolicy:
    node_timeout: float
    attempts: int


@dataclass
class _Node:
    role: str
    pid: int  # also its process group id
    log: Path


@dataclass
class LocalRayCluster:
    """One local Ray cluster; start it, use `address`/`dashboard_url`/`auth_headers()`, stop it."""

    spec: ClusterSpec
    root: Path | None = None
    nodes: list[_Node] = field(default_factory=list[_Node])
    token_value: str | None = None  # a given auth token (the KubeRay emulator's Secret); else generated
    ray: str = field(default_factory=ray_executable)  # the `ray` CLI that starts each node

    def __post_init__(self) -> None:
        prefix = cluster_dir_prefix(self.spec.cluster_name, self.root)
        self.dir = prefix.with_name(prefix.name + secrets.token_hex(3))
        self.temp_dir = self.dir / "r"
        self.token_file = self.dir / "auth_token"
        self.gcs_port = self.dashboard_port = self._client_port = 0
        # Every port this cluster was given: some are bound late (the head's Ray Client server
        # starts seconds after the head is up), so a later batch must not hand them out again.
        self._ports: set[int] = set()
        self._node_timeout = get_settings().local_start_timeout_s

    # --- addresses ---------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """GCS address for `ray.init(address=...)` / `ray start --address`."""
        return f"{LOCALHOST}:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        """Ray dashboard and Jobs API base URL."""
        return f"http://{LOCALHOST}:{self.dashboard_port}"

    @property
    def client_port(self) -> int:
        """The head's Ray Client server port (`ray://127.0.0.1:<port>`)."""
        return self._client_port

    @property
    def token(self) -> str:
        """The cluster's auth token."""
        return self.token_file.read_text().strip()

    def auth_headers(self) -> dict[str, str]:
        """Headers every HTTP client of this cluster must send."""
        return {"Authorization": f"Bearer {self.token}"}

    def client_env(self) -> dict[str, str]:
        """Environment for processes that talk to this cluster (drivers, notebooks)."""
        return {
            "RAY_ADDRESS": self.address,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(self.token_file),
            "RAY_USAGE_STATS_ENABLED": "0",
        }

    # --- lifecycle ---------------------------------------------------------------------------

    def start(
        self,
        *,
        node_timeout: float | None = None,
        attempts: int | None = None,
        on_launch: Callable[[LocalRayCluster], None] | None = None,
    ) -> LocalRayCluster:
        """Start the head, then each worker, and wait until every node is alive.

        A node that exits or does not come up within `node_timeout` (default
        `DML_LOCAL_START_TIMEOUT_S`) is stopped and started again with fresh ports (the head also
        with a fresh temp dir), up to `attempts` times (default `DML_LOCAL_START_ATTEMPTS`): on a
        busy machine Ray's fixed 30 s registration window is missed now and then. A head that
        exits while a worker starts takes the whole cluster down and up again, within the same
        number of attempts. Starts are serialized machine-wide (a file lock): raylets starting
        together race for ports and CPU.
        `on_launch` is called after each node is launched, so a registry can record what exists
        before the cluster is ready.

        Raises:
            LocalClusterError: a node gave up (which one, how long it waited, the load, the log
                tail and what to do); everything started is stopped.
        """
        settings = get_settings()
        policy = _StartPolicy(node_timeout or settings.local_start_timeout_s, attempts or settings.local_start_attempts)
        self._node_timeout = policy.node_timeout
        self.dir.mkdir(parents=True, exist_ok=False)
        self.token_file.write_text(self.token_value or secrets.token_urlsafe(32))
        self.token_file.chmod(0o600)
        try:
            with file_lock(self.dir.parent / "start.lock", timeout=policy.node_timeout * policy.attempts * 2,
                           holder="another local cluster is starting"):  # fmt: skip
                self._start_all(policy, on_launch)
        except TimeoutError as exc:
            self.stop()
            raise LocalClusterError(str(exc)) from None
        except BaseException:
            self.stop()
            raise
        return self

    def _start_all(self, policy: _StartPolicy, on_launch: Callable[[LocalRayCluster], None] | None) -> None:
        for attempt in range(1, policy.attempts + 1):
            self._start_node("head", policy, on_launch)
            try:
                for i in range(self.spec.workers):
                    self._start_node(f"worker-{i}", policy, on_launch)
                return
            except _HeadExitedError as exc:
                while self.nodes:
                    self._discard_last_node()
                if attempt == policy.attempts:
                    raise LocalClusterError(
                        f"local cluster {self.spec.cluster_name!r}: the head exited while a worker started, "
                        f"{attempt} time(s) ({load_summary()}).\nWhat to do: close other work on this machine "
                        f"or ask for fewer workers; DML_LOCAL_START_ATTEMPTS is {policy.attempts}.\nLast attempt: {exc}"
                    ) from None

    def _take_ports(self, count: int) -> list[int]:
        ports = free_ports(count, exclude=self._ports)
        self._ports.update(ports)
        return ports

    def _start_node(self, role: str, policy: _StartPolicy, on_launch: Callable[[LocalRayCluster], None] | None) -> None:
        began, failure = time.monotonic(), None
        for _ in range(policy.attempts):
            if role == "head":
                self.gcs_port, self.dashboard_port, self._client_port = self._take_ports(3)
                expected = 1
                args, what = self._head_args(), "the head's dashboard to list the head node as alive"
            else:
                expected = len(self.nodes) + 1
                args, what = self._worker_args(), f"{expected} alive Ray nodes"
            self._launch(role, args, on_launch)
            try:
                self._wait(lambda n=expected: self.alive_nodes() >= n, time.monotonic() + policy.node_timeout, what)
                return
            except LocalClusterError as exc:
                failure = exc
                self._discard_last_node()
                if role != "head" and not pid_alive(self.nodes[0].pid):
                    raise _HeadExitedError(str(exc)) from None
        waited = time.monotonic() - began
        raise LocalClusterError(
            f"local cluster {self.spec.cluster_name!r}: the {role} did not start after {policy.attempts} attempt(s) "
            f"({policy.node_timeout:.0f} s each, {waited:.0f} s in all; {load_summary()}).\n"
            f"What to do: close other work on this machine, ask for fewer workers, or give each node more time "
            f"with DML_LOCAL_START_TIMEOUT_S (now {policy.node_timeout:.0f}) or DML_LOCAL_START_ATTEMPTS "
            f"(now {policy.attempts}).\nLast attempt: {failure}"
        )

    def _discard_last_node(self) -> None:
        """Kill the node that failed to start; a head also takes its temp dir (and every process in it)."""
        node = self.nodes.pop()
        signal_group(node.pid, signal.SIGKILL)  # its raylet may outlive `ray start`
        if node.role == "head":
            for pid in processes_using(str(self.temp_dir)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            wait_gone([node.pid], str(self.temp_dir))
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        else:
            wait_gone([node.pid])

    def stop(self, *, grace: float = 2.0) -> None:
        """Stop exactly this cluster's processes and remove its temp dir.

        SIGTERM, a short grace, then SIGKILL of each node's process group: Ray's own graceful
        shutdown takes ~30 s per node and buys nothing for a throwaway cluster whose jobs were
        already stopped through the Jobs API.
        """
        # Every process of the cluster names its directory, in its command line (the head's temp dir)
        # or its environment (the token path: workers, and job drivers in sessions of their own).
        marker = f"{self.dir}/"
        # Only signal groups whose leader is still this cluster's node (pids can be reused).
        groups = [n.pid for n in self.nodes if is_ours(n.pid, self._markers())]
        for pgid in groups:
            signal_group(pgid, signal.SIGTERM)
        end = time.monotonic() + grace
        while time.monotonic() < end and live_groups(groups):
            time.sleep(0.1)
        for pgid in groups:
            signal_group(pgid, signal.SIGKILL)
        # Stragglers that left the process groups are found by the cluster's unique temp dir.
        for pid in processes_using(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_gone(groups, marker)
        self.nodes.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- internals ---------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH_", "RAY_ADDRESS"))}
        env.update(self.client_env())
        env.pop("RAY_ADDRESS")
        # Job drivers run `python ...`: make that this environment's interpreter.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        # Ray drains a node on SIGTERM (for Serve on k8s); a local cluster is torn down at once.
        env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"
        # Ray's own start-up waits (agents and worker processes registering with their raylet)
        # default to 30-60 s, which a busy laptop misses; match them to our node timeout.
        wait_s = int(self._node_timeout)
        env["RAY_raylet_start_wait_time_s"] = str(wait_s)
        env["RAY_worker_register_timeout_seconds"] = str(wait_s)
        env["RAY_agent_register_timeout_ms"] = str(wait_s * 1000)
        env.update(self.spec.env)
        return env

    def _common_args(self, memory: str, cpus: int, gpus: int) -> list[str]:
        memory_bytes = int(parse_quantity(memory))
        object_store = max(_MIN_OBJECT_STORE, int(memory_bytes * _OBJECT_STORE_FRACTION))
        node_manager, object_manager, metrics, agent, agent_grpc, runtime_env = self._take_ports(6)
        return [
            "--block",
            f"--node-ip-address={LOCALHOST}",
            f"--num-cpus={cpus}",
            f"--num-gpus={gpus}",
            f"--memory={memory_bytes}",
            f"--object-store-memory={object_store}",
            f"--node-manager-port={node_manager}",
            f"--object-manager-port={object_manager}",
            f"--metrics-export-port={metrics}",
            f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={runtime_env}",
            "--min-worker-port=0",  # worker processes bind OS-chosen (ephemeral) ports
            "--max-worker-port=0",
            "--disable-usage-stats",
        ]

    def _head_args(self) -> list[str]:
        return [
            "--head",
            f"--port={self.gcs_port}",
            f"--temp-dir={self.temp_dir}",
            "--include-dashboard=true",
            f"--dashboard-host={LOCALHOST}",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={self._client_port}",
            *self._common_args(self.spec.head_memory, 0, 0),  # like KubeRay's head: no tasks
        ]

    def _worker_args(self) -> list[str]:
        spec = self.spec
        cpus = max(1, int(parse_quantity(spec.worker_cpu or "1")))
        args = [
            f"--address={self.address}",
            *self._common_args(spec.worker_memory or "2Gi", cpus, spec.gpus_per_worker or 0),
        ]
        pool = spec.pool()
        if pool.ray_resource and spec.gpus_per_worker:
            args.append(f"--resources={json.dumps({pool.ray_resource: spec.gpus_per_worker})}")
        return args

    def _launch(self, role: str, args: list[str], on_launch: Callable[[LocalRayCluster], None] | None) -> None:
        log = self.dir / f"{role}.log"
        # Its own process group: stop() signals only this node.
        pid = spawn_detached([self.ray, "start", *args], log=log, env=self._env())
        self.nodes.append(_Node(role, pid, log))
        if on_launch is not None:
            on_launch(self)

    def node_records(self) -> list[dict[str, Any]]:
        """The nodes as plain data, for a registry."""
        return [{"role": n.role, "pid": n.pid, "log": str(n.log)} for n in self.nodes]

    @classmethod
    def attach(cls, spec: ClusterSpec, *, directory: Path, gcs_port: int, dashboard_port: int,
               nodes: list[dict[str, Any]]) -> LocalRayCluster:  # fmt: skip
        """A handle on a cluster started elsewhere (another process), e.g. to stop it."""
        cluster = cls(spec)
        cluster.dir, cluster.temp_dir, cluster.token_file = directory, directory / "r", directory / "auth_token"
        cluster.gcs_port, cluster.dashboard_port = gcs_port, dashboard_port
        cluster.nodes = [_Node(n["role"], int(n["pid"]), Path(n["log"])) for n in nodes]
        return cluster

    def live_nodes(self) -> dict[str, bool]:
        """Role -> whether that node's `ray start` process is still running."""
        return {n.role: pid_alive(n.pid) and is_ours(n.pid, self._markers()) for n in self.nodes}

    def _markers(self) -> tuple[str, ...]:
        # The head's command line names the temp dir, a worker's the head's unique GCS address.
        return (str(self.temp_dir), f"--address={self.address}")

    def _wait(self, ready: Any, deadline: float, what: str) -> None:
        while time.monotonic() < deadline:
            for node in self.nodes:
                if not pid_alive(node.pid):
                    raise LocalClusterError(
                        f"local cluster {self.spec.cluster_name!r}: {node.role} exited "
                        f"while waiting for {what}:\n{log_tail(node.log)}\n{self._ray_errors()}"
                    )
            if ready():
                return
            time.sleep(0.2)  # a cheap local query; each start waits on it once per node
        logs = "\n".join(f"--- {n.role}\n{log_tail(n.log)}" for n in self.nodes)
        raise LocalClusterError(
            f"local cluster {self.spec.cluster_name!r}: timed out waiting for {what}\n{logs}\n{self._ray_errors()}"
        )

    def _ray_errors(self) -> str:
        """Tails of the non-empty `*.err` logs of the Ray session (where module crashes land)."""
        logs = self.temp_dir / "session_latest" / "logs"
        errs = [p for p in sorted(logs.glob("*.err")) if p.stat().st_size] if logs.is_dir() else []
        return "\n".join(f"--- {p.name}\n{log_tail(p, 10)}" for p in errs[:4])

    def _get(self, path: str) -> Any:
        request = urllib.request.Request(self.dashboard_url + path, headers=self.auth_headers())
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def alive_nodes(self) -> int:
        """Number of Ray nodes in state ALIVE, from the dashboard's state API."""
        try:
            payload = self._get("/api/v0/nodes?limit=1000")
        except (OSError, urllib.error.URLError, ValueError):
            return 0
        nodes = payload.get("data", {}).get("result", {}).get("result", [])
        return sum(1 for n in nodes if n.get("state") == "ALIVE")
