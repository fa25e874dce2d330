"""Small synthetic quests worlds for the tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

from discord_ml.quests.ml.world import WorldConfig

# The demo's world: big enough that the neural model beats XGBoost, small enough for a test.
DEMO_WORLD: dict[str, Any] = {"users": 2000, "quests": 300, "impressions_per_day": 60_000, "requests_per_day": 2000}
TINY_WORLD: dict[str, Any] = {"users": 200, "quests": 40, "impressions_per_day": 6000, "requests_per_day": 200}
START = dt.date(2026, 11, 1)


def tiny(**overrides: Any) -> WorldConfig:
    return WorldConfig(**{**TINY_WORLD, **overrides})
