"""`dml notebook CLUSTER`: JupyterLab attached to a cluster (its kernels' `ray.init()` connects to it)."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path
from typing import Annotated

import typer

from discord_ml.cli.common import Backend, Namespace, fail, provider


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
    from discord_ml.notebooks import jupyter_launch

    clusters = provider(backend)
    try:
        connection = clusters.connect(cluster, namespace=namespace)
    except ClusterError as exc:
        fail(str(exc))
    launch = jupyter_launch(connection, cluster, host="127.0.0.1", port=port, notebook_dir=notebook_dir,
                            lab_token=secrets.token_urlsafe(24))  # fmt: skip
    typer.echo(f"JupyterLab attached to {cluster} ({launch.ray_address}): {launch.url}")
    typer.echo("stop it with Ctrl-C", err=True)
    try:
        raise typer.Exit(subprocess.call(launch.argv, env=launch.env))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
