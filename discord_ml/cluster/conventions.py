"""Names every backend shares: the labels and annotations that say who a cluster belongs to and how
it is kept, and the Ray head's ports."""

from __future__ import annotations

from discord_ml.cluster.pools import GpuPool
from discord_ml.cluster.spec import ClusterSpec

LABEL_PREFIX = "discord-ml.io"
MANAGED_BY = "discord-ml"
TTL_ANNOTATION = f"{LABEL_PREFIX}/ttl-seconds"
IDLE_ANNOTATION = f"{LABEL_PREFIX}/idle-timeout-seconds"
ACTIVE_ANNOTATION = f"{LABEL_PREFIX}/last-active"  # heartbeats of the Dagster step holding the cluster
RUN_ID_LABEL = "dagster.io/run-id"
JOB_LABEL = "dagster.io/job"
NOTEBOOK_LABEL = f"{LABEL_PREFIX}/notebook-for"  # on a notebook pod: the cluster it attaches to

DASHBOARD_PORT = 8265  # the dashboard and Jobs API
RAY_CLIENT_PORT = 10001


def cluster_labels(spec: ClusterSpec, pool: GpuPool) -> dict[str, str]:
    """Ownership labels on the cluster and every pod: who, what for, which machines, which run."""
    labels = {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": "discord-ml",
        f"{LABEL_PREFIX}/cluster": spec.cluster_name,
        f"{LABEL_PREFIX}/owner": spec.owner,
        f"{LABEL_PREFIX}/team": spec.team,
        f"{LABEL_PREFIX}/purpose": spec.purpose.value,
        f"{LABEL_PREFIX}/gpu-pool": pool.name,
        f"{LABEL_PREFIX}/gpu-type": pool.accelerator or "none",
    }
    if spec.dagster_run_id:
        labels[RUN_ID_LABEL] = spec.dagster_run_id
    if spec.dagster_job:
        labels[JOB_LABEL] = spec.dagster_job
    return {**spec.labels, **labels}
