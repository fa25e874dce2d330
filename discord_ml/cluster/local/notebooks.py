"""JupyterLab attached to a Ray cluster: the command and environment, shared by `dml notebook` and X-Ray.

Kernels started by that JupyterLab run `ray.init()` against the cluster: the environment carries
its address and auth token.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from discord_ml.cluster.attach import ray_address
from discord_ml.cluster.provider import ClusterConnection


@dataclass(frozen=True)
class JupyterLaunch:
    """How to start one JupyterLab server and where it will answer."""

    argv: list[str]
    env: dict[str, str]
    url: str
    ray_address: str


def jupyter_launch(connection: ClusterConnection, cluster: str, *, host: str, port: int, notebook_dir: Path,
                   lab_token: str, base_env: Mapping[str, str] | None = None) -> JupyterLaunch:  # fmt: skip
    """The JupyterLab command line and environment for a cluster.

    On the local backend kernels reach the cluster's GCS directly; on kuberay they use Ray Client
    (`ray://<head-svc>:10001`), which works where the head service resolves.
    """
    address = ray_address(connection)
    env = {k: v for k, v in (os.environ if base_env is None else base_env).items() if not k.startswith("RAY_AUTH_")}
    env.update({"RAY_ADDRESS": address, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": connection.token,
                "RAY_DASHBOARD_URL": connection.dashboard_url, "DML_CLUSTER_NAME": cluster})  # fmt: skip
    argv = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--ip={host}", f"--port={port}",
            "--port-retries=0", f"--IdentityProvider.token={lab_token}",
            f"--notebook-dir={notebook_dir.resolve()}"]  # fmt: skip
    if os.geteuid() == 0:  # containers and CI run as root; Jupyter refuses that unless told
        argv.append("--allow-root")
    return JupyterLaunch(argv, env, f"http://{host}:{port}/lab?token={lab_token}", address)
