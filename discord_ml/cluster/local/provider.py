"""LocalRayProvider: the embedded default backend, a `ClusterProvider` over local Ray processes.

Clusters outlive the process that created them; the SQLite registry lets any process list,
connect to and delete them, and tells a live cluster from a dead one.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from discord_ml.cluster.activity import local_notebooks
from discord_ml.cluster.archive import archive_before_delete
from discord_ml.cluster.conventions import cluster_labels
from discord_ml.cluster.local.nodes import LocalClusterError, LocalRayCluster
from discord_ml.cluster.local.processes import process_start, same_process_alive
from discord_ml.cluster.local.state import ClusterRecord, LocalRegistry
from discord_ml.cluster.provider import (
    ClusterConnection,
    ClusterEvent,
    ClusterExistsError,
    ClusterInfo,
    ClusterNotFoundError,
    ClusterNotReadyError,
    ClusterStatus,
    Progress,
    poll_until_ready,
)
from discord_ml.cluster.quantity import parse_quantity
from discord_ml.cluster.spec import STORED, ClusterSpec
from discord_ml.settings import get_settings


class LocalRayProvider:
    """Ray clusters made of processes on this machine."""

    backend = "local"

    def __init__(self, home: Path | None = None) -> None:
        self.home = home or get_settings().home / "local"
        self.registry = LocalRegistry(self.home / "clusters.db")

    # --- the interface ------------------------------------------------------------------------

    def preflight(self, spec: ClusterSpec) -> list[str]:
        """Nothing to check: local Ray nodes take what they are given (logical resources)."""
        return []

    def create(self, spec: ClusterSpec) -> ClusterInfo:
        """Start the cluster's processes; returns once every node has registered (~10 s a node when idle).

        Nodes that miss their start-up are retried (`LocalRayCluster.start`).

        Raises:
            ClusterExistsError: the name is taken in that namespace.
            ClusterNotReadyError: a node failed to start (its log tail in the message); nothing is left.
        """
        namespace, name = str(spec.namespace), spec.cluster_name
        cluster = LocalRayCluster(spec)
        creator = {"pid": os.getpid(), "start": process_start(os.getpid()) or 0}
        record = ClusterRecord(namespace, name, spec.model_dump(mode="json"), cluster.dir, 0, 0, [],
                               datetime.now(UTC), "starting", creator=creator)  # fmt: skip
        if not self.registry.insert(record):
            raise ClusterExistsError(
                f"cluster {name!r} already exists in namespace {namespace!r}; "
                f"pick another name or delete it first (dml cluster delete {name})"
            )

        def on_launch(c: LocalRayCluster) -> None:
            self.registry.update(namespace, name, gcs_port=c.gcs_port, dashboard_port=c.dashboard_port,
                                 nodes=c.node_records())  # fmt: skip

        try:
            cluster.start(on_launch=on_launch)
        except LocalClusterError as exc:
            self.registry.remove(namespace, name)  # start() already stopped whatever it launched
            raise ClusterNotReadyError(str(exc)) from exc
        except BaseException:
            cluster.stop()
            self.registry.remove(namespace, name)
            raise
        self.registry.update(namespace, name, state="running", nodes=cluster.node_records())
        return self.get(name, namespace=namespace)

    def wait_ready(self, name: str, *, namespace: str | None = None, timeout: float = 600.0,
                   on_progress: Progress | None = None) -> ClusterInfo:  # fmt: skip
        """Wait until the head and every worker raylet run.

        Raises:
            ClusterNotReadyError: the cluster died or did not become ready within `timeout`.
        """

        def ready(info: ClusterInfo) -> bool:  # every worker raylet too, not just the head
            return info.status == ClusterStatus.READY and info.workers_ready == info.workers_desired

        get = functools.partial(self.get, name, namespace=namespace)
        return poll_until_ready(get, what=f"cluster {name!r}", timeout=timeout, interval=0.5, on_progress=on_progress,
                                ready=ready)  # fmt: skip

    def get(self, name: str, *, namespace: str | None = None) -> ClusterInfo:
        """One cluster; its status checked against its processes.

        Raises:
            ClusterNotFoundError: no such local cluster.
        """
        return self._info(self._record(name, namespace))

    def list(self, selector: Mapping[str, str] | None = None, *, namespace: str | None = None) -> list[ClusterInfo]:
        """Local clusters whose labels include `selector`."""
        infos = [self._info(r) for r in self.registry.all(namespace)]
        return [i for i in infos if all(i.labels.get(k) == v for k, v in (selector or {}).items())]

    def delete(self, name: str, *, namespace: str | None = None) -> None:
        """Archive its job logs, stop exactly this cluster's processes and forget it (a missing cluster is fine)."""
        namespace = namespace or get_settings().default_namespace
        record = self.registry.get(namespace, name)
        if record is None:
            return
        archive_before_delete(self, name, namespace)
        self._handle(record).stop()
        self.registry.remove(namespace, name)

    def touch(self, name: str, *, namespace: str | None = None) -> None:
        """Record a heartbeat of whatever uses the cluster now."""
        record = self._record(name, namespace)
        self.registry.update(record.namespace, record.name, last_active=datetime.now(UTC).isoformat())

    def connect(self, name: str, *, namespace: str | None = None) -> ClusterConnection:
        """Dashboard URL, auth headers and GCS address of a local cluster."""
        record = self._record(name, namespace)
        info = self._info(record)
        if info.dashboard_url is None or info.status != ClusterStatus.READY:
            raise ClusterNotReadyError(f"cluster {name!r} is {info.status}: {info.reason}")
        cluster = self._handle(record)
        return ClusterConnection(info.dashboard_url, cluster.auth_headers(), cluster.address, str(cluster.token_file))

    def events(self, name: str, *, namespace: str | None = None, limit: int = 20) -> list[ClusterEvent]:
        """Creation, then each node's process: running, or exited with the last line of its log."""
        record = self._record(name, namespace)
        cluster = self._handle(record)
        live = cluster.live_nodes()
        events = [ClusterEvent(record.created, "Normal", record.name, "Created",
                               f"local cluster with {cluster.spec.workers} worker raylet(s)")]  # fmt: skip
        for node in cluster.nodes:
            if live.get(node.role, False):
                events.append(ClusterEvent(None, "Normal", node.role, "Running", f"ray start (pid {node.pid})"))
            else:
                message = f"pid {node.pid} is gone; its log ends: {_last_line(node.log)}"
                events.append(ClusterEvent(_modified(node.log), "Warning", node.role, "Exited", message))
        if record.state == "failed" and record.reason:
            events.append(ClusterEvent(None, "Warning", record.name, "Failed", record.reason))
        return events[-limit:]

    def notebooks(self, name: str, *, namespace: str | None = None) -> list[tuple[str, str]]:
        """The local JupyterLabs (X-Ray's, `dml notebook`'s) that recorded themselves for the cluster."""
        return list(local_notebooks(namespace or get_settings().default_namespace, name))

    # --- internals ---------------------------------------------------------------------------

    def _record(self, name: str, namespace: str | None) -> ClusterRecord:
        namespace = namespace or get_settings().default_namespace
        record = self.registry.get(namespace, name)
        if record is None:
            known = ", ".join(r.name for r in self.registry.all(namespace)) or "none"
            raise ClusterNotFoundError(
                f"no local cluster {name!r} in namespace {namespace!r} (clusters there: {known}; see dml cluster list)"
            )
        return record

    def _handle(self, record: ClusterRecord) -> LocalRayCluster:
        spec = ClusterSpec.model_validate(record.spec, context={STORED: True})
        return LocalRayCluster.attach(spec, directory=record.dir, gcs_port=record.gcs_port,
                                      dashboard_port=record.dashboard_port, nodes=record.nodes)  # fmt: skip

    def _info(self, record: ClusterRecord) -> ClusterInfo:
        cluster = self._handle(record)
        spec = cluster.spec
        pool = spec.pool()
        live = cluster.live_nodes()
        head_alive = live.get("head", False)
        workers_ready = sum(1 for role, alive in live.items() if role != "head" and alive)
        if record.state == "starting":
            status, reason = (ClusterStatus.PENDING, f"starting raylets ({workers_ready}/{spec.workers} workers up)")
            if live and not head_alive:
                status, reason = ClusterStatus.DEAD, "the head process exited during start-up"
        elif not head_alive:
            status, reason = ClusterStatus.DEAD, "the head process is gone (machine restart or killed)"
        else:
            status = ClusterStatus.READY
            missing = spec.workers - workers_ready
            reason = f"{missing} worker raylet(s) exited" if missing else ""
        return ClusterInfo(
            name=record.name,
            namespace=record.namespace,
            backend=self.backend,
            owner=spec.owner,
            team=spec.team,
            purpose=spec.purpose.value,
            gpu_pool=pool.name,
            gpu_type=pool.accelerator or "none",
            gpus_per_worker=spec.gpus_per_worker or 0,
            workers_ready=workers_ready,
            workers_desired=spec.workers,
            status=status,
            reason=reason,
            created=record.created,
            dashboard_url=cluster.dashboard_url if record.dashboard_port else None,
            labels=cluster_labels(spec, pool),
            ttl_seconds=spec.ttl_seconds,
            creator_alive=_creator_alive(record),
            head_cpu=float(parse_quantity(spec.head_cpu)),
            worker_cpu=float(parse_quantity(spec.worker_cpu or "1")),
            idle_timeout_seconds=spec.idle_timeout_seconds,
            last_active=record.last_active,
        )


def _creator_alive(record: ClusterRecord) -> bool | None:
    if "pid" not in record.creator:
        return None
    return same_process_alive(record.creator["pid"], record.creator.get("start") or None)


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"


def _modified(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        return None
