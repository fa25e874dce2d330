"""`dml notebook CLUSTER`: JupyterLab attached to a cluster (its kernels' `ray.init()` connects to it)."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path
from typing import Annotated

import typer

from discord_ml.cli.common import (
    Backend,
    Namespace,
    current_owner,
    fail,
    get_cluster,
    provider,
    require_owner,
    wait_for_interrupt,
)


def notebook(
    cluster: Annotated[str, typer.Argument(help="Cluster to attach to.")],
    port: Annotated[int, typer.Option("--port", help="Port for JupyterLab on 127.0.0.1 (0: any free port).")] = 8888,
    notebook_dir: Annotated[Path, typer.Option("--dir", help="Folder JupyterLab opens (local backend).")] = Path("."),
    delete: Annotated[bool, typer.Option("--delete", help="kuberay: delete your notebook pod and exit.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Attach to another owner's cluster (admins).")] = False,
    namespace: Namespace = None,
    backend: Backend = None,
) -> None:
    """Start JupyterLab with the cluster's address and token in its environment; print its URL.

    Local backend: JupyterLab runs here until Ctrl-C; kernels reach the cluster's GCS directly.
    kuberay: your notebook pod runs next to the cluster (created on first use, hardened, deleted with
    the cluster); this command forwards it to 127.0.0.1 until Ctrl-C, and the pod keeps running.

    Example: dml notebook ranking --port 8888
    """
    from discord_ml.cluster.provider import ClusterError

    info = get_cluster(cluster, namespace, backend)
    if info.backend == "kuberay":
        require_owner(info, force, "attach a notebook to it")  # a notebook holds the cluster's token
        _kuberay_notebook(cluster, info.namespace, port=port, delete=delete)
        return
    if delete:
        fail("--delete is for kuberay notebook pods; a local notebook stops with Ctrl-C")
    from discord_ml.cluster.activity import record_notebook
    from discord_ml.cluster.local.notebooks import jupyter_launch

    try:
        connection = provider(backend).connect(cluster, namespace=namespace)
    except ClusterError as exc:
        fail(str(exc))
    token = secrets.token_urlsafe(24)
    launch = jupyter_launch(connection, cluster, host="127.0.0.1", port=port, notebook_dir=notebook_dir,
                            lab_token=token)  # fmt: skip
    typer.echo(f"JupyterLab attached to {cluster} ({launch.ray_address}): {launch.url}")
    typer.echo("stop it with Ctrl-C", err=True)
    process = subprocess.Popen(launch.argv, env=launch.env)
    record = record_notebook(info.namespace, cluster, url=f"http://127.0.0.1:{port}", token=token, pid=process.pid)
    try:
        raise typer.Exit(process.wait())
    except KeyboardInterrupt:
        process.terminate()  # it may have had the Ctrl-C too (same process group); this makes sure
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        raise typer.Exit(0) from None
    finally:
        record.unlink(missing_ok=True)


def _kuberay_notebook(cluster: str, namespace: str, *, port: int, delete: bool) -> None:
    from discord_ml.cluster.kuberay.notebook_manifests import notebook_pod_name
    from discord_ml.cluster.kuberay.notebooks import KubeRayNotebooks
    from discord_ml.cluster.kuberay.portforward import ForwardError
    from discord_ml.cluster.kuberay.provider import KubeRayProvider
    from discord_ml.cluster.provider import ClusterError

    clusters = KubeRayProvider(dashboard_access="port-forward")
    notebooks = KubeRayNotebooks(clusters)
    owner = current_owner()
    try:
        if delete:
            mine = [n for n in notebooks.list(cluster, namespace=namespace) if n.owner == owner]
            for pod in mine:
                notebooks.delete(pod)
            typer.echo(f"deleted notebook pod {notebook_pod_name(cluster, owner)}" if mine else "no notebook pod")
            return
        pod = notebooks.launch(cluster, namespace=namespace, owner=owner)
        if not pod.ready:
            typer.echo(f"notebook pod {pod.name} is starting ...", err=True)
        pod = notebooks.wait_running(pod)
        forward = notebooks.forward(pod, local_port=port)
        token = notebooks.token(pod)
    except ForwardError as exc:
        fail(f"{exc}; pick another with --port (0: any free port)")
    except ClusterError as exc:
        fail(str(exc))
    typer.echo(f"JupyterLab in pod {namespace}/{pod.name}, attached to {cluster}: "
               f"http://{forward.address}/lab?token={token}")  # fmt: skip
    typer.echo("Ctrl-C closes the forward; the pod keeps running until the cluster is deleted "
               f"(or: dml notebook {cluster} --delete)", err=True)  # fmt: skip
    wait_for_interrupt(every=1)
    clusters.close()
