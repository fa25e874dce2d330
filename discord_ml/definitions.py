"""The discord_ml code location: the one place that wires assets, jobs and resources."""

import dagster as dg

from discord_ml.assets.platform import platform_check_job, ray_cluster_check

defs = dg.Definitions(
    assets=[ray_cluster_check],
    jobs=[platform_check_job],
)
