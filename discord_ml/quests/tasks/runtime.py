"""What every Ray job of the pipeline does first."""

from __future__ import annotations

import ray


def init_ray() -> None:
    """Connect to the cluster the job was submitted to, with quiet, predictable Ray Data settings."""
    ray.init()
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the log goes to Dagster line by line: bars are noise
    # Ray 2.60's datasource V2 reads Parquet footers in helper actors, one of which aborted with a
    # corrupt abseil mutex here; the V1 reader does the same work in the read tasks.
    context.use_datasource_v2 = False
