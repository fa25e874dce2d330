"""The discord_ml code location: the one place that wires assets, jobs and resources."""

import dagster as dg

from discord_ml.orchestration.platform_check import platform_check_job, ray_cluster_check
from discord_ml.orchestration.resources import RayClusterResource
from discord_ml.orchestration.sweeper import ray_cluster_sweeper
from discord_ml.quests.assets import (
    QUESTS_ASSETS,
    DataLakeResource,
    quests_daily_job,
    quests_prep_job,
    quests_retrain_job,
    raw_impressions,
)
from discord_ml.quests.automation import daily_retrain_schedule, landed_impressions_sensor

defs = dg.Definitions(
    assets=[ray_cluster_check, raw_impressions, *QUESTS_ASSETS],
    jobs=[platform_check_job, quests_prep_job, quests_retrain_job, quests_daily_job],
    schedules=[daily_retrain_schedule],
    sensors=[ray_cluster_sweeper, landed_impressions_sensor],
    resources={"ray_cluster": RayClusterResource(), "data": DataLakeResource()},
)
