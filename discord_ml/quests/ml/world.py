"""A seeded synthetic Quests world that lands raw data the way an upstream system would.

Users and quests carry latent preference vectors (so ID embeddings matter), activity and exposure
follow power laws over high-cardinality 63-bit IDs, preferences drift by a slow rotation, and new
users and quests appear every day (cold start). Every impression's label is drawn from a true
participation probability that is kept in a separate, eval-only dataset and is never a feature.

Per landed day D it writes:
- `landing/impressions/date=D/part-*.parquet` and the completion marker `_SUCCESS` (last);
- `landing/requests/date=D+1/requests.parquet`: tomorrow's (user, K candidate quests) slates;
- `eval_truth/{impressions,requests}/date=…/truth.parquet`: the true probabilities.

The whole world is a function of its config (kept in `landing/_world.json`), so days can be
generated one at a time, in any order, on any machine.
"""

from __future__ import annotations

import datetime as dt
import io
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from discord_ml.quests.lake import Lake, date_str
from discord_ml.quests.ml.schema import CATEGORIES, COUNTRIES, MAX_POSITION, PLATFORMS, REWARDS, SURFACES
from discord_ml.storage import SUCCESS

HORIZON_DAYS = 120  # users join and quests launch over this many days


@dataclass(frozen=True)
class WorldConfig:
    """Everything the world is made from; the same config always gives the same data."""

    start: str = "2026-11-01"
    seed: int = 7
    users: int = 10_000
    quests: int = 600
    dim: int = 8
    impressions_per_day: int = 250_000
    requests_per_day: int = 2_000
    candidates: int = 8
    files_per_day: int = 2
    bad_row_rate: float = 0.001  # upstream glitches (null IDs, impossible values) the prep quarantines
    drift_per_day: float = 0.03  # radians of preference rotation per day
    affinity_scale: float = 1.6  # weight of the user·quest latent match in the true logit

    @property
    def start_date(self) -> dt.date:
        return dt.date.fromisoformat(self.start)


