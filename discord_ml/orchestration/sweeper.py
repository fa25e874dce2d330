"""`ray_cluster_sweeper`: the Dagster sensor that runs the sweep (`cluster.sweep`) every five minutes,
says what it deleted and what it kept, and fails the runs whose run worker crashed."""

import dagster as dg

from discord_ml.cluster.backends import get_provider
from discord_ml.cluster.sweep import SweepAction, sweep
from discord_ml.orchestration.resources import RayClusterResource
from discord_ml.orchestration.run_statuses import DagsterRunStatuses


@dg.sensor(
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Deletes Ray clusters whose Dagster run has ended, and idle ones past their idle timeout or TTL.",
)
def ray_cluster_sweeper(context: dg.SensorEvaluationContext, ray_cluster: RayClusterResource) -> dg.SkipReason:
    actions = sweep(get_provider(ray_cluster.backend), DagsterRunStatuses(context.instance))
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
