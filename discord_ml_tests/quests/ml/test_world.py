"""The synthetic world: deterministic, power-law, drifting, cold start every day, truth kept apart."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from discord_ml.quests.lake import Lake
from discord_ml.quests.ml.world import World, generate
from discord_ml_tests.support.quests import START, tiny


def test_same_config_same_day_same_bytes() -> None:
    a, _ = World(tiny()).impressions(3)
    b, _ = World(tiny()).impressions(3)
    assert a.equals(b)
    c, _ = World(tiny(seed=8)).impressions(3)
    assert not a.equals(c)


def test_ids_are_high_cardinality_and_activity_is_a_power_law() -> None:
    world = World(tiny(users=2000, impressions_per_day=40_000))
    table, _ = world.impressions(0)
    users = table["user_id"].drop_null().to_numpy()
    assert users.min() > 10**15  # snowflake-like, meaningless order
    _, counts = np.unique(users, return_counts=True)
    top = np.sort(counts)[::-1]
    assert top[: len(top) // 100].sum() > 0.1 * counts.sum()  # the top 1% of users make >10% of impressions


def test_new_users_and_quests_appear_every_day_and_preferences_drift() -> None:
    world = World(tiny(users=3000, quests=300))
    users_1, quests_1 = world.active(1)
    users_40, quests_40 = world.active(40)
    assert len(set(users_40) - set(users_1)) > 0 and len(set(quests_40) - set(quests_1)) > 0
    requests, _ = world.requests(40)
    assert any(requests["user_is_new"].to_pylist()) or any(requests["quest_is_new"].to_pylist())
    # The same (user, quest, context) has a different true probability a month later: drift.
    ctx = {"platform": np.array([0]), "surface": np.array([0]), "position": np.array([1]), "hour": np.array([20])}
    u, q = np.array([int(users_1[0])]), np.array([int(quests_1[0])])
    assert world.probability(1, u, q, ctx)[0] != pytest.approx(world.probability(31, u, q, ctx)[0], abs=1e-3)


def test_labels_follow_the_true_probability_which_is_not_a_column(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    generate(lake, days=2, config=tiny(impressions_per_day=30_000, bad_row_rate=0.0))
    day = START + dt.timedelta(days=1)
    raw = pq.read_table(lake.impressions_dir(day))
    assert "p_true" not in raw.column_names
    truth = pq.read_table(lake.truth_dir("impressions", day))
    joined = raw.join(truth, "impression_id")
    assert abs(joined["label"].to_numpy().mean() - joined["p_true"].to_numpy().mean()) < 0.01
    # Tomorrow's request slates and their truth land with the day; the marker last.
    assert lake.files(lake.requests_dir(day + dt.timedelta(days=1)))
    assert lake.landed_days() == [START, day]


def test_generate_continues_the_world_and_refuses_a_different_one(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    generate(lake, days=1, config=tiny())
    [landed] = generate(lake, days=1)
    assert landed["date"] == "2026-11-02"
    with pytest.raises(ValueError, match="different config"):
        generate(lake, days=1, config=tiny(users=999))


def test_bad_rows_are_injected_at_the_configured_rate() -> None:
    table, _ = World(tiny(impressions_per_day=50_000, bad_row_rate=0.01)).impressions(0)
    bad = (
        table["user_id"].null_count
        + int((table["label"].to_numpy() > 1).sum())
        + int((table["position"].to_numpy() < 1).sum())
        + int((table["account_age_days"].to_numpy() < 0).sum())
    )
    assert 300 < bad < 700
