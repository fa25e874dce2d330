"""`dml cluster`: create, list, get, delete Ray clusters on any backend."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
import yaml

from discord_ml.cli import attach_cmd
from discord_ml.cli.common import (
    Backend,
    Namespace,
    Output,
    age,
    check_output,
    current_owner,
    fail,
    get_cluster,
    info_dict,
    print_json,
    print_table,
    provider,
    require_owner,
)
from discord_ml.cluster.duration import parse_duration
from discord_ml.cluster.session import CleanupPolicy, ClusterSession
from discord_ml.cluster.spec import ClusterSpec, Purpose, SpecError

app = typer.Typer(help="Create, list, inspect and delete Ray clusters.", no_args_is_help=True)

Gpus = Annotated[str | None, typer.Option("--gpus", help="Pool and GPUs per worker, SkyPilot-style: h100:8.")]
Pool = Annotated[str | None, typer.Option("--pool", help="GPU pool (see `dml pools`).")]
Workers = Annotated[int, typer.Option("--workers", "-w", help="Worker replicas.")]
Memory = Annotated[str | None, typer.Option("--memory", help="Memory per worker, e.g. 64Gi.")]
Cpu = Annotated[str | None, typer.Option("--cpu", help="CPU per worker, e.g. 16.")]
Image = Annotated[str | None, typer.Option("--image", help="Ray image (allow-listed registry, pinned tag).")]
Ttl = Annotated[str, typer.Option("--ttl", help="Lifetime before the sweeper deletes it (when idle), e.g. 4h.")]
IdleTimeout = Annotated[
    str | None, typer.Option("--idle-timeout", help="Idle time before the sweeper deletes it, e.g. 30m, or off "
                             "(default: the pool's).")
]  # fmt: skip
PurposeOpt = Annotated[Purpose, typer.Option("--purpose", help="What the cluster is for.")]


def build_spec(
    *, name: str | None, gpus: str | None, pool: str | None, workers: int, memory: str | None, cpu: str | None,
    image: str | None, namespace: str | None, ttl: str, purpose: Purpose, owner: str | None = None,
    team: str | None = None, idle_timeout: str | None = None,
) -> ClusterSpec:  # fmt: skip
    """A validated spec from CLI flags, or exit 2 naming the problem and the fix."""
    if gpus and pool:
        fail("give --gpus (e.g. h100:8) or --pool, not both")
    fields: dict[str, Any] = {"gpu_pool": gpus or pool or "cpu", "workers": workers, "ttl": ttl, "purpose": purpose,
                              "owner": owner or current_owner()}  # fmt: skip
    optional = {"name": name, "worker_memory": memory, "worker_cpu": cpu, "image": image, "namespace": namespace,
                "team": team, "idle_timeout": idle_timeout}  # fmt: skip
    fields.update({k: v for k, v in optional.items() if v is not None})
    try:
        return ClusterSpec.build(**fields)
    except SpecError as exc:
        fail(str(exc))


def render(objects: list[dict[str, Any]], output: str) -> str:
    """Manifests as YAML (multi-document) or JSON."""
    if output == "json":
        return json.dumps(objects if len(objects) > 1 else objects[0], indent=2)
    return yaml.safe_dump_all(objects, sort_keys=False)


@app.command()
def create(
    name: Annotated[str | None, typer.Argument(help="Cluster name (generated when omitted).")] = None,
    gpus: Gpus = None,
    pool: Pool = None,
    workers: Workers = 1,
    memory: Memory = None,
    cpu: Cpu = None,
    image: Image = None,
    namespace: Namespace = None,
    ttl: Ttl = "8h",
    idle_timeout: IdleTimeout = None,
    purpose: PurposeOpt = Purpose.ADHOC,
    team: Annotated[str | None, typer.Option("--team", help="Owning team (label).")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the manifests and check capacity (kuberay); create nothing.")
    ] = False,
    allow_pending: Annotated[
        bool, typer.Option("--allow-pending", help="Create it even if quota or nodes cannot hold it now.")
    ] = False,
    output: Annotated[
        str, typer.Option("--output", "-o", help="Manifest format with --dry-run: yaml or json.")
    ] = "yaml",
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until the cluster is ready.")] = True,
    timeout: Annotated[str, typer.Option("--timeout", help="How long to wait, e.g. 10m.")] = "10m",
    backend: Backend = None,
) -> None:
    """Create a hardened Ray cluster from a few parameters.

    Examples:
      dml cluster create ranking --gpus h100:8 --workers 4 --ttl 4h --purpose train
      dml cluster create --pool cpu --workers 2 --dry-run -o yaml
    """
    check_output(output, ("yaml", "json"))
    try:
        timeout_s = parse_duration(timeout, field="--timeout")
    except ValueError as exc:
        fail(str(exc))
    spec = build_spec(name=name, gpus=gpus, pool=pool, workers=workers, memory=memory, cpu=cpu, image=image,
                      namespace=namespace, ttl=ttl, purpose=purpose, team=team, idle_timeout=idle_timeout)  # fmt: skip
    from discord_ml.cluster.kuberay.manifests import build_cluster_manifests
    from discord_ml.cluster.kuberay.security import validate_manifests
    from discord_ml.settings import get_settings

    manifests = build_cluster_manifests(spec, platform_namespace=get_settings().platform_namespace)
    violations = validate_manifests(manifests)
    if violations:
        fail("the manifests break security rules:\n" + "\n".join(f"  {v}" for v in violations))
    if dry_run:
        typer.echo(render(manifests, output))
        _check_capacity(spec, backend)
        return
    info = open_session(spec, backend=backend, wait=wait, timeout_s=timeout_s, allow_pending=allow_pending).info
    assert info is not None  # an open session has its cluster
    typer.echo(
        f"cluster {info.name} is {info.status}" + (f": dashboard {info.dashboard_url}" if info.dashboard_url else "")
    )
    typer.echo("next:")
    typer.echo(f"  dml job submit --cluster {info.name} -- python train.py")
    typer.echo(f"  dml cluster get {info.name}")
    typer.echo(f"  dml cluster delete {info.name}")


def _check_capacity(spec: ClusterSpec, backend: str | None) -> None:
    """--dry-run: exit 2 when the cluster cannot fit, else say it fits; on the local backend (nothing
    to check) stay silent, so the manifests stay offline."""
    from discord_ml.cluster.backends import default_backend, get_provider
    from discord_ml.cluster.provider import CapacityError, ClusterError, require_capacity

    if (backend or default_backend()) == "local":
        return
    try:
        require_capacity(get_provider(backend), spec)
    except CapacityError as exc:
        fail(str(exc))
    except (ClusterError, ValueError) as exc:  # no cluster to ask: the manifests are still the answer
        typer.echo(f"capacity: not checked ({exc})", err=True)
        return
    typer.echo(f"capacity: {spec.cluster_name} fits (quota and nodes in {spec.namespace})", err=True)


def open_session(spec: ClusterSpec, *, backend: str | None, wait: bool, timeout_s: float, allow_pending: bool = False,
                 cleanup: CleanupPolicy = CleanupPolicy.NEVER) -> ClusterSession:  # fmt: skip
    """Create the cluster and (if `wait`) wait for it with a live status line; exit 2 naming what went
    wrong, with nothing left behind."""
    from rich.console import Console

    from discord_ml.cluster.provider import ClusterError

    clusters = provider(backend)
    session = ClusterSession(clusters, spec, ready_timeout_s=timeout_s, wait=wait, allow_pending=allow_pending,
                             cleanup=cleanup, on_warning=lambda w: typer.echo(f"warning: {w}", err=True))  # fmt: skip
    with Console(stderr=True).status(f"creating {spec.cluster_name} ({clusters.backend}, {spec.gpu_pool} x "
                                     f"{spec.workers})...") as status:  # fmt: skip
        session.on_progress = lambda i: status.update(f"{i.name}: {i.status} {i.reason}".rstrip())
        try:
            session.open()
        except ClusterError as exc:
            fail(str(exc))
    return session


@app.command("list")
def list_(
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A", help="Every namespace.")] = False,
    owner: Annotated[str | None, typer.Option("--owner", help="Only this owner's clusters.")] = None,
    namespace: Namespace = None,
    output: Output = "table",
    backend: Backend = None,
) -> None:
    """List clusters (this namespace by default; -A for all)."""
    check_output(output)
    from discord_ml.settings import get_settings

    selector = {"discord-ml.io/owner": owner} if owner else None
    scope = None if all_namespaces else (namespace or get_settings().default_namespace)
    infos = provider(backend).list(selector, namespace=scope)
    if output == "json":
        print_json([info_dict(i) for i in infos])
        return
    rows = [
        [i.name, i.namespace, i.owner, i.team, i.purpose,
         f"{i.gpu_type} x {i.gpus_per_worker}" if i.gpus_per_worker else "-",
         f"{i.workers_ready}/{i.workers_desired}", f"{i.status}{' (' + i.reason + ')' if i.reason else ''}",
         age(i.created)]
        for i in infos
    ]  # fmt: skip
    print_table(None, ["name", "namespace", "owner", "team", "purpose", "gpu", "workers", "status", "age"], rows)


@app.command()
def get(
    name: Annotated[str, typer.Argument(help="Cluster name.")],
    namespace: Namespace = None,
    output: Output = "table",
    backend: Backend = None,
) -> None:
    """Show one cluster."""
    check_output(output)
    info = get_cluster(name, namespace, backend)
    data = info_dict(info)
    if output == "json":
        print_json(data)
        return
    print_table(
        name, ["field", "value"], [[k, json.dumps(v) if isinstance(v, dict) else str(v)] for k, v in data.items()]
    )


@app.command()
def delete(
    name: Annotated[str, typer.Argument(help="Cluster name.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Delete even another owner's cluster.")] = False,
    namespace: Namespace = None,
    backend: Backend = None,
) -> None:
    """Delete a cluster and everything it started (asks on a terminal; another owner's needs --force)."""
    info = get_cluster(name, namespace, backend)
    require_owner(info, force, "delete it")
    if not yes and sys.stdin.isatty() and not typer.confirm(f"delete cluster {name} ({info.namespace})?"):
        raise typer.Exit(1)
    provider(backend).delete(name, namespace=info.namespace)
    typer.echo(f"deleted cluster {name}")


app.command()(attach_cmd.env)
app.command()(attach_cmd.session)
