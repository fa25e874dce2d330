"""Schedules and sensors.

- The sweeper deletes Ray clusters whose Dagster run is over (a crashed run worker never reached its
  teardown), and idle ones past their idle timeout or TTL (never one a job, a notebook kernel or a
  Dagster step is using), and says what it deleted and what it kept.
- The landing sensor starts prep for every newly landed day, then the retrain of the newest day
  once its whole window has features; the daily schedule retrains on the latest complete window.
"""

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG as RANGE_END
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_START_TAG as RANGE_START

from discord_ml.cluster.activity import Activity, idle_seconds, read_activity
from discord_ml.cluster.backends import get_provider
from discord_ml.cluster.duration import human_age
from discord_ml.cluster.kuberay.manifests import MANAGED_BY
from discord_ml.cluster.lifecycle import staleness
from discord_ml.cluster.provider import ClusterInfo, ClusterProvider
from discord_ml.orchestration.resources import RayClusterResource
from discord_ml.quests.assets import DataLakeResource, quests_prep_job, quests_retrain_job
from discord_ml.quests.config import TrainConfig
from discord_ml.quests.lake import Lake, date_str


@dataclass(frozen=True)
class SweepAction:
    """A cluster to delete (or, `delete=False`, kept although stale because it is in use) and why."""

    cluster: ClusterInfo
    reason: str
    kind: str = "orphaned"  # lifecycle.Staleness.kind, "idle", or "busy" (kept)
    delete: bool = True

    def __str__(self) -> str:
        return f"{self.cluster.namespace}/{self.cluster.name} ({self.reason})"


ActivityLookup = Callable[[ClusterInfo], Activity]


def plan_sweep(
    clusters: Sequence[ClusterInfo],
    run_status: Callable[[str], dg.DagsterRunStatus | None],
    now: datetime,
    activity: ActivityLookup | None = None,
) -> list[SweepAction]:
    """Which platform-managed clusters to delete: owned by a run that is over (whatever they run: the run's
    teardown never came); past their TTL or idle longer than their idle timeout, unless something uses
    them (`activity`: a Ray job, a busy notebook kernel, a Dagster step's heartbeat). Such busy clusters
    come back as kept actions (`delete=False`) saying what holds them."""

    def status_name(run_id: str) -> str | None:
        status = run_status(run_id)
        return status.value if status is not None else None

    actions = []
    for cluster in clusters:
        if cluster.labels.get("app.kubernetes.io/managed-by") != MANAGED_BY:
            continue
        run_stale = staleness(dataclasses.replace(cluster, ttl_seconds=None), status_name, now)
        if run_stale is not None:
            actions.append(SweepAction(cluster, run_stale.reason, run_stale.kind))
            continue
        expired = staleness(cluster, status_name, now)
        timeout = cluster.idle_timeout_seconds
        quiet_since = max(cluster.created, cluster.last_active or cluster.created)
        maybe_idle = timeout is not None and (now - quiet_since).total_seconds() > timeout
        if expired is None and not maybe_idle:
            continue
        seen = activity(cluster) if activity is not None else Activity()
        if seen.busy:
            why = expired.reason if expired else "idle timeout reached by the last heartbeat"
            actions.append(SweepAction(cluster, f"kept, {why}, but in use: {', '.join(seen.busy)}", "busy", False))
        elif expired is not None:
            actions.append(SweepAction(cluster, expired.reason, expired.kind))
        else:
            idle = idle_seconds(cluster, seen, now) or 0.0
            if timeout is not None and idle > timeout:
                since = (now - timedelta(seconds=idle)).strftime("%Y-%m-%d %H:%M:%S")
                why = (f"idle for {human_age(idle)} (timeout {human_age(timeout)}): no Ray job, busy notebook kernel "
                       f"or Dagster step since {since}")  # fmt: skip
                actions.append(SweepAction(cluster, why, "idle"))
    return actions


def instance_run_status(instance: dg.DagsterInstance) -> Callable[[str], dg.DagsterRunStatus | None]:
    """Run status lookup against a Dagster instance (None: no such run)."""

    def run_status(run_id: str) -> dg.DagsterRunStatus | None:
        run = instance.get_run_by_id(run_id)
        return run.status if run is not None else None

    return run_status


def sweep(provider: ClusterProvider, run_status: Callable[[str], dg.DagsterRunStatus | None] | None, *,
          now: datetime | None = None, dry_run: bool = False) -> list[SweepAction]:  # fmt: skip
    """Plan the sweep over the provider's clusters and (unless `dry_run`) delete those to delete; their
    job logs are archived first (the provider's delete).

    Without `run_status` (no Dagster instance to ask) only expired and idle clusters are swept.
    """
    run_status = run_status or (lambda _: dg.DagsterRunStatus.STARTED)  # unknown runs count as alive
    now = now or datetime.now(UTC)
    actions = plan_sweep(provider.list({"app.kubernetes.io/managed-by": MANAGED_BY}), run_status, now,
                         lambda cluster: read_activity(provider, cluster, now=now))  # fmt: skip
    if not dry_run:
        for action in actions:
            if action.delete:
                provider.delete(action.cluster.name, namespace=action.cluster.namespace)
    return actions


@dg.sensor(
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Deletes Ray clusters whose Dagster run has ended, and idle ones past their idle timeout or TTL.",
)
def ray_cluster_sweeper(context: dg.SensorEvaluationContext, ray_cluster: RayClusterResource) -> dg.SkipReason:
    provider = get_provider(ray_cluster.backend)
    actions = sweep(provider, instance_run_status(context.instance))
    for action in actions:
        context.log.info(f"{'deleted' if action.delete else 'kept'} Ray cluster {action}")
        if action.kind == "crashed" and action.cluster.run_id:
            _fail_crashed_run(context.instance, action)
    deleted = [a for a in actions if a.delete]
    if not actions:
        return dg.SkipReason("no orphaned, expired or idle Ray clusters")
    kept = len(actions) - len(deleted)
    summary = f"deleted {len(deleted)} Ray cluster(s)" + (f"; kept {kept} in use" if kept else "")
    return dg.SkipReason(f"{summary}: " + "; ".join(str(a) for a in actions))


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
