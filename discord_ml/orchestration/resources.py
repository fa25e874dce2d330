"""`RayClusterResource`: one Ray cluster per Dagster run, jobs submitted through the Ray Jobs API,
every log line streamed into the run, Pipes results returned, the cluster always cleaned up.

Jobs using it run with the in-process executor, so that every step of a run shares the cluster,
created by the first step that submits a job (after that step validated its config and inputs)
and deleted when the run ends (success, failure or termination).
"""

import getpass
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import dagster as dg
from pydantic import Field, PrivateAttr

from discord_ml.cluster.backends import get_provider
from discord_ml.cluster.names import sanitize_label_value
from discord_ml.cluster.provider import ClusterConnection, ClusterProvider
from discord_ml.cluster.session import CleanupPolicy, ClusterSession
from discord_ml.cluster.spec import ClusterSpec, Purpose
from discord_ml.jobs.client import RayClusterLostError, RayJobFailedError, RayJobs
from discord_ml.jobs.pipes import PipesRayJobLogReader


def cluster_name_for_run(job_name: str, run_id: str) -> str:
    """`<job>-<run id prefix>` as a valid cluster name (`platform-check-5b0d7c62`)."""
    stem = "".join(ch if ch.isalnum() else "-" for ch in job_name.lower()).strip("-")[:30].strip("-") or "run"
    if not stem[0].isalpha():
        stem = f"j{stem}"
    return f"{stem}-{run_id[:8]}"


