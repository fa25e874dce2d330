"""Schedules and sensors. The sweeper deletes Ray clusters whose Dagster run is over (a crashed run
worker never reached its teardown) or that outlived their TTL, and says what it deleted."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg

from discord_ml.cluster.backends import get_provider
from discord_ml.cluster.manifests import MANAGED_BY
from discord_ml.cluster.provider import ClusterInfo, ClusterProvider
from discord_ml.resources import RayClusterResource

FINISHED = frozenset({dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED})


@dataclass(frozen=True)
class SweepAction:
    """A cluster to delete and why."""

    cluster: ClusterInfo
    reason: str

    def __str__(self) -> str:
        return f"{self.cluster.namespace}/{self.cluster.name} ({self.reason})"


def plan_sweep(
    clusters: Sequence[ClusterInfo], run_status: Callable[[str], dg.DagsterRunStatus | None], now: datetime
) -> list[SweepAction]:
    """Which platform-managed clusters to delete: past their TTL, or owned by a run that is over."""
    actions = []
    for cluster in clusters:
        if cluster.labels.get("app.kubernetes.io/managed-by") != MANAGED_BY:
            continue
        if cluster.expired(now):
            age = int((now - cluster.created).total_seconds())
            actions.append(SweepAction(cluster, f"past its TTL: {age}s old, TTL {cluster.ttl_seconds}s"))
        elif cluster.run_id is not None:
            status = run_status(cluster.run_id)
            if status is None:
                actions.append(SweepAction(cluster, f"its Dagster run {cluster.run_id} does not exist"))
            elif status in FINISHED:
                actions.append(SweepAction(cluster, f"its Dagster run {cluster.run_id} is {status.value}"))
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
    if not actions:
        return dg.SkipReason("no orphaned or expired Ray clusters")
    return dg.SkipReason(f"deleted {len(actions)} Ray cluster(s): " + "; ".join(str(a) for a in actions))