class World:
    """The entities of one world; `day(d)` draws a day of traffic from them."""

    def __init__(self, config: WorldConfig) -> None:
        self.config = config
        c = config
        rng = np.random.default_rng([c.seed, 0])
        scale = 1.0 / math.sqrt(math.sqrt(c.dim))  # makes u·q have unit variance
        centers = rng.normal(0.0, scale, (len(COUNTRIES), c.dim))

        self.user_id = _ids(rng, c.users)
        self.user_country = rng.choice(len(COUNTRIES), c.users, p=_zipf(len(COUNTRIES), 0.8))
        self.user_platform = rng.choice(len(PLATFORMS), c.users, p=[0.45, 0.35, 0.12, 0.08])
        self.user_joined = np.where(rng.random(c.users) < 0.7, 0, rng.integers(1, HORIZON_DAYS, c.users))
        self.user_age0 = rng.gamma(2.0, 300.0, c.users).astype(np.int64)  # account age at join, days
        self.user_level = np.clip(rng.gamma(2.0, 12.0, c.users), 1, 200).astype(np.int16)
        self.user_activity = rng.pareto(1.3, c.users) + 0.05
        self.user_bias = rng.normal(0.0, 0.4, c.users)
        mix = 0.5
        self.user_a = mix * centers[self.user_country] + math.sqrt(1 - mix**2) * rng.normal(0, scale, (c.users, c.dim))
        self.user_b = rng.normal(0.0, scale, (c.users, c.dim))

        self.quest_id = _ids(rng, c.quests)
        self.quest_category = rng.choice(len(CATEGORIES), c.quests, p=_zipf(len(CATEGORIES), 0.6))
        self.quest_reward = rng.choice(len(REWARDS), c.quests)
        self.quest_launch = np.where(rng.random(c.quests) < 0.5, 0, rng.integers(1, HORIZON_DAYS, c.quests))
        self.quest_life = rng.integers(21, 150, c.quests)
        self.quest_exposure = rng.lognormal(0.0, 1.0, c.quests)
        self.quest_bias = rng.normal(0.0, 0.5, c.quests)
        self.quest_a = rng.normal(0.0, scale, (c.quests, c.dim))
        self.quest_b = rng.normal(0.0, scale, (c.quests, c.dim))

        self.country_category = rng.normal(0.0, 0.35, (len(COUNTRIES), len(CATEGORIES)))
        self.platform_category = rng.normal(0.0, 0.25, (len(PLATFORMS), len(CATEGORIES)))

    # --- the truth ----------------------------------------------------------------------------

    def _latent(self, a: np.ndarray, b: np.ndarray, day: int) -> np.ndarray:
        angle = self.config.drift_per_day * day
        return a * math.cos(angle) + b * math.sin(angle)

    def probability(self, day: int, users: np.ndarray, quests: np.ndarray, ctx: dict[str, np.ndarray]) -> np.ndarray:
        """True participation probability of each (user, quest, context) on `day` (index arrays)."""
        u = self._latent(self.user_a[users], self.user_b[users], day)
        q = self._latent(self.quest_a[quests], self.quest_b[quests], day)
        category = self.quest_category[quests]
        logit = (
            -2.3
            + self.user_bias[users]
            + self.quest_bias[quests]
            + self.config.affinity_scale * np.einsum("ij,ij->i", u, q)
            + self.country_category[self.user_country[users], category]
            + self.platform_category[ctx["platform"], category]
            - 0.18 * (ctx["position"] - 1)
            + 0.25 * np.cos(2 * math.pi * (ctx["hour"] - 20) / 24)
            + 0.2 * (ctx["surface"] == 1)
        )
        return 1.0 / (1.0 + np.exp(-logit))

    # --- traffic ------------------------------------------------------------------------------

    def active(self, day: int) -> tuple[np.ndarray, np.ndarray]:
        users = np.flatnonzero(self.user_joined <= day)
        quests = np.flatnonzero((self.quest_launch <= day) & (day < self.quest_launch + self.quest_life))
        return users, quests

    def _context(self, rng: np.random.Generator, users: np.ndarray) -> dict[str, np.ndarray]:
        n = len(users)
        own = rng.random(n) < 0.7
        platform = np.where(own, self.user_platform[users], rng.integers(0, len(PLATFORMS), n))
        hour = (rng.normal(19.0, 4.5, n) % 24).astype(np.int64)
        return {
            "platform": platform,
            "surface": rng.integers(0, len(SURFACES), n),
            "position": rng.integers(1, MAX_POSITION + 1, n),
            "hour": hour,
        }

    def _sample_users(self, rng: np.random.Generator, day: int, n: int) -> np.ndarray:
        users, _ = self.active(day)
        weight = self.user_activity[users] * np.where(self.user_joined[users] == day, 3.0, 1.0)
        return rng.choice(users, n, p=weight / weight.sum())

    def _columns(self, day: int, users: np.ndarray, quests: np.ndarray, ctx: dict[str, np.ndarray]) -> dict[str, Any]:
        """The raw columns upstream joins onto every impression and request: IDs, user, quest, context."""
        return {
            "user_id": self.user_id[users],
            "quest_id": self.quest_id[quests],
            "country": np.array(COUNTRIES)[self.user_country[users]],
            "platform": np.array(PLATFORMS)[ctx["platform"]],
            "surface": np.array(SURFACES)[ctx["surface"]],
            "position": ctx["position"].astype(np.int8),
            "account_age_days": (self.user_age0[users] + day - self.user_joined[users]).astype(np.int32),
            "user_level": self.user_level[users],
            "quest_category": np.array(CATEGORIES)[self.quest_category[quests]],
            "quest_reward": np.array(REWARDS)[self.quest_reward[quests]],
        }

    def impressions(self, day: int) -> tuple[pa.Table, pa.Table]:
        """(raw impressions, their true probabilities) of `day`."""
        c = self.config
        rng = np.random.default_rng([c.seed, 1, day])
        _, quests_live = self.active(day)
        n = c.impressions_per_day
        users = self._sample_users(rng, day, n)
        exposure = self.quest_exposure[quests_live]
        quests = rng.choice(quests_live, n, p=exposure / exposure.sum())
        ctx = self._context(rng, users)
        p = self.probability(day, users, quests, ctx)
        label = (rng.random(n) < p).astype(np.int8)
        when = dt.datetime.combine(c.start_date + dt.timedelta(days=day), dt.time(), tzinfo=dt.UTC)
        seconds = ctx["hour"] * 3600 + rng.integers(0, 3600, n)
        impression_id = (np.int64(day + 1) << np.int64(40)) + np.arange(n, dtype=np.int64)
        columns: dict[str, Any] = {
            "impression_id": impression_id,
            "ts": pa.array([when + dt.timedelta(seconds=int(s)) for s in seconds], pa.timestamp("s", tz="UTC")),
            **self._columns(day, users, quests, ctx),
            "label": label,
        }
        user_ids = _inject_bad_rows(columns, rng, c.bad_row_rate)
        if user_ids is not None:
            columns["user_id"] = user_ids
        truth = pa.Table.from_pydict({"impression_id": impression_id, "p_true": p.astype(np.float64)})
        return pa.Table.from_pydict(columns), truth

    def requests(self, day: int) -> tuple[pa.Table, pa.Table]:
        """(the day's serving requests, one row per candidate; their true probabilities)."""
        c = self.config
        rng = np.random.default_rng([c.seed, 2, day])
        _, quests_live = self.active(day)
        k = min(c.candidates, len(quests_live))
        users = self._sample_users(rng, day, c.requests_per_day)
        candidates = np.stack([rng.choice(quests_live, k, replace=False) for _ in users])
        ctx = {key: np.repeat(v, k) for key, v in self._context(rng, users).items()}
        ctx["position"] = np.ones_like(ctx["position"])  # the slot being filled is the top one
        flat_users, flat_quests = np.repeat(users, k), candidates.ravel()
        p = self.probability(day, flat_users, flat_quests, ctx)
        request_id = (np.int64(day + 1) << np.int64(40)) + np.repeat(np.arange(len(users), dtype=np.int64), k)
        when = dt.datetime.combine(c.start_date + dt.timedelta(days=day), dt.time(), tzinfo=dt.UTC)
        table = pa.Table.from_pydict(
            {
                "request_id": request_id,
                "ts": pa.array([when + dt.timedelta(hours=int(h)) for h in ctx["hour"]], pa.timestamp("s", tz="UTC")),
                **self._columns(day, flat_users, flat_quests, ctx),
                "user_is_new": self.user_joined[flat_users] == day,
                "quest_is_new": self.quest_launch[flat_quests] == day,
            }
        )
        truth = pa.Table.from_pydict(
            {
                "request_id": request_id,
                "quest_id": self.quest_id[flat_quests],
                "p_true": p.astype(np.float64),
            }
        )
        return table, truth


