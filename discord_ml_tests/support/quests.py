"""Small synthetic quests worlds for the tests, and in-process feature writing (no Ray)."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from discord_ml.quests.lake import Lake
from discord_ml.quests.ml.features import FeatureSpec, featurize, split_valid
from discord_ml.quests.ml.world import WorldConfig
from discord_ml.storage import SUCCESS

# The demo's world: big enough that the neural model beats XGBoost, small enough for a test.
DEMO_WORLD: dict[str, Any] = {"users": 2000, "quests": 300, "impressions_per_day": 60_000, "requests_per_day": 2000}
TINY_WORLD: dict[str, Any] = {"users": 200, "quests": 40, "impressions_per_day": 6000, "requests_per_day": 200}
START = dt.date(2026, 11, 1)


def tiny(**overrides: Any) -> WorldConfig:
    return WorldConfig(**{**TINY_WORLD, **overrides})


def read_dir(lake: Lake, directory: str) -> pa.Table:
    return pa.concat_tables(pq.read_table(f, filesystem=lake.filesystem) for f in lake.files(directory))


def write_features_in_process(lake: Lake, day: dt.date) -> pa.Table:
    """What prep publishes for a day, computed without Ray (for tests that only need features)."""
    valid, _ = split_valid(read_dir(lake, lake.impressions_dir(day)))
    features = featurize(valid, FeatureSpec())
    with lake.publish(lake.features_dir(day)) as staging:
        sink = io.BytesIO()
        pq.write_table(features, sink)
        with lake.filesystem.open_output_stream(f"{staging}/part-0.parquet") as out:
            out.write(sink.getvalue())
    assert lake.complete(lake.features_dir(day)) and SUCCESS
    return features
