"""`dml job`: submit Ray jobs (to a cluster, or on an ephemeral one), follow logs, status, stop, list.

Job ids are `<cluster>_<hex>`, so `dml job logs ID` finds the cluster without another flag.
"""

from __future__ import annotations

import secrets
import shlex
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from discord_ml.cli.cluster_cmd import Cpu, Gpus, Image, Memory, Pool, Ttl, build_spec, open_session
from discord_ml.cli.common import Backend, Namespace, Output, check_output, fail, print_json, print_table, provider
from discord_ml.cluster.session import CleanupPolicy
from discord_ml.cluster.spec import Purpose
from discord_ml.jobs.records import DashboardUnavailableError, InvalidJobIdError, JobNotFoundError

if TYPE_CHECKING:
    from discord_ml.cluster.provider import ClusterConnection
    from discord_ml.jobs.client import RayJobs

T = TypeVar("T")

app = typer.Typer(help="Submit Ray jobs, follow their logs, inspect and stop them.", no_args_is_help=True)
JobId = Annotated[str, typer.Argument(help="Job id as printed by `dml job submit` (<cluster>_<hex>).")]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--env {pair!r} is not KEY=VALUE; write e.g. --env WANDB_MODE=offline")
        env[key] = value
    return env


def _connect(cluster: str, namespace: str | None, backend: str | None, *, archived_job: str | None = None) -> Any:
    """The cluster's ClusterConnection, or exit 2 naming why it cannot be reached. With `archived_job`,
    None when the cluster is gone but that job's archive exists."""
    from discord_ml.cluster.provider import ClusterError, ClusterNotFoundError

    try:
        return provider(backend).connect(cluster, namespace=namespace)
    except ClusterNotFoundError as exc:
        if archived_job is None or _archived(archived_job) is None:
            fail(str(exc))
        return None
    except ClusterError as exc:
        fail(str(exc))


def _archived(job_id: str) -> Any:
    """The archived (cluster, job) of a deleted cluster's job, or None."""
    from discord_ml.cluster.archive import LogStore

    return LogStore().find_job(job_id)


def _archived_note(job_id: str) -> tuple[Any, Any]:
    archive, job = _archived(job_id)
    typer.echo(f"archived: cluster {archive.name} was deleted at {archive.deleted:%Y-%m-%d %H:%M:%S %Z}; "
               f"job {job.status}", err=True)  # fmt: skip
    return archive, job


def _jobs(cluster: str, namespace: str | None, backend: str | None) -> RayJobs:
    return _jobs_of(_connect(cluster, namespace, backend))


def _jobs_of(connection: ClusterConnection) -> RayJobs:
    # Imported here: httpx (with its rich-based CLI) costs `dml --help` a fifth of a second.
    from discord_ml.jobs.client import RayJobs

    return RayJobs.of(connection)


def _calling(action: Callable[[], T]) -> T:
    """`action()`, or exit 2 with what the Jobs API said (no such job, dashboard unreachable)."""
    try:
        return action()
    except (JobNotFoundError, DashboardUnavailableError, InvalidJobIdError) as exc:
        fail(str(exc))


def _cluster_of(job_id: str, cluster: str | None) -> str:
    if cluster:
        return cluster
    name, sep, _ = job_id.rpartition("_")
    if not sep or not name:
        fail(f"job id {job_id!r} does not name its cluster; pass --cluster NAME")
    return name


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def submit(
    ctx: typer.Context,
    cluster: Annotated[str | None, typer.Option("--cluster", "-c", help="Run on this existing cluster.")] = None,
    gpus: Gpus = None,
    pool: Pool = None,
    workers: Annotated[int | None, typer.Option("--workers", "-w", help="Ephemeral cluster: worker replicas.")] = None,
    memory: Memory = None,
    cpu: Cpu = None,
    image: Image = None,
    ttl: Ttl = "4h",
    working_dir: Annotated[
        str | None, typer.Option("--working-dir", help="Directory uploaded as the job's cwd.")
    ] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE for the job (repeatable).")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Stream logs until the job ends.")] = True,
    namespace: Namespace = None,
    backend: Backend = None,
) -> None:
    """Submit `-- COMMAND` as a Ray job and stream its logs; the exit code mirrors the job's.

    With sizing flags instead of --cluster the cluster is ephemeral: created for the job and
    deleted when it ends or on Ctrl-C.

    Examples:
      dml job submit --cluster ranking -- python train.py --epochs 3
      dml job submit --gpus h100:8 --workers 4 --working-dir . -- python train.py
    """
    command = shlex.join(ctx.args)
    if not command.strip():
        fail("no command to run; put it after --, e.g. dml job submit --cluster NAME -- python train.py")
    sizing = any(v is not None for v in (gpus, pool, workers, memory, cpu, image))
    if cluster and sizing:
        fail("give --cluster NAME or cluster sizing flags (--gpus/--pool/--workers...), not both")
    if not cluster and not sizing:
        fail(
            "say where to run: --cluster NAME, or sizing flags such as --pool cpu --workers 2 for an ephemeral cluster"
        )
    job_env = _parse_env(env or [])
    runtime_env: dict[str, Any] = {"env_vars": job_env} if job_env else {}
    if working_dir:
        runtime_env["working_dir"] = working_dir
    if cluster:
        raise typer.Exit(_run(cluster, namespace, backend, command, runtime_env, wait))
    spec = build_spec(name=None, gpus=gpus, pool=pool, workers=workers or 1, memory=memory, cpu=cpu, image=image,
                      namespace=namespace, ttl=ttl, purpose=Purpose.ADHOC)  # fmt: skip
    # SIGTERM too (a killed CI step, `timeout`): leave through the same teardown as Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    session = open_session(spec, backend=backend, wait=True, timeout_s=600, cleanup=CleanupPolicy.ALWAYS)
    try:
        code = _run(spec.cluster_name, spec.namespace, backend, command, runtime_env, wait=True)
    finally:
        typer.echo(f"deleting ephemeral cluster {spec.cluster_name}", err=True)
        session.close(failed=True)
    raise typer.Exit(code)


