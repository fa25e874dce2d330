"""`dml`: GPU pools, cluster manifests from a few parameters, and the security validator.

Start-up stays light: no ray/torch/kubernetes import on these paths.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from discord_ml.cluster.manifests import build_cluster_manifests, build_ray_job
from discord_ml.cluster.security import validate_manifests
from discord_ml.cluster.spec import ClusterSpec, Purpose, SpecError
from discord_ml.pools import PoolError, get_catalog

app = typer.Typer(
    help="discord_ml: hardened Ray clusters from a few parameters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
USAGE_ERROR = 2


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(USAGE_ERROR)


def _dump(objects: list[dict[str, Any]], output: str) -> str:
    if output == "json":
        return json.dumps(objects if len(objects) > 1 else objects[0], indent=2)
    return yaml.safe_dump_all(objects, sort_keys=False)


@app.command()
def pools(output: Annotated[str, typer.Option("-o", "--output", help="table or json")] = "table") -> None:
    """List the GPU pool catalog (DML_POOLS_FILE, or the packaged default)."""
    try:
        catalog = get_catalog()
    except PoolError as exc:
        raise _fail(str(exc)) from None
    if output == "json":
        typer.echo(json.dumps([p.model_dump() for p in catalog.pools], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("pool", "accelerator", "GPUs/node", "CPU/node", "memory/node", "max workers", title=catalog.source)
    for p in catalog.pools:
        table.add_row(
            p.name, p.accelerator or "-", str(p.gpus_per_node), p.cpu_per_node, p.memory_per_node, str(p.max_workers)
        )
    Console().print(table)


@app.command()
def manifest(
    name: Annotated[str | None, typer.Argument(help="Cluster name (generated when omitted).")] = None,
    gpus: Annotated[str | None, typer.Option("--gpus", help="Pool and GPUs per worker, e.g. h100:8.")] = None,
    pool: Annotated[str | None, typer.Option("--pool", help="GPU pool (see `dml pools`).")] = None,
    workers: Annotated[int, typer.Option("--workers", help="Worker replicas.")] = 1,
    memory: Annotated[str | None, typer.Option("--memory", help="Memory per worker, e.g. 64Gi.")] = None,
    cpu: Annotated[str | None, typer.Option("--cpu", help="CPU per worker, e.g. 16.")] = None,
    image: Annotated[str | None, typer.Option("--image", help="Ray image (allow-listed, pinned).")] = None,
    namespace: Annotated[str | None, typer.Option("--namespace", "-n", help="Kubernetes namespace.")] = None,
    ttl: Annotated[str, typer.Option("--ttl", help="Lifetime, e.g. 4h.")] = "8h",
    purpose: Annotated[Purpose, typer.Option("--purpose", help="What the cluster is for.")] = Purpose.ADHOC,
    entrypoint: Annotated[str | None, typer.Option("--entrypoint", help="Emit a RayJob running this command.")] = None,
    output: Annotated[str, typer.Option("-o", "--output", help="yaml or json")] = "yaml",
) -> None:
    """Print the validated, hardened manifests for a cluster; creates nothing.

    Example: dml manifest ranking --gpus h100:8 --workers 4 --ttl 4h
    """
    if gpus and pool:
        raise _fail("give --gpus (e.g. h100:8) or --pool, not both")
    fields: dict[str, Any] = {"gpu_pool": gpus or pool or "cpu", "workers": workers, "ttl": ttl, "purpose": purpose}
    for key, value in {
        "name": name,
        "worker_memory": memory,
        "worker_cpu": cpu,
        "image": image,
        "namespace": namespace,
    }.items():
        if value is not None:
            fields[key] = value
    try:
        spec = ClusterSpec.build(**fields)
    except SpecError as exc:
        raise _fail(str(exc)) from None
    objects = (
        [build_ray_job(spec, entrypoint), *build_cluster_manifests(spec)[1:]]
        if entrypoint
        else build_cluster_manifests(spec)
    )
    violations = validate_manifests(objects)
    if violations:  # our builders must never produce this; fail loudly if they do
        raise _fail("generated manifests break security rules:\n" + "\n".join(f"  {v}" for v in violations))
    typer.echo(_dump(objects, output))


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="YAML/JSON manifest files ('-' for stdin).")],
) -> None:
    """Check manifests against the restricted Pod Security Standard and the platform's rules.

    Exit code 0 when every object passes, 1 when any rule is broken (each violation is printed with
    its path), 2 when a file cannot be read.
    """
    objects: list[dict[str, Any]] = []
    for path in files:
        try:
            text = sys.stdin.read() if str(path) == "-" else path.read_text()
            objects += [doc for doc in yaml.safe_load_all(text) if isinstance(doc, dict)]
        except (OSError, yaml.YAMLError) as exc:
            raise _fail(f"cannot read {path}: {exc}") from None
    violations = validate_manifests(objects)
    for violation in violations:
        typer.echo(str(violation))
    typer.echo(f"{len(objects)} object(s) checked, {len(violations)} violation(s)", err=True)
    raise typer.Exit(1 if violations else 0)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