class RayClusterResource(dg.ConfigurableResource):
    """A Ray cluster provisioned for the run, shared by its steps, deleted when the run ends."""

    backend: Literal["local", "kuberay"] = Field(default="local", description="Cluster backend.")
    gpu_pool: str = Field(default="cpu", description="GPU pool of the workers, or `pool:gpus` (see `dml pools`).")
    workers: int = Field(default=2, ge=0, le=64, description="Worker replicas.")
    worker_cpu: str | None = Field(default=None, description="CPU per worker; default from the pool.")
    worker_memory: str | None = Field(default=None, description="Memory per worker; default from the pool.")
    head_memory: str = Field(default="2Gi", description="Memory of the head node.")
    namespace: str | None = Field(default=None, description="Kubernetes namespace (kuberay); default from settings.")
    team: str = Field(default="ml", description="Owning team, a label on the cluster.")
    ttl: str = Field(default="4h", description="Lifetime after which the sweeper deletes the cluster.")
    cleanup: CleanupPolicy = Field(default=CleanupPolicy.ALWAYS, description="always, on_failure_keep or never.")
    ready_timeout_s: float = Field(default=600.0, gt=0, description="How long to wait for the cluster to be ready.")
    allow_pending: bool = Field(
        default=False,
        description="Create the cluster even when quota or nodes cannot hold it now (it waits, up to ready_timeout_s); "
        "by default such a run fails at once, naming what is short.",
    )

    _provider: ClusterProvider | None = PrivateAttr(default=None)
    _session: ClusterSession | None = PrivateAttr(default=None)  # the run's current cluster, once ready
    _run: dict[str, str] = PrivateAttr(default_factory=dict)
    _created: int = PrivateAttr(default=0)

    # --- lifecycle ----------------------------------------------------------------------------

    def cluster_spec(
        self,
        *,
        run_id: str,
        job_name: str,
        owner: str | None = None,
        gpu_pool: str | None = None,
        workers: int | None = None,
        name: str | None = None,
    ) -> ClusterSpec:
        """The spec of the run's cluster (`gpu_pool`/`workers` override the resource's config);
        validation errors surface before anything is created."""
        fields: dict[str, Any] = {
            "name": name or cluster_name_for_run(job_name, run_id),
            "owner": sanitize_label_value(owner or getpass.getuser()),
            "team": self.team,
            "purpose": Purpose.TRAIN,
            "gpu_pool": gpu_pool or self.gpu_pool,
            "workers": self.workers if workers is None else workers,
            "head_memory": self.head_memory,
            "ttl": self.ttl,
            "dagster_run_id": run_id,
            "dagster_job": sanitize_label_value(job_name),
        }
        optional = {"worker_cpu": self.worker_cpu, "worker_memory": self.worker_memory, "namespace": self.namespace}
        fields.update({k: v for k, v in optional.items() if v is not None})
        return ClusterSpec.build(**fields)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Check the run's cluster config before any step runs (the cluster comes later, with its first step)."""
        run = context.run
        if run is None:  # a sensor or schedule reading the config: no cluster to provision
            return
        self._run = {"run_id": run.run_id, "job_name": run.job_name, "owner": run.tags.get("dagster/user") or ""}
        # The cluster itself is created by the first step that needs it (`ensure_cluster`), after
        # that step has validated its own config and inputs; the resource's config fails here.
        self.cluster_spec(run_id=run.run_id, job_name=run.job_name, owner=self._run["owner"])

    def ensure_cluster(
        self, log: dg.DagsterLogManager, *, gpu_pool: str | None = None, workers: int | None = None
    ) -> ClusterConnection:
        """The run's cluster, created on first use; a step asking for another pool or size gets a
        new one (the previous cluster is deleted first)."""
        if not self._run:
            raise dg.DagsterInvariantViolationError("the Ray cluster resource is only usable inside a run")
        run = self._run
        wanted = self.cluster_spec(run_id=run["run_id"], job_name=run["job_name"], owner=run["owner"],
                                   gpu_pool=gpu_pool, workers=workers)  # fmt: skip
        if self._session is not None and self._session.connection is not None:
            current = self._session.spec
            if (current.gpu_pool, current.gpus_per_worker, current.workers) == (
                wanted.gpu_pool, wanted.gpus_per_worker, wanted.workers):  # fmt: skip
                return self._session.connection
            log.info(f"step needs {wanted.gpu_pool} x {wanted.workers} workers: replacing {current.cluster_name}")
            self._delete(log)
        if self._created:
            wanted = self.cluster_spec(run_id=run["run_id"], job_name=run["job_name"], owner=run["owner"],
                                       gpu_pool=gpu_pool, workers=workers,
                                       name=f"{wanted.cluster_name}-{self._created + 1}")  # fmt: skip
        session = self._open(wanted, log)
        assert session.connection is not None
        return session.connection

    def _open(self, spec: ClusterSpec, log: dg.DagsterLogManager) -> ClusterSession:
        self._provider = self._provider or get_provider(self.backend)
        self._created += 1
        log.info(f"creating Ray cluster {spec.cluster_name} ({self.backend}, {spec.gpu_pool} x {spec.workers} workers)")
        session = ClusterSession(
            self._provider, spec, ready_timeout_s=self.ready_timeout_s, allow_pending=self.allow_pending,
            cleanup=self.cleanup, on_warning=log.warning,
            on_progress=lambda i: log.info(f"cluster {i.name}: {i.status} {i.reason}".rstrip()),
        )  # fmt: skip
        info = session.open()
        self._session = session
        log.info(f"Ray cluster {info.name} ready: dashboard {info.dashboard_url}")
        return session

    def _delete(self, log: dg.DagsterLogManager | None) -> None:
        """Delete the current cluster (a step needs another size): whatever the cleanup policy."""
        session, self._session = self._session, None
        if session is not None and session.delete() and log is not None:
            log.info(f"deleted Ray cluster {session.name}")

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Apply the cleanup policy to the run's cluster, if a step created one."""
        session, self._session = self._session, None
        if session is None:
            return
        deleted = session.close(failed=_run_has_failures(context))
        if context.log is None:
            return
        if deleted:
            context.log.info(f"deleted Ray cluster {session.name}")
        else:
            context.log.warning(f"keeping Ray cluster {session.name} (cleanup={self.cleanup}); "
                                f"delete it with: dml cluster delete {session.name}")  # fmt: skip

    # --- running jobs -------------------------------------------------------------------------

    @property
    def cluster_name(self) -> str:
        """Name of the run's current cluster."""
        assert self._session is not None, "the Ray cluster is not set up"
        return self._session.name

    def run_job(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        entrypoint: str,
        *,
        env: Mapping[str, str] | None = None,
        runtime_env: Mapping[str, Any] | None = None,
        extras: Mapping[str, Any] | None = None,
        gpu_pool: str | None = None,
        workers: int | None = None,
    ) -> list[Any]:
        """Run `entrypoint` as a Ray job with Dagster Pipes; stream its lines into the run's log.

        The run's cluster is created on first use, sized by `gpu_pool`/`workers` when given.

        Returns:
            The Pipes results (MaterializeResult / AssetCheckResult), with the Ray job id and
            dashboard URL added to each materialization's metadata.

        Raises:
            dg.Failure: the Ray job failed; the description carries its last log lines.
        """
        connection = self.ensure_cluster(context.log, gpu_pool=gpu_pool, workers=workers)
        cluster = self._session
        assert cluster is not None
        reader = PipesRayJobLogReader()
        with dg.open_pipes_session(
            context=context,
            context_injector=dg.PipesEnvContextInjector(),
            message_reader=reader,
            extras=dict(extras or {}),
        ) as session:
            base = dict(runtime_env or {})
            env_vars = {**base.get("env_vars", {}), **(env or {}), **session.get_bootstrap_env_vars()}

            def on_line(line: str) -> None:
                if not reader.feed(line):
                    context.log.info(line)

            jobs = RayJobs.of(connection)
            try:
                with cluster.holding(on_error=context.log.debug):
                    outcome = jobs.submit_and_follow(
                        entrypoint=entrypoint,
                        runtime_env={**base, "env_vars": env_vars},
                        metadata={"dagster_run_id": context.run_id},
                        on_line=on_line,
                        on_submitted=lambda job_id: context.log.info(
                            f"submitted Ray job {job_id}: {jobs.url(job_id=job_id)}"
                        ),
                    )
            except RayJobFailedError as exc:
                raise dg.Failure(
                    description=self._explain(exc),
                    metadata={
                        "ray_job_id": exc.job_id,
                        "ray_dashboard": dg.MetadataValue.url(connection.dashboard_url),
                    },
                ) from None
        extra = {
            "ray_job_id": outcome.job_id,
            "ray_dashboard": dg.MetadataValue.url(jobs.url(job_id=outcome.job_id)),
            "ray_cluster": self.cluster_name,
            "ray_job_seconds": dg.MetadataValue.float(round(outcome.duration_s, 2)),
            **self._usage_metadata(),
        }
        return [
            r._replace(metadata={**(r.metadata or {}), **extra}) if isinstance(r, dg.MaterializeResult) else r
            for r in session.get_results()
        ]

    def _usage_metadata(self) -> dict[str, Any]:
        """The run's cluster's use so far: CPU-/GPU-hours and estimated cost (absent without a price)."""
        from discord_ml.cluster.pools import PoolError
        from discord_ml.cluster.provider import ClusterError
        from discord_ml.cluster.usage import usage

        if self._provider is None or self._session is None:
            return {}
        try:
            info = self._provider.get(self._session.name, namespace=self._session.spec.namespace)
            now = datetime.now(UTC)
            used = usage(info.as_json(), ended=None, window=(info.created, now))
        except (ClusterError, PoolError):
            return {}  # metadata is a report: it must not fail a step that succeeded
        if used is None:
            return {}
        metadata: dict[str, Any] = {
            "cluster_cpu_hours": dg.MetadataValue.float(round(used.cpu_hours, 4)),
            "cluster_gpu_hours": dg.MetadataValue.float(round(used.gpu_hours, 4)),
        }
        if used.cost is not None:
            metadata["cluster_cost_usd"] = dg.MetadataValue.float(round(used.cost, 4))
        return metadata

    def _explain(self, exc: RayJobFailedError) -> str:
        """The job's failure; when the cluster itself was lost, what the provider says of it."""
        if not isinstance(exc, RayClusterLostError) or self._provider is None or self._session is None:
            return str(exc)
        name = self._session.name
        try:
            info = self._provider.get(name, namespace=self._session.spec.namespace)
            state = f"{info.status}: {info.reason}" if info.reason else str(info.status)
        except Exception as lookup:  # the provider may be as unreachable as the cluster
            state = f"unknown ({lookup})"
        return (f"Ray cluster {name} was lost while job {exc.job_id} ran; the cluster is {state}. "
                f"A lost head does not come back: rerun the run on a new cluster.\n{exc}")  # fmt: skip


def _run_has_failures(context: dg.InitResourceContext) -> bool:
    run = context.run
    if run is None or context.instance is None:
        return False
    records = context.instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    return bool(records.records)
