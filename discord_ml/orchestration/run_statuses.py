"""The status of the Dagster runs that own clusters, in one batch: for the sweep and X-Ray's badges.

They come from the Dagster instance (DAGSTER_HOME: the same run storage as the webserver); without
one every run is unknown (`lifecycle.no_run_statuses`), so run-owned clusters get no orphan verdict.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from discord_ml.cluster.lifecycle import RunStatuses, no_run_statuses
from discord_ml.settings import get_settings

if TYPE_CHECKING:
    import dagster as dg


class DagsterRunStatuses:
    """Statuses from a Dagster instance."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance

    def __call__(self, run_ids: Collection[str]) -> dict[str, str | None]:
        import dagster as dg

        if not run_ids:
            return {}
        found = {run.run_id: run.status.value for run in self.instance.get_runs(dg.RunsFilter(run_ids=list(run_ids)))}
        return {run_id: found.get(run_id) for run_id in run_ids}


def from_environment() -> RunStatuses:
    """Statuses from the instance DAGSTER_HOME names, or none."""
    if get_settings().dagster_home is None:
        return no_run_statuses
    import dagster as dg

    return DagsterRunStatuses(dg.DagsterInstance.get())
