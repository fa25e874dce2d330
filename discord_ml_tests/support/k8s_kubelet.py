"""The API emulator's kubelet for notebook pods: runs the pod's container command (JupyterLab) as a
local process with the pod's environment, secrets resolved like the kubelet does, and in-cluster
service names resolved to the emulated cluster's local ports (what cluster DNS would do)."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from discord_ml.cluster.local.processes import free_ports, log_tail, signal_group


@dataclass
class LocalContainer:
    """A pod's container run as a local process."""

    process: subprocess.Popen[bytes]
    port: int  # where the container's one port is served on 127.0.0.1
    log: Path


def _env(container: Mapping[str, Any], secret: Callable[[str, str], str | None],
         resolve: Callable[[str], str]) -> dict[str, str]:  # fmt: skip
    env: dict[str, str] = {}
    for item in container.get("env", []):
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        value = secret(ref["name"], ref["key"]) if ref else item.get("value", "")
        if value is None:  # the kubelet refuses to start a container whose secret is missing
            raise LookupError(f"secret {ref['name']!r} (key {ref['key']!r}) not found")
        env[item["name"]] = resolve(value)
    return env


def run_container(pod: Mapping[str, Any], secrets: Mapping[str, Mapping[str, Any]],
                  resolve: Callable[[str], str], *, start_timeout: float = 120.0) -> LocalContainer:  # fmt: skip
    """Start the pod's only container (a `python -m ...` command) and wait until its port listens.

    Raises:
        RuntimeError: it exited or did not listen in time (with its log tail).
    """
    [container] = pod["spec"]["containers"]
    [container_port] = [p["containerPort"] for p in container.get("ports", [])]

    def secret(name: str, key: str) -> str | None:
        data = (secrets.get(name) or {}).get("data") or {}
        return base64.b64decode(data[key]).decode() if key in data else None

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "JUPYTER_"))}
    env.update(_env(container, secret, resolve))
    port = free_ports(1)[0]
    workdir = Path(tempfile.mkdtemp(prefix=f"kubelet-{pod['metadata']['name']}-"))
    env["HOME"] = str(workdir)
    # The image's `python` is this interpreter; addresses and folders are the container's, mapped here.
    args = [a for a in container.get("args", []) if not a.startswith(("--ip=", "--port=", "--notebook-dir="))]
    argv = [sys.executable, *container["command"][1:], *args, "--ip=127.0.0.1", f"--port={port}",
            f"--notebook-dir={workdir}"]  # fmt: skip
    if os.geteuid() == 0:
        argv.append("--allow-root")
    log = workdir / "container.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + start_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"container exited with {process.returncode}:\n{log_tail(log, 20)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return LocalContainer(process, port, log)
        except OSError:
            time.sleep(0.3)
    stop_container(LocalContainer(process, port, log))
    raise RuntimeError(f"container did not listen on {container_port} within {start_timeout:.0f}s")


def stop_container(container: LocalContainer) -> None:
    """Stop it like the kubelet: SIGTERM, then SIGKILL after a grace period."""
    signal_group(container.process.pid, signal.SIGTERM)
    try:
        container.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        signal_group(container.process.pid, signal.SIGKILL)
        container.process.wait()
