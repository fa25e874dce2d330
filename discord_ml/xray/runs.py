"""The status of the Dagster runs that own clusters, for the orphan badges.

X-Ray reads the Dagster instance (DAGSTER_HOME: the same run storage as the webserver) in one batch
per page; without one, run-owned clusters are shown without an orphan verdict.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dagster as dg


RunStatuses = Callable[[Collection[str]], dict[str, str | None]]
"""Run ids -> Dagster status name; a run id absent from the answer is unknown, None is missing."""


def no_run_statuses(run_ids: Collection[str]) -> dict[str, str | None]:
    """Used when there is no Dagster instance to ask: every run is unknown."""
    return {}


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
    if not os.environ.get("DAGSTER_HOME"):
        return no_run_statuses
    import dagster as dg

    return DagsterRunStatuses(dg.DagsterInstance.get())
