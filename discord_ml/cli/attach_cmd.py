"""`dml cluster env` and `dml cluster session`: standard Ray tools pointed at a cluster, from a laptop too."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from discord_ml.cli.common import Backend, Namespace, fail, get_cluster, provider, require_owner, wait_for_interrupt

Shell = Annotated[str, typer.Option("--shell", help="bash (also zsh), fish or json.")]
Force = Annotated[bool, typer.Option("--force", help="Allow another owner's cluster (admins).")]


def env(
    name: Annotated[str, typer.Argument(help="Cluster name.")],
    shell: Shell = "bash",
    force: Force = False,
    namespace: Namespace = None,
    backend: Backend = None,
) -> None:
    """Print what standard Ray tools need to reach a ready cluster.

    On kuberay, while `dml cluster session NAME` runs (another terminal), the addresses are its
    forwarded ports on 127.0.0.1; otherwise they are in-cluster addresses.

    Examples:
      eval "$(dml cluster env ranking)"
      ray job submit -- python train.py     # also: ray job logs, ray list nodes, ray.init()
      dml cluster env ranking --shell fish | source
    """
    from discord_ml.cluster.attach import SHELLS, ray_env, render, token_file, via_session
    from discord_ml.cluster.provider import ClusterError
    from discord_ml.settings import get_settings

    if shell not in SHELLS:
        fail(f"--shell {shell!r} is not supported; use one of: {', '.join(SHELLS)}")
    info = get_cluster(name, namespace, backend)
    require_owner(info, force, "print its token path")  # the token is its owner's
    home, forwarded = get_settings().home, None
    if info.backend == "kuberay" and get_settings().kuberay_dashboard == "port-forward":
        # This command's own forwards would close as it exits; only a session's outlive it.
        from discord_ml.cluster.kuberay.provider import KubeRayProvider

        clusters = KubeRayProvider(dashboard_access="dns")
    else:
        clusters = provider(backend)
    try:
        connection = clusters.connect(name, namespace=info.namespace)
    except ClusterError as exc:
        fail(f"{exc}; wait until it is ready (dml cluster get {name})")
    if info.backend == "kuberay":
        forwarded = via_session(connection, home=home, namespace=info.namespace, name=name)
        if forwarded is None and get_settings().kuberay_dashboard == "port-forward":
            fail(f"no session is open for {name!r}; run `dml cluster session {name}` in another terminal first")
    token = token_file(connection, home=home, namespace=info.namespace, name=name)
    typer.echo(render(ray_env(forwarded or connection, token), shell))
    if info.backend == "kuberay" and forwarded is None:
        typer.echo(f"note: these addresses resolve inside the Kubernetes cluster only; from a laptop, run "
                   f"`dml cluster session {name}` in another terminal and this command again", err=True)  # fmt: skip


def session(
    name: Annotated[str, typer.Argument(help="Cluster name (kuberay).")],
    dashboard_port: Annotated[
        int, typer.Option("--dashboard-port", help="Local port for the dashboard and Jobs API (0: any free port).")
    ] = 8265,
    client_port: Annotated[
        int, typer.Option("--client-port", help="Local port for Ray Client, `ray.init()` (0: any free port).")
    ] = 10001,
    shell: Shell = "bash",
    force: Force = False,
    namespace: Namespace = None,
    backend: Backend = None,
) -> None:
    """Forward a kuberay cluster's dashboard/Jobs API and Ray Client ports to 127.0.0.1 until Ctrl-C.

    The ports go through the Kubernetes API (`pods/portforward`, your kubeconfig's credentials);
    nothing is exposed beyond the cluster's ClusterIP service. Prints the `dml cluster env` block
    for the forwarded addresses, which `dml cluster env NAME` also prints while the session runs.

    Examples:
      dml cluster session ranking                 # keep it running
      eval "$(dml cluster env ranking)"           # in another terminal
      ray job submit -- python train.py
    """
    from discord_ml.cluster.attach import SHELLS, ray_env, record_session, render, token_file
    from discord_ml.cluster.conventions import DASHBOARD_PORT, RAY_CLIENT_PORT
    from discord_ml.cluster.kuberay.portforward import ForwardError
    from discord_ml.cluster.kuberay.provider import KubeRayProvider
    from discord_ml.cluster.provider import ClusterError, ClusterNotFoundError
    from discord_ml.settings import get_settings

    if shell not in SHELLS:
        fail(f"--shell {shell!r} is not supported; use one of: {', '.join(SHELLS)}")
    info = get_cluster(name, namespace, backend)
    if info.backend != "kuberay":
        fail(f"cluster {name!r} is on the {info.backend} backend, which this machine reaches directly; "
             f'use: eval "$(dml cluster env {name})"')  # fmt: skip
    require_owner(info, force, "open a session to it")
    clusters = KubeRayProvider(dashboard_access="port-forward")
    home, ns = get_settings().home, info.namespace
    record = None
    try:
        try:
            dashboard = clusters.forward(name, namespace=ns, remote_port=DASHBOARD_PORT, local_port=dashboard_port)
            client = clusters.forward(name, namespace=ns, remote_port=RAY_CLIENT_PORT, local_port=client_port)
            connection = clusters.connect(name, namespace=ns)  # through the two forwards just opened
        except ForwardError as exc:
            fail(f"{exc}; pick others with --dashboard-port / --client-port (0: any free port)")
        except ClusterError as exc:
            fail(f"{exc}; wait until it is ready (dml cluster get {name})")
        token = token_file(connection, home=home, namespace=ns, name=name)
        typer.echo(render(ray_env(connection, token), shell))
        sys.stdout.flush()
        record = record_session(connection, home=home, namespace=ns, name=name)
        typer.echo(f"forwarding {dashboard.address} -> dashboard and Jobs API, {client.address} -> Ray Client of "
                   f"{ns}/{name}; in another terminal: eval \"$(dml cluster env {name})\"; Ctrl-C ends the session",
                   err=True)  # fmt: skip

        def still_there() -> None:
            try:
                clusters.get(name, namespace=ns)
            except ClusterNotFoundError:
                typer.echo(f"cluster {name!r} was deleted; the session ends", err=True)
                raise typer.Exit(1) from None
            except ClusterError:
                pass  # the API is briefly unreachable: the forwards retry per connection

        wait_for_interrupt(still_there)
    finally:
        clusters.close()
        if record is not None:
            record.unlink(missing_ok=True)
    typer.echo("session closed", err=True)
