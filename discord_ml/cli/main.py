"""`dml`: hardened Ray clusters from a few parameters, Ray jobs, and the platform's housekeeping.

Start-up stays light: `dml --help` and `dml cluster create --dry-run` import no ray, torch,
kubernetes, dagster or httpx (a test asserts it).
"""

from __future__ import annotations

import faulthandler
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from discord_ml.cli import cluster_cmd, data_cmd, job_cmd, notebook_cmd, ui_cmd, usage_cmd
from discord_ml.cli.common import USAGE_ERROR, Backend, Output, check_output, fail, print_json, print_table, provider

app = typer.Typer(
    help="discord_ml: hardened Ray clusters from a few parameters, Ray jobs, logs, teardown.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(cluster_cmd.app, name="cluster")
app.add_typer(job_cmd.app, name="job")
app.add_typer(data_cmd.app, name="data")
app.command()(notebook_cmd.notebook)
app.command()(ui_cmd.ui)
app.command()(usage_cmd.usage)


@app.command()
def pools(output: Output = "table") -> None:
    """List the GPU pool catalog (DML_POOLS_FILE, or the packaged default)."""
    check_output(output)
    from discord_ml.cluster.pools import PoolError, get_catalog

    try:
        catalog = get_catalog()
    except PoolError as exc:
        fail(str(exc))
    if output == "json":
        print_json([p.model_dump() for p in catalog.pools])
        return
    rows = [[p.name, p.accelerator or "-", str(p.gpus_per_node), p.cpu_per_node, p.memory_per_node, str(p.max_workers)]
            for p in catalog.pools]  # fmt: skip
    print_table(catalog.source, ["pool", "accelerator", "GPUs/node", "CPU/node", "memory/node", "max workers"], rows)


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="YAML/JSON manifest files ('-' for stdin).")],
) -> None:
    """Check manifests against the restricted Pod Security Standard and the platform's rules.

    Exit code 0 when every object passes, 1 when any rule is broken (each violation is printed with
    its path), 2 when a file cannot be read.
    """
    from discord_ml.cluster.kuberay.security import validate_manifests

    objects: list[dict[str, Any]] = []
    for path in files:
        try:
            text = sys.stdin.read() if str(path) == "-" else path.read_text()
            objects += [doc for doc in yaml.safe_load_all(text) if isinstance(doc, dict)]
        except (OSError, yaml.YAMLError) as exc:
            fail(f"cannot read {path}: {exc}")
    violations = validate_manifests(objects)
    for violation in violations:
        typer.echo(str(violation))
    typer.echo(f"{len(objects)} object(s) checked, {len(violations)} violation(s)", err=True)
    raise typer.Exit(1 if violations else 0)


@app.command()
def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be deleted; delete nothing.")] = False,
    backend: Backend = None,
) -> None:
    """Delete orphaned, expired and idle clusters (never busy ones): the Dagster sensor's sweep, by hand.

    With DAGSTER_HOME set, clusters whose Dagster run has ended are swept too; without it only
    clusters past their TTL.
    """
    from discord_ml.cluster.sweep import sweep
    from discord_ml.orchestration.run_statuses import from_environment
    from discord_ml.settings import get_settings

    if get_settings().dagster_home is None:
        typer.echo("DAGSTER_HOME is not set: only clusters past their TTL or idle are swept", err=True)
    actions = sweep(provider(backend), from_environment(), dry_run=dry_run)
    for action in actions:
        typer.echo(f"{('would delete' if dry_run else 'deleted') if action.delete else 'kept'} {action}")
    if not actions:
        typer.echo("nothing to sweep")


def main() -> None:
    """Console-script entry point."""
    # `kill -USR1 PID` prints every thread's stack to stderr: how to see where a stuck `dml` waits.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    from discord_ml.cluster.provider import ClusterError

    try:
        app()
    except ClusterError as exc:  # no usable cluster, a refused call: one line, not a traceback
        typer.echo(f"error: {exc}", err=True)
        sys.exit(USAGE_ERROR)


if __name__ == "__main__":
    main()
