"""Test-only assets and jobs around RayClusterResource (module-level so subprocesses can load them)."""

from typing import Any

import dagster as dg

from discord_ml.orchestration.resources import RayClusterResource

MARKER = "dml-test-job-running"


@dg.asset
def failing_ray_job(context: dg.AssetExecutionContext, ray_cluster: RayClusterResource) -> Any:
    script = "import sys; [print(f'step {i}', flush=True) for i in range(5)]; print('boom: bad shard'); sys.exit(4)"
    yield from ray_cluster.run_job(context, f'python -c "{script}"')


@dg.asset
def slow_ray_job(context: dg.AssetExecutionContext, ray_cluster: RayClusterResource) -> Any:
    script = f"import time; print('{MARKER}', flush=True); time.sleep(600)"
    yield from ray_cluster.run_job(context, f'python -c "{script}"')


def _job(name: str, asset: dg.AssetsDefinition, **resource_config: Any) -> dg.JobDefinition:
    return dg.Definitions(
        assets=[asset],
        jobs=[dg.define_asset_job(name, selection=[asset], executor_def=dg.in_process_executor)],
        resources={"ray_cluster": RayClusterResource(workers=1, **resource_config)},
    ).resolve_job_def(name)


def failing_job(cleanup: str = "always") -> dg.JobDefinition:
    return _job("failing_job", failing_ray_job, cleanup=cleanup)


def slow_job() -> dg.JobDefinition:
    return _job("slow_job", slow_ray_job)
