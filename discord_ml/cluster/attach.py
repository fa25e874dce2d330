"""What standard Ray tools need to reach a cluster: `ray job submit`, `ray job logs`, `ray list nodes`,
`ray.init()` and `JobSubmissionClient()` read these variables.

The token travels as a file only its owner can read (`RAY_AUTH_TOKEN_PATH`), never as a value on a
command line or in shell history. Ray's Jobs and State clients take their URL from
`RAY_API_SERVER_ADDRESS` before `RAY_ADDRESS`, so one environment serves both kinds of client:
`RAY_ADDRESS` is what `ray.init()` connects to (the GCS locally, Ray Client on Kubernetes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from discord_ml.cluster.conventions import RAY_CLIENT_PORT
from discord_ml.cluster.provider import ClusterConnection

SHELLS = ("bash", "fish", "json")


def ray_address(connection: ClusterConnection) -> str:
    """What `ray.init()` connects to: the GCS where the backend exposes it, else the head's Ray Client port."""
    return connection.address or f"ray://{urlparse(connection.dashboard_url).hostname}:{RAY_CLIENT_PORT}"


def token_file(connection: ClusterConnection, *, home: Path, namespace: str, name: str) -> Path:
    """The cluster's token as a file readable by its owner only: the backend's own where it keeps one
    (local), else a copy under `home/tokens/` written atomically with mode 0600."""
    if connection.token_path:
        return Path(connection.token_path)
    directory = home / "tokens"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{namespace}.{name}"
    write_private(path, connection.token)
    return path


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` with mode 0600, all or nothing."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # never readable by others
    try:
        with os.fdopen(descriptor, "w") as f:
            f.write(text)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)  # nothing half-written left behind
        raise


def live_record(path: Path) -> dict[str, Any] | None:
    """A JSON record written by a running process (its `pid`), or None; the record of a process that
    ended without cleaning up (killed) is removed."""
    try:
        record = json.loads(path.read_text())
        os.kill(int(record["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return record


def session_path(*, home: Path, namespace: str, name: str) -> Path:
    """Where a running `dml cluster session` records its forwarded addresses."""
    return home / "sessions" / f"{namespace}.{name}.json"


def record_session(connection: ClusterConnection, *, home: Path, namespace: str, name: str) -> Path:
    """Record this process's forwarded addresses so `dml cluster env` in another terminal prints them."""
    path = session_path(home=home, namespace=namespace, name=name)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    record = {"pid": os.getpid(), "dashboard_url": connection.dashboard_url, "address": connection.address}
    write_private(path, json.dumps(record))
    return path


def via_session(connection: ClusterConnection, *, home: Path, namespace: str, name: str) -> ClusterConnection | None:
    """`connection` through the forwarded addresses of a live session, if one runs for the cluster."""
    record = live_record(session_path(home=home, namespace=namespace, name=name))
    if record is None:
        return None
    return dataclasses.replace(connection, dashboard_url=record["dashboard_url"], address=record["address"])


def ray_env(connection: ClusterConnection, token: Path) -> dict[str, str]:
    """The variables, in the order they are printed."""
    return {
        "RAY_ADDRESS": ray_address(connection),
        "RAY_API_SERVER_ADDRESS": connection.dashboard_url,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
    }


def render(env: dict[str, str], shell: str) -> str:
    """`export` lines (bash, zsh), `set -gx` lines (fish) or a JSON object."""
    if shell == "json":
        return json.dumps(env, indent=2)
    if shell == "fish":
        return "\n".join(f"set -gx {key} {shlex.quote(value)};" for key, value in env.items())
    return "\n".join(f"export {key}={shlex.quote(value)}" for key, value in env.items())
