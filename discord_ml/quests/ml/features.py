"""The raw impressions contract, row validation and feature engineering (pure, on Arrow tables).

Shared by prep (Ray Data `map_batches`), training, eval and batch inference, so that a request is
featurized exactly as the impressions the model learned from. IDs become hashed buckets: a user or
quest never seen in training still gets a (shared) embedding row, so every request is scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from discord_ml.quests.ml.schema import (
    CATEGORIES,
    COUNTRIES,
    LABEL,
    MAX_POSITION,
    PLATFORMS,
    REQUIRED,
    REWARDS,
    SURFACES,
)

REASON = "quarantine_reason"

# Index 0 of every vocabulary is "other": unseen values still get a feature, never an error.
VOCABULARIES: dict[str, tuple[str, ...]] = {
    "country": COUNTRIES,
    "platform": PLATFORMS,
    "surface": SURFACES,
    "quest_category": CATEGORIES,
    "quest_reward": REWARDS,
}
CATEGORICAL = [f"{name}_idx" for name in VOCABULARIES]
DENSE = ["position_f", "log_account_age", "log_user_level", "hour_sin", "hour_cos"]


@dataclass(frozen=True)
class FeatureSpec:
    """Sizes of the hashed ID spaces; part of a model's config so serving hashes the same way."""

    user_buckets: int = 1 << 16
    quest_buckets: int = 1 << 12

    def cardinalities(self) -> list[int]:
        """Rows of each sparse feature's embedding table: user, quest, then each vocabulary."""
        return [self.user_buckets, self.quest_buckets, *(len(v) + 1 for v in VOCABULARIES.values())]


SPARSE = ["user_bucket", "quest_bucket", *CATEGORICAL]


def schema_problem(schema: pa.Schema, *, with_label: bool = True) -> str | None:
    """Why a file with `schema` cannot be read as impressions, or None."""
    required = {**REQUIRED, LABEL: "integer"} if with_label else REQUIRED
    missing = [name for name in required if name not in schema.names]
    if missing:
        return f"missing column(s) {', '.join(missing)}"
    checks = {
        "timestamp": pa.types.is_timestamp,
        "integer": pa.types.is_integer,
        "string": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
    }
    for name, family in required.items():
        kind = schema.field(name).type
        if not checks[family](kind):
            return f"column {name} has type {kind}, expected {family}"
    return None


def row_reasons(table: pa.Table, *, with_label: bool = True) -> pa.Array:
    """Per row, the first rule it breaks (a string), or null for a valid row."""
    rules: list[tuple[pa.Array, str]] = [
        (pc.is_null(table["ts"]), "ts is null"),
        (pc.is_null(table["user_id"]), "user_id is null"),
        (pc.is_null(table["quest_id"]), "quest_id is null"),
        (pc.invert(pc.is_in(table["platform"], pa.array(PLATFORMS))), "platform not in " + "|".join(PLATFORMS)),
        (
            pc.or_kleene(
                pc.less(table["position"], pa.scalar(1)), pc.greater(table["position"], pa.scalar(MAX_POSITION))
            ),
            f"position outside 1..{MAX_POSITION}",
        ),
        (pc.less(table["account_age_days"], pa.scalar(0)), "account_age_days < 0"),
    ]
    if with_label:
        rules.append(
            (pc.invert(pc.is_in(table[LABEL], pa.array([0, 1], table.schema.field(LABEL).type))), "label not in 0|1")
        )
    reasons = pa.nulls(table.num_rows, pa.string())
    for broken, reason in reversed(rules):  # the first rule wins
        reasons = pc.if_else(pc.fill_null(broken, pa.scalar(True)), pa.scalar(reason), reasons)
    return reasons


def hash_bucket(ids: np.ndarray, buckets: int, salt: int) -> np.ndarray:
    """A stable, well-mixed bucket per 64-bit ID (splitmix64 finalizer)."""
    x = ids.astype(np.uint64) ^ np.uint64(salt)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x % np.uint64(buckets)).astype(np.int64)


def _vocab_index(values: pa.ChunkedArray | pa.Array, vocabulary: tuple[str, ...]) -> np.ndarray:
    index: Any = pc.fill_null(pc.add(pc.index_in(values, value_set=pa.array(vocabulary)), pa.scalar(1)), pa.scalar(0))
    return index.to_numpy(zero_copy_only=False).astype(np.int64)


def featurize(table: pa.Table, spec: FeatureSpec) -> pa.Table:
    """Model features of valid rows; keeps the IDs (and label, when present) for joins and eval."""
    user_id = table["user_id"].to_numpy(zero_copy_only=False).astype(np.int64)
    quest_id = table["quest_id"].to_numpy(zero_copy_only=False).astype(np.int64)
    hour = pc.hour(table["ts"]).to_numpy(zero_copy_only=False).astype(np.float64)
    age = table["account_age_days"].to_numpy(zero_copy_only=False).astype(np.float64)
    level = table["user_level"].to_numpy(zero_copy_only=False).astype(np.float64)
    position = table["position"].to_numpy(zero_copy_only=False).astype(np.float64)
    columns: dict[str, Any] = {
        "user_id": user_id,
        "quest_id": quest_id,
        "user_bucket": hash_bucket(user_id, spec.user_buckets, salt=0x5EED_0001),
        "quest_bucket": hash_bucket(quest_id, spec.quest_buckets, salt=0x5EED_0002),
    }
    for name, vocabulary in VOCABULARIES.items():
        columns[f"{name}_idx"] = _vocab_index(table[name], vocabulary)
    columns.update(
        {
            "position_f": ((position - 1) / (MAX_POSITION - 1)).astype(np.float32),
            "log_account_age": (np.log1p(np.maximum(age, 0)) / 8.0).astype(np.float32),
            "log_user_level": (np.log1p(np.maximum(level, 0)) / 5.0).astype(np.float32),
            "hour_sin": np.sin(2 * np.pi * hour / 24).astype(np.float32),
            "hour_cos": np.cos(2 * np.pi * hour / 24).astype(np.float32),
        }
    )
    for passthrough in ("impression_id", "request_id"):
        if passthrough in table.column_names:
            columns[passthrough] = table[passthrough]
    if LABEL in table.column_names:
        columns[LABEL] = table[LABEL].to_numpy(zero_copy_only=False).astype(np.float32)
    return pa.Table.from_pydict(columns)


def split_valid(table: pa.Table, *, with_label: bool = True) -> tuple[pa.Table, pa.Table]:
    """(valid rows, invalid rows with a `quarantine_reason` column)."""
    reasons = row_reasons(table, with_label=with_label)
    bad = pc.is_valid(reasons)
    return table.filter(pc.invert(bad)), table.filter(bad).append_column(REASON, pc.drop_null(reasons))


def matrices(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(sparse int64 [n, len(SPARSE)], dense float32 [n, len(DENSE)]) of a featurized table."""
    sparse = np.stack([table[c].to_numpy(zero_copy_only=False) for c in SPARSE], axis=1).astype(np.int64)
    dense = np.stack([table[c].to_numpy(zero_copy_only=False) for c in DENSE], axis=1).astype(np.float32)
    return sparse, dense
