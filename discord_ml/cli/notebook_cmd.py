"""`dml notebook CLUSTER`: JupyterLab attached to a cluster (its kernels' `ray.init()` connects to it)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Annotated
from urllib.parse import urlparse

import typer

from discord_ml.cli.common import Backend, Namespace, fail, provider

RAY_CLIENT_PORT = 10001


def notebook(
    cluster: Annotated[str, typer.Argument(help="Cluster to attach to.")],
    port: Annotated[int, typer.Option("--port", help="Port for JupyterLab on 127.0.0.1.")] = 8888,
    notebook_dir: Annotated[Path, typer.Option("--dir", help="Folder JupyterLab opens.")] = Path("."),
    namespace: Namespace = None,
    backend: Backend = None,
) -> None:
    """Start JupyterLab with the cluster's address and token in its environment; print its URL.

    On the local backend kernels reach the cluster's GCS directly. On kuberay they use Ray Client
    (`ray://<head-svc>:10001`), which works where the head service resolves: inside the cluster,
    or after `kubectl port-forward svc/<cluster>-head-svc 10001` with DML_KUBERAY_DASHBOARD=service-ip.

    Example: dml notebook ranking --port 8888
    """
    from discord_ml.cluster.provider import ClusterError

    clusters = provider(backend)
    try:
        connection = clusters.connect(cluster, namespace=namespace)
    except ClusterError as exc:
        fail(str(exc))
    token = connection.headers["Authorization"].removeprefix("Bearer ")
    host = urlparse(connection.dashboard_url).hostname
    address = connection.address or f"ray://{host}:{RAY_CLIENT_PORT}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_")}
    env.update({"RAY_ADDRESS": address, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
                "RAY_DASHBOARD_URL": connection.dashboard_url, "DML_CLUSTER_NAME": cluster})  # fmt: skip
    lab_token = secrets.token_urlsafe(24)
    url = f"http://127.0.0.1:{port}/lab?token={lab_token}"
    typer.echo(f"JupyterLab attached to {cluster} ({address}): {url}")
    typer.echo("stop it with Ctrl-C", err=True)
    argv = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
            "--port-retries=0", f"--IdentityProvider.token={lab_token}",
            f"--notebook-dir={notebook_dir.resolve()}"]  # fmt: skip
    if os.geteuid() == 0:  # containers and CI run as root; Jupyter refuses that unless told
        argv.append("--allow-root")
    try:
        raise typer.Exit(subprocess.call(argv, env=env))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
