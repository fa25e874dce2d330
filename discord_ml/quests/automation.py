"""The quests pipeline's automation: the landing sensor starts prep for every newly landed day, then
the retrain of the newest day once its whole window has features; the daily schedule retrains on the
latest complete window."""

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG as RANGE_END
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_START_TAG as RANGE_START

from discord_ml.quests.assets import DataLakeResource, quests_prep_job, quests_retrain_job
from discord_ml.quests.config import TrainConfig
from discord_ml.quests.lake import Lake, date_str

# --- the quests pipeline ----------------------------------------------------------------------


CURSOR_DAYS = 120


def contiguous(days: list[date]) -> list[list[date]]:
    """Sorted days split into runs of consecutive days."""
    blocks: list[list[date]] = []
    for day in days:
        if blocks and day - blocks[-1][-1] == timedelta(days=1):
            blocks[-1].append(day)
        else:
            blocks.append([day])
    return blocks


@dataclass
class LandingPlan:
    """What one sensor tick decided."""

    prep: list[date]
    retrain: date | None
    cursor: dict[str, Any]
    skip: str | None


def plan_landing(lake: Lake, cursor: dict[str, Any], window: int) -> LandingPlan:
    """Prep the landed days not requested before (late days included); retrain the newest day once
    its window is prepped."""
    landed = lake.landed_days()
    requested = set(cursor.get("requested", []))
    new = [d for d in landed if date_str(d) not in requested and not lake.complete(lake.features_dir(d))]
    # The cursor remembers the recent requests only; older days are judged by their features alone.
    recent = sorted(requested | {date_str(d) for d in new})[-CURSOR_DAYS:]
    next_cursor: dict[str, Any] = {**cursor, "requested": recent}
    retrain = None
    skip = None
    if landed and (cursor.get("retrained") or "") < date_str(landed[-1]):
        missing = lake.missing_features(landed[-1], window)
        if not missing:
            retrain = landed[-1]
            next_cursor["retrained"] = date_str(retrain)
        elif not new:
            skip = (f"waiting for features of {', '.join(map(date_str, missing))} before retraining "
                    f"{date_str(landed[-1])} (data_window {window})")  # fmt: skip
    if not new and retrain is None and skip is None:
        skip = f"no newly landed day (latest landed: {date_str(landed[-1]) if landed else 'none'})"
    return LandingPlan(new, retrain, next_cursor, skip)


@dg.sensor(
    jobs=[quests_prep_job, quests_retrain_job],
    minimum_interval_seconds=60,
    description="Starts prep when a day's completion marker lands, then the retrain once the window is prepped.",
)
def landed_impressions_sensor(
    context: dg.SensorEvaluationContext, data: DataLakeResource
) -> dg.SensorResult | dg.SkipReason:
    cursor = json.loads(context.cursor) if context.cursor else {}
    plan = plan_landing(data.lake(), cursor, TrainConfig().data_window)
    requests = []
    for block in contiguous(plan.prep):  # a block of days in one run (prep is single-run): one cluster, not N
        first, last = date_str(block[0]), date_str(block[-1])
        tags = {RANGE_START: first, RANGE_END: last}
        requests.append(dg.RunRequest(run_key=f"prep-{first}..{last}", job_name="quests_prep", tags=tags))
    if plan.retrain is not None:
        day = date_str(plan.retrain)
        requests.append(dg.RunRequest(run_key=f"retrain-{day}", partition_key=day, job_name="quests_retrain"))
    if not requests:
        context.update_cursor(json.dumps(plan.cursor))
        return dg.SkipReason(plan.skip or "nothing to do")
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(plan.cursor))


@dg.schedule(
    cron_schedule="0 4 * * *",
    job=quests_retrain_job,
    execution_timezone="UTC",
    description="Daily retrain on the latest window whose days all have features.",
)
def daily_retrain_schedule(
    context: dg.ScheduleEvaluationContext, data: DataLakeResource
) -> dg.RunRequest | dg.SkipReason:
    lake = data.lake()
    window = TrainConfig().data_window
    for day in reversed(lake.landed_days()):
        if not lake.missing_features(day, window):
            tick = (context.scheduled_execution_time or datetime.now(UTC)).strftime("%Y-%m-%d")
            return dg.RunRequest(run_key=f"scheduled-{tick}-{date_str(day)}", partition_key=date_str(day))
    return dg.SkipReason(f"no landed day has features for a whole {window}-day window yet")
