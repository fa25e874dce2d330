"""The discord_ml code location: the one place that wires assets, jobs and resources."""

import dagster as dg

from discord_ml.assets.platform import platform_check_job, ray_cluster_check
from discord_ml.automation import ray_cluster_sweeper
from discord_ml.resources import RayClusterResource

defs = dg.Definitions(
    assets=[ray_cluster_check],
    jobs=[platform_check_job],
    sensors=[ray_cluster_sweeper],
    resources={"ray_cluster": RayClusterResource()},
)