def _run(cluster: str, namespace: str | None, backend: str | None, command: str, runtime_env: dict[str, Any],
         wait: bool) -> int:  # fmt: skip
    jobs = _jobs(cluster, namespace, backend)
    job_id = f"{cluster}_{secrets.token_hex(4)}"
    if not wait:
        typer.echo(_calling(lambda: jobs.submit(entrypoint=command, runtime_env=runtime_env, submission_id=job_id)))
        return 0
    typer.echo(f"job {job_id} on {cluster}: {jobs.url(job_id=job_id)}", err=True)
    outcome = _calling(lambda: jobs.submit_and_follow(entrypoint=command, runtime_env=runtime_env, on_line=typer.echo,
                                                      submission_id=job_id, raise_on_failure=False))  # fmt: skip
    typer.echo(f"job {job_id} {outcome.status} in {outcome.duration_s:.1f}s", err=True)
    if outcome.status == "SUCCEEDED":
        return 0
    return outcome.exit_code if outcome.exit_code not in (None, 0) else 1


@app.command()
def logs(
    job_id: JobId,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming until the job ends.")] = False,
    cluster: Annotated[str | None, typer.Option("--cluster", "-c", help="Cluster (default: from the job id).")] = None,
    namespace: Namespace = None,
    backend: Backend = None,
) -> None:
    """Print a job's logs (--follow to stream them); a deleted cluster's jobs from the log archive."""
    connection = _connect(_cluster_of(job_id, cluster), namespace, backend, archived_job=job_id)
    if connection is None:
        from discord_ml.cluster.archive import LogStore

        archive, job = _archived_note(job_id)
        if not job.log_saved:
            fail(f"the log of job {job_id} was not saved: {archive.problem or 'the job had no log'}")
        typer.echo(LogStore().log(archive.key, job_id), nl=False)
        return
    jobs = _jobs_of(connection)
    if follow:
        _calling(lambda: jobs.follow(job_id=job_id, on_line=typer.echo, raise_on_failure=False,
                                     stop_on_interrupt=False))  # fmt: skip
    else:
        typer.echo(_calling(lambda: jobs.logs(job_id=job_id)), nl=False)


@app.command()
def status(
    job_id: JobId,
    cluster: Annotated[str | None, typer.Option("--cluster", "-c", help="Cluster (default: from the job id).")] = None,
    namespace: Namespace = None,
    output: Output = "table",
    backend: Backend = None,
) -> None:
    """Show a job's status."""
    check_output(output)
    connection = _connect(_cluster_of(job_id, cluster), namespace, backend, archived_job=job_id)
    if connection is None:
        _, job = _archived_note(job_id)
        data = {"job_id": job_id, "status": job.status, "message": job.message, "entrypoint": job.entrypoint,
                "exit_code": None}  # fmt: skip
    else:
        info = _calling(lambda: _jobs_of(connection).status(job_id=job_id))
        data = {"job_id": job_id, "status": info.status, "message": info.message, "entrypoint": info.entrypoint,
                "exit_code": info.exit_code}  # fmt: skip
    if output == "json":
        print_json(data)
    else:
        print_table(job_id, ["field", "value"], [[k, str(v)] for k, v in data.items()])


@app.command()
def stop(
    job_id: JobId,
    cluster: Annotated[str | None, typer.Option("--cluster", "-c", help="Cluster (default: from the job id).")] = None,
    namespace: Namespace = None,
    backend: Backend = None,
) -> None:
    """Stop a running job."""
    jobs = _jobs(_cluster_of(job_id, cluster), namespace, backend)
    stopped = _calling(lambda: jobs.stop(job_id=job_id))
    typer.echo(f"job {job_id} {'stopping' if stopped else 'was not running'}")


@app.command("list")
def list_(
    cluster: Annotated[str, typer.Option("--cluster", "-c", help="Cluster whose jobs to list.")],
    namespace: Namespace = None,
    output: Output = "table",
    backend: Backend = None,
) -> None:
    """List a cluster's jobs."""
    check_output(output)
    jobs = _calling(_jobs(cluster, namespace, backend).list)
    rows = [{"job_id": j.job_id, "status": j.status, "entrypoint": j.entrypoint,
             "start_time": j.start.isoformat() if j.start else None,
             "end_time": j.end.isoformat() if j.end else None} for j in jobs]  # fmt: skip
    if output == "json":
        print_json(rows)
    else:
        print_table(
            cluster,
            ["job id", "status", "entrypoint"],
            [[str(r["job_id"]), r["status"], r["entrypoint"]] for r in rows],
        )
