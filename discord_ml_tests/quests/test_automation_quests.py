"""The landing sensor and the daily schedule of the quests pipeline."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg

from discord_ml.quests.assets import DataLakeResource
from discord_ml.quests.automation import (
    RANGE_END,
    RANGE_START,
    contiguous,
    daily_retrain_schedule,
    landed_impressions_sensor,
)
from discord_ml.quests.lake import Lake
from discord_ml.storage import SUCCESS


def _land(lake: Lake, *days: int, features: bool = False) -> None:
    for d in days:
        day = dt.date(2026, 11, d)
        for directory in [lake.impressions_dir(day), *([lake.features_dir(day)] if features else [])]:
            Path(directory).mkdir(parents=True, exist_ok=True)
            Path(directory, SUCCESS).touch()


def _tick(instance: dg.DagsterInstance, root: Path, cursor: str | None) -> tuple[list[dg.RunRequest], str | None, str]:
    with dg.build_sensor_context(instance=instance, cursor=cursor,
                                 resources={"data": DataLakeResource(root=str(root))}) as context:  # fmt: skip
        result = landed_impressions_sensor(context)
        if isinstance(result, dg.SkipReason):
            return [], context.cursor, result.skip_message or ""
        assert isinstance(result, dg.SensorResult)
        return [r for r in result.run_requests or [] if isinstance(r, dg.RunRequest)], result.cursor, ""


def test_contiguous_blocks() -> None:
    days = [dt.date(2026, 11, d) for d in (1, 2, 3, 5, 7, 8)]
    assert [[d.day for d in b] for b in contiguous(days)] == [[1, 2, 3], [5], [7, 8]]


def test_sensor_preps_new_days_then_retrains_once_the_window_is_ready(
    dagster_instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    lake = Lake(str(tmp_path))
    requests, cursor, skip = _tick(dagster_instance, tmp_path, None)
    assert requests == [] and skip == "no newly landed day (latest landed: none)"

    _land(lake, 1, 2, 3, 4, 6)  # day 5 is late
    requests, cursor, _ = _tick(dagster_instance, tmp_path, cursor)
    assert [(r.job_name, r.run_key, r.tags[RANGE_START], r.tags[RANGE_END]) for r in requests] == [
        ("quests_prep", "prep-2026-11-01..2026-11-04", "2026-11-01", "2026-11-04"),
        ("quests_prep", "prep-2026-11-06..2026-11-06", "2026-11-06", "2026-11-06"),
    ]
    assert json.loads(cursor or "{}")["requested"] == ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04",
                                                       "2026-11-06"]  # fmt: skip

    _land(lake, 1, 2, 3, 4, 6, features=True)
    requests, cursor, skip = _tick(dagster_instance, tmp_path, cursor)
    assert requests == [] and skip == "waiting for features of 2026-11-05 before retraining 2026-11-06 (data_window 4)"

    _land(lake, 5)  # the late day lands...
    requests, cursor, _ = _tick(dagster_instance, tmp_path, cursor)
    assert [(r.job_name, r.run_key) for r in requests] == [("quests_prep", "prep-2026-11-05..2026-11-05")]
    _land(lake, 5, features=True)  # ...and is prepped: the newest day's window is complete
    requests, cursor, _ = _tick(dagster_instance, tmp_path, cursor)
    assert [(r.job_name, r.run_key, r.partition_key) for r in requests] == [
        ("quests_retrain", "retrain-2026-11-06", "2026-11-06")
    ]
    requests, cursor, skip = _tick(dagster_instance, tmp_path, cursor)
    assert requests == [] and skip == "no newly landed day (latest landed: 2026-11-06)"


def test_schedule_retrains_the_latest_complete_window(dagster_instance: dg.DagsterInstance, tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    resources = {"data": DataLakeResource(root=str(tmp_path))}
    when = dt.datetime(2026, 11, 10, 4, tzinfo=dt.UTC)
    with dg.build_schedule_context(
        instance=dagster_instance, scheduled_execution_time=when, resources=resources
    ) as ctx:
        skip = daily_retrain_schedule(ctx)
    assert isinstance(skip, dg.SkipReason) and "no landed day has features for a whole 4-day window" in str(
        skip.skip_message)  # fmt: skip
    _land(lake, 1, 2, 3, 4, 5, features=True)
    _land(lake, 6)  # landed, not prepped yet
    with dg.build_schedule_context(
        instance=dagster_instance, scheduled_execution_time=when, resources=resources
    ) as ctx:
        request = daily_retrain_schedule(ctx)
    assert isinstance(request, dg.RunRequest)
    assert (request.partition_key, request.run_key) == ("2026-11-05", "scheduled-2026-11-10-2026-11-05")
