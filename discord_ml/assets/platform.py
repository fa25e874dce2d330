"""`ray_cluster_check`: provisions a real local Ray cluster, runs a Ray job on it through the Jobs
API, streams its log into the run, records what the job measured, and always tears it down."""

import json
from typing import Any

import dagster as dg
from pydantic import Field

from discord_ml.cluster.local import LocalRayCluster
from discord_ml.cluster.spec import ClusterSpec, Purpose
from discord_ml.jobs import submit_and_follow
from discord_ml.ml.smoke_protocol import RESULT_PREFIX


class ClusterCheckConfig(dg.Config):
    """How big a cluster the check provisions and how much work it fans out."""

    gpu_pool: str = Field(default="cpu", description="GPU pool of the workers (the local backend runs `cpu`).")
    workers: int = Field(default=2, ge=1, le=8, description="Worker raylets to start beside the head.")
    worker_memory: str = Field(default="2Gi", description="Memory per worker (Kubernetes quantity).")
    tasks: int = Field(default=8, ge=1, le=1000, description="Ray tasks the job fans out over the workers.")


@dg.asset(
    group_name="platform",
    kinds={"ray"},
    description="Provision a local Ray cluster, run a Ray job across its workers, tear the cluster down.",
)
def ray_cluster_check(context: dg.AssetExecutionContext, config: ClusterCheckConfig) -> dg.MaterializeResult[Any]:
    # Validate before anything is started: bad config never creates a cluster.
    spec = ClusterSpec.build(
        gpu_pool=config.gpu_pool,
        workers=config.workers,
        worker_memory=config.worker_memory,
        head_memory="2Gi",
        purpose=Purpose.ADHOC,
        dagster_run_id=context.run.run_id,
        dagster_job=context.run.job_name,
        ttl="1h",
    )
    result: dict[str, Any] = {}

    def on_line(line: str) -> None:
        if line.startswith(RESULT_PREFIX):
            result.update(json.loads(line.removeprefix(RESULT_PREFIX)))
        context.log.info(line)

    with LocalRayCluster(spec) as cluster:
        context.log.info(f"cluster {spec.cluster_name} ready: dashboard {cluster.dashboard_url}")
        outcome = submit_and_follow(
            cluster.dashboard_url,
            entrypoint=f"python -m discord_ml.ml.smoke --tasks {config.tasks}",
            headers=cluster.auth_headers(),
            on_line=on_line,
        )
    if not result:
        raise dg.Failure(f"Ray job {outcome.job_id} succeeded but printed no {RESULT_PREFIX.strip()} line")
    return dg.MaterializeResult(
        metadata={
            "cluster": spec.cluster_name,
            "ray_job_id": outcome.job_id,
            "job_seconds": dg.MetadataValue.float(round(outcome.duration_s, 2)),
            "log_lines": outcome.lines,
            **{k: v for k, v in result.items() if isinstance(v, int | float | str)},
        }
    )


platform_check_job = dg.define_asset_job(
    "platform_check",
    selection=[ray_cluster_check],
    description="End-to-end check of the platform: cluster up, Ray job, logs streamed, cluster down.",
)