def _ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """Distinct 63-bit IDs (snowflake-like: high cardinality, no meaning in their order)."""
    ids = np.unique(rng.integers(10**15, 2**62, int(n * 1.01) + 16, dtype=np.int64))
    rng.shuffle(ids)
    return ids[:n]


def _zipf(n: int, s: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** s
    return w / w.sum()


def _inject_bad_rows(columns: dict[str, Any], rng: np.random.Generator, rate: float) -> pa.Array | None:
    """Upstream glitches, in place: label 2, position 0, negative account age; returns the
    user_id column with nulls where a user was lost, or None when no row was touched."""
    n = len(columns["label"])
    bad = np.flatnonzero(rng.random(n) < rate)
    kinds = rng.integers(0, 4, len(bad))
    columns["label"][bad[kinds == 1]] = 2
    columns["position"][bad[kinds == 2]] = 0
    columns["account_age_days"][bad[kinds == 3]] = -1
    lost = np.zeros(n, dtype=bool)
    lost[bad[kinds == 0]] = True
    return pa.array(columns["user_id"], mask=lost) if lost.any() else None


# --- landing ----------------------------------------------------------------------------------


def _write_parquet(lake: Lake, path: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=REQUEST_ROW_GROUP)
    lake.write_bytes_atomic(path, buffer.getvalue())


# Landed files come in row groups of 65,536 rows (8,192 slates of 8 candidates), as a streaming writer flushes them.
REQUEST_ROW_GROUP = 65_536


def load_or_create(lake: Lake, config: WorldConfig | None) -> WorldConfig:
    """The lake's world config; a new lake takes `config` (or the defaults)."""
    path = lake.world_manifest()
    if lake.exists(path):
        stored = WorldConfig(**lake.read_json(path))
        if config is not None and config != stored:
            raise ValueError(
                f"{lake.root} already holds a world made with a different config ({stored}); "
                "generate into a new data root, or leave the world options unset to continue this one"
            )
        return stored
    config = config or WorldConfig()
    lake.write_json_atomic(path, asdict(config))
    return config


def land_day(lake: Lake, world: World, day: int) -> dict[str, Any]:
    """Land day `day`: truth first, then tomorrow's requests, the impression files, the marker last."""
    c = world.config
    date = c.start_date + dt.timedelta(days=day)
    impressions, truth = world.impressions(day)
    requests, request_truth = world.requests(day + 1)
    tomorrow = date + dt.timedelta(days=1)
    _write_parquet(lake, f"{lake.truth_dir('impressions', date)}/truth.parquet", truth)
    _write_parquet(lake, f"{lake.truth_dir('requests', tomorrow)}/truth.parquet", request_truth)
    _write_parquet(lake, f"{lake.requests_dir(tomorrow)}/requests.parquet", requests)
    directory = lake.impressions_dir(date)
    bounds = np.linspace(0, impressions.num_rows, c.files_per_day + 1).astype(int)
    for i in range(c.files_per_day):
        part = impressions.slice(bounds[i], bounds[i + 1] - bounds[i])
        _write_parquet(lake, f"{directory}/part-{i:05d}.parquet", part)
    lake.write_bytes_atomic(f"{directory}/{SUCCESS}", b"")
    return {"date": date_str(date), "impressions": impressions.num_rows, "requests": requests.num_rows}


def generate(lake: Lake, *, days: int, config: WorldConfig | None = None, first_day: int | None = None) -> list[dict]:
    """Land `days` days, continuing after the last landed day unless `first_day` is given."""
    config = load_or_create(lake, config)
    world = World(config)
    if first_day is None:
        landed = lake.landed_days()
        first_day = (landed[-1] - config.start_date).days + 1 if landed else 0
    return [land_day(lake, world, d) for d in range(first_day, first_day + days)]
