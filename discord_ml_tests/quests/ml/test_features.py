"""The raw contract, row rules and features: every rule named, unseen IDs still featurized."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pyarrow as pa

from discord_ml.quests.ml.features import (
    DENSE,
    REASON,
    SPARSE,
    FeatureSpec,
    featurize,
    hash_bucket,
    matrices,
    schema_problem,
    split_valid,
)
from discord_ml.quests.ml.world import World
from discord_ml_tests.support.quests import tiny


def _rows(**overrides: Any) -> pa.Table:
    base = {
        "impression_id": [1, 2],
        "ts": pa.array([dt.datetime(2026, 11, 1, 20, tzinfo=dt.UTC)] * 2, pa.timestamp("s", tz="UTC")),
        "user_id": [10**16, 10**16 + 1],
        "quest_id": [10**17, 10**17 + 1],
        "country": ["us", "xx"],
        "platform": ["desktop", "mobile"],
        "surface": ["home", "home"],
        "position": pa.array([1, 5], pa.int8()),
        "account_age_days": pa.array([10, 0], pa.int32()),
        "user_level": pa.array([3, 200], pa.int16()),
        "quest_category": ["rpg", "new-genre"],
        "quest_reward": ["orbs", "orbs"],
        "label": pa.array([0, 1], pa.int8()),
    }
    return pa.table({**base, **overrides})


def test_schema_problems_name_the_column() -> None:
    table = _rows()
    assert schema_problem(table.schema) is None
    assert schema_problem(table.drop_columns(["label", "quest_id"]).schema) == "missing column(s) quest_id, label"
    bad = table.set_column(table.schema.get_field_index("position"), "position", pa.array(["1", "5"]))
    assert schema_problem(bad.schema) == "column position has type string, expected integer"


def test_each_rule_gives_its_reason_and_valid_rows_pass() -> None:
    table = pa.concat_tables(
        [
            _rows(),
            _rows(user_id=pa.array([None, 1], pa.int64()), label=pa.array([0, 3], pa.int8())),
            _rows(platform=["toaster", "web"], position=pa.array([0, 9], pa.int8())),
            _rows(account_age_days=pa.array([-1, 5], pa.int32())),
        ]
    )
    valid, invalid = split_valid(table)
    assert valid.num_rows == 3
    assert invalid[REASON].to_pylist() == [
        "user_id is null",
        "label not in 0|1",
        "platform not in desktop|mobile|console|web",
        "position outside 1..5",
        "account_age_days < 0",
    ]


def test_unseen_ids_and_values_still_get_features() -> None:
    features = featurize(_rows(), FeatureSpec())
    sparse, dense = matrices(features)
    assert sparse.shape == (2, len(SPARSE)) and dense.shape == (2, len(DENSE))
    assert features["country_idx"].to_pylist() == [1, 0]  # "xx" → other
    assert features["quest_category_idx"].to_pylist()[1] == 0
    buckets = features["user_bucket"].to_numpy()
    assert ((buckets >= 0) & (buckets < FeatureSpec().user_buckets)).all()


def test_hash_buckets_are_stable_and_spread() -> None:
    ids = np.arange(10**15, 10**15 + 100_000, dtype=np.int64)
    buckets = hash_bucket(ids, 1024, salt=1)
    assert np.array_equal(buckets, hash_bucket(ids, 1024, salt=1))
    counts = np.bincount(buckets, minlength=1024)
    assert counts.min() > 50 and counts.max() < 150  # ~98 per bucket for sequential IDs


def test_world_rows_featurize_without_loss() -> None:
    table, _ = World(tiny(bad_row_rate=0.0)).impressions(0)
    valid, invalid = split_valid(table)
    assert invalid.num_rows == 0
    assert featurize(valid, FeatureSpec()).num_rows == table.num_rows
