"""Schedules and sensors.

- The sweeper deletes Ray clusters whose Dagster run is over (a crashed run worker never reached its
  teardown) or that outlived their TTL, and says what it deleted.
- The landing sensor starts prep for every newly landed day, then the retrain of the newest day
  once its whole window has features; the daily schedule retrains on the latest complete window.
"""

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG as RANGE_END
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_START_TAG as RANGE_START

from discord_ml.assets.quests import DataLakeResource, quests_prep_job, quests_retrain_job
from discord_ml.cluster.backends import get_provider
from discord_ml.cluster.lifecycle import staleness
from discord_ml.cluster.manifests import MANAGED_BY
from discord_ml.cluster.provider import ClusterInfo, ClusterProvider
from discord_ml.config import TrainConfig
from discord_ml.lake import Lake, date_str
from discord_ml.resources import RayClusterResource


@dataclass(frozen=True)
class SweepAction:
    """A cluster to delete and why."""

    cluster: ClusterInfo
    reason: str
    kind: str = "orphaned"  # lifecycle.Staleness.kind

    def __str__(self) -> str:
        return f"{self.cluster.namespace}/{self.cluster.name} ({self.reason})"


def plan_sweep(
    clusters: Sequence[ClusterInfo], run_status: Callable[[str], dg.DagsterRunStatus | None], now: datetime
) -> list[SweepAction]:
    """Which platform-managed clusters to delete: past their TTL, or owned by a run that is over."""

    def status_name(run_id: str) -> str | None:
        status = run_status(run_id)
        return status.value if status is not None else None

    actions = []
    for cluster in clusters:
        if cluster.labels.get("app.kubernetes.io/managed-by") != MANAGED_BY:
            continue
        stale = staleness(cluster, status_name, now)
        if stale is not None:
            actions.append(SweepAction(cluster, stale.reason, stale.kind))
    return actions


def instance_run_status(instance: dg.DagsterInstance) -> Callable[[str], dg.DagsterRunStatus | None]:
    """Run status lookup against a Dagster instance (None: no such run)."""

    def run_status(run_id: str) -> dg.DagsterRunStatus | None:
        run = instance.get_run_by_id(run_id)
        return run.status if run is not None else None

    return run_status


def sweep(provider: ClusterProvider, run_status: Callable[[str], dg.DagsterRunStatus | None] | None, *,
          now: datetime | None = None, dry_run: bool = False) -> list[SweepAction]:  # fmt: skip
    """Plan the sweep over the provider's clusters and (unless `dry_run`) delete them.

    Without `run_status` (no Dagster instance to ask) only expired clusters are swept.
    """
    run_status = run_status or (lambda _: dg.DagsterRunStatus.STARTED)  # unknown runs count as alive
    actions = plan_sweep(
        provider.list({"app.kubernetes.io/managed-by": MANAGED_BY}), run_status, now or datetime.now(UTC)
    )
    if not dry_run:
        for action in actions:
            provider.delete(action.cluster.name, namespace=action.cluster.namespace)
    return actions


@dg.sensor(
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Deletes Ray clusters whose Dagster run has ended or that outlived their TTL.",
)
def ray_cluster_sweeper(context: dg.SensorEvaluationContext, ray_cluster: RayClusterResource) -> dg.SkipReason:
    provider = get_provider(ray_cluster.backend)
    actions = sweep(provider, instance_run_status(context.instance))
    for action in actions:
        context.log.info(f"deleted Ray cluster {action}")
        if action.kind == "crashed" and action.cluster.run_id:
            _fail_crashed_run(context.instance, action)
    if not actions:
        return dg.SkipReason("no orphaned or expired Ray clusters")
    return dg.SkipReason(f"deleted {len(actions)} Ray cluster(s): " + "; ".join(str(a) for a in actions))


def _fail_crashed_run(instance: dg.DagsterInstance, action: SweepAction) -> None:
    """Mark the run of a crashed run worker failed, as Dagster's run monitoring would, so that the
    UI stops showing it as running (and a retry policy can pick it up)."""
    run = instance.get_run_by_id(action.cluster.run_id or "")
    if run is not None and not run.is_finished:
        instance.report_run_failed(run, f"the run worker is gone (killed or crashed) and never tore down; the "
                                        f"sweeper deleted its Ray cluster {action.cluster.name}")  # fmt: skip


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
