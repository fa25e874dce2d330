"""`ray_cluster_check`: a Ray job on the run's cluster that fans tasks out over the workers and
reports what it measured through Dagster Pipes; the platform's end-to-end check."""

from typing import Any

import dagster as dg
from pydantic import Field

from discord_ml.orchestration.resources import RayClusterResource
from discord_ml.orchestration.smoke import SmokeArgs

SMOKE = SmokeArgs()  # the job's defaults are the Launchpad's


class ClusterCheckConfig(dg.Config):
    """How much work the check fans out (the cluster's size is the `ray_cluster` resource's config)."""

    tasks: int = Field(default=SMOKE.tasks, ge=1, le=1000, description="Ray tasks the job fans out over the workers.")
    draws: int = Field(default=SMOKE.draws, ge=1, le=10**8, description="Monte Carlo samples per task.")


@dg.asset(
    group_name="platform",
    kinds={"ray"},
    description="Run a Ray job across the run's cluster and record what it measured.",
)
def ray_cluster_check(
    context: dg.AssetExecutionContext, config: ClusterCheckConfig, ray_cluster: RayClusterResource
) -> Any:
    yield from ray_cluster.run_job(context, SmokeArgs(tasks=config.tasks, draws=config.draws).command())


platform_check_job = dg.define_asset_job(
    "platform_check",
    selection=[ray_cluster_check],
    executor_def=dg.in_process_executor,  # every step shares the run's one Ray cluster
    description="End-to-end check of the platform: cluster up, Ray job, logs streamed, cluster down.",
)
