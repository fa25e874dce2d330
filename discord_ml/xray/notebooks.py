"""Notebooks launched from X-Ray for local clusters: one JupyterLab per cluster, run by the X-Ray process.

They stop with the cluster (deleted from X-Ray) or with X-Ray itself.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from discord_ml.cluster.activity import record_notebook
from discord_ml.cluster.local.notebooks import jupyter_launch
from discord_ml.cluster.local.processes import free_ports, log_tail
from discord_ml.cluster.provider import ClusterConnection


class NotebookError(RuntimeError):
    """JupyterLab did not start; the message carries its log tail."""


@dataclass
class NotebookSession:
    """A running JupyterLab attached to one cluster."""

    cluster_key: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    started_by: str

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


class NotebookSessions:
    """At most one live JupyterLab per cluster."""

    def __init__(self, root: Path, *, host: str = "127.0.0.1", start_timeout: float = 90.0) -> None:
        self.root, self.host, self.start_timeout = root, host, start_timeout
        self._sessions: dict[str, NotebookSession] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> NotebookSession | None:
        """The running notebook of a cluster, or None."""
        session = self._sessions.get(key)
        return session if session is not None and session.alive else None

    def launch(self, key: str, cluster: str, connection: ClusterConnection, user: str, *,
               namespace: str) -> NotebookSession:  # fmt: skip
        """The cluster's running notebook, or a new one once it answers.

        Raises:
            NotebookError: JupyterLab exited or did not listen within the start timeout.
        """
        with self._lock:
            running = self.get(key)
            if running is not None:
                return running
            port = free_ports(1)[0]
            folder = self.root / key.replace("/", "_")
            folder.mkdir(parents=True, exist_ok=True)
            token = secrets.token_urlsafe(24)
            launch = jupyter_launch(connection, cluster, host=self.host, port=port, notebook_dir=folder,
                                    lab_token=token)  # fmt: skip
            log = folder / "jupyter.log"
            with log.open("wb") as out:
                process = subprocess.Popen(launch.argv, env=launch.env, stdout=out, stderr=subprocess.STDOUT,
                                           start_new_session=True)  # fmt: skip
            session = NotebookSession(key, launch.url, process, log, user)
            self._wait_listening(session, port)
            self._sessions[key] = session
            # The sweeper asks its kernels whether the cluster is in use.
            record_notebook(namespace, cluster, url=f"http://{self.host}:{port}", token=token, pid=process.pid)
            return session

    def _wait_listening(self, session: NotebookSession, port: int) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if not session.alive:
                code = session.process.returncode
                raise NotebookError(f"JupyterLab exited with code {code}:\n{log_tail(session.log, 20)}")
            try:
                with socket.create_connection((self.host, port), timeout=1):
                    return
            except OSError:
                time.sleep(0.3)
        self._terminate(session)
        raise NotebookError(f"JupyterLab did not listen within {self.start_timeout:.0f}s:\n{log_tail(session.log, 20)}")

    def stop(self, key: str) -> None:
        """Stop the cluster's notebook, if one runs."""
        with self._lock:
            session = self._sessions.pop(key, None)
        if session is not None:
            self._terminate(session)

    def stop_all(self) -> None:
        """Stop every notebook (X-Ray is shutting down)."""
        for key in list(self._sessions):
            self.stop(key)

    @staticmethod
    def _terminate(session: NotebookSession) -> None:
        if session.alive:
            session.process.terminate()
            try:
                session.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                session.process.kill()
                session.process.wait()
