"""The XGBoost baseline's features, built the way a production GBDT for ranking is fed.

IDs never reach the trees as numbers. Instead each row carries how often its user, its quest and its
user × quest-category pair were shown in the training window, and their smoothed click rates. The
statistics come from the training days only (never the validation or test day). A training row gets
them out of fold, from the other folds of the window, so that its own label is not in its
features; validation, test and serving rows get the whole window's. Small vocabularies are native
categoricals.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa

from discord_ml.quests.ml.features import CATEGORICAL, DENSE, FeatureSpec, hash_bucket

GROUPS: dict[str, list[str]] = {
    "user": ["user_id"],
    "quest": ["quest_id"],
    "user_category": ["user_id", "quest_category_idx"],
}
FOLDS = 4
SMOOTHING = 20.0  # pseudo-impressions at the window's click rate
COUNT_FEATURES = [f"{name}_{kind}" for name in GROUPS for kind in ("impressions", "ctr")]
FEATURES = [*COUNT_FEATURES, *CATEGORICAL, *DENSE]
VOCABULARY_SIZES = FeatureSpec().cardinalities()[2:]


@dataclass(frozen=True)
class CountStats:
    """Impressions and clicks per group over the training window."""

    prior: float
    tables: dict[str, pd.DataFrame]  # group -> key columns + impressions + clicks

    @classmethod
    def fit(cls, train: pa.Table) -> CountStats:
        """Impressions and clicks per value of each count feature in `train`, and the overall click rate."""
        frame = _frame(train, with_label=True)
        prior = float(np.mean(frame["label"].to_numpy()))
        return cls(prior, {name: _counts(frame, keys) for name, keys in GROUPS.items()})

    def to_bytes(self) -> bytes:
        """An `.npz` of plain arrays: 63-bit IDs stay exact (no float columns), and loading runs no code."""
        arrays = {f"{name}.{column}": table[column].to_numpy() for name, table in self.tables.items()
                  for column in table.columns}  # fmt: skip
        sink = io.BytesIO()
        save: Any = np.savez_compressed  # its stubs take **arrays for its keyword flags
        save(sink, prior=np.array(self.prior), **arrays)
        return sink.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> CountStats:
        """Counts saved with a model version (`to_bytes`)."""
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            tables = {
                name: pd.DataFrame({c: arrays[f"{name}.{c}"] for c in [*keys, "impressions", "clicks"]})
                for name, keys in GROUPS.items()
            }
            return cls(float(arrays["prior"]), tables)


def _frame(table: pa.Table, *, with_label: bool) -> pd.DataFrame:
    columns = ["user_id", "quest_id", *CATEGORICAL, *DENSE, *(["label"] if with_label else [])]
    return table.select(columns).to_pandas()


def _counts(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    grouped = frame.groupby(keys, sort=False)["label"].agg(impressions="size", clicks="sum")
    return grouped.reset_index()


def _with_counts(frame: pd.DataFrame, stats: dict[str, pd.DataFrame], prior: float) -> pd.DataFrame:
    out = pd.DataFrame(index=frame.index)
    for name, keys in GROUPS.items():
        joined = frame[keys].merge(stats[name], on=keys, how="left")  # a left merge keeps the row order
        impressions = joined["impressions"].fillna(0).to_numpy(dtype=np.float64)
        clicks = joined["clicks"].fillna(0).to_numpy(dtype=np.float64)
        out[f"{name}_impressions"] = impressions
        out[f"{name}_ctr"] = (clicks + SMOOTHING * prior) / (impressions + SMOOTHING)
    return out


def _assemble(frame: pd.DataFrame, counts: pd.DataFrame) -> pd.DataFrame:
    x = counts.copy()
    for column, size in zip(CATEGORICAL, VOCABULARY_SIZES, strict=True):
        # Native categorical splits over the whole vocabulary, so a code means the same in every frame.
        x[column] = pd.Categorical(frame[column].to_numpy(), categories=range(size))
    for column in DENSE:
        x[column] = frame[column].to_numpy()
    return cast(pd.DataFrame, x[FEATURES])


def training_matrix(train: pa.Table, stats: CountStats) -> pd.DataFrame:
    """Features of the training rows, each from the folds it is not in."""
    frame = _frame(train, with_label=True)
    fold = hash_bucket(train["impression_id"].to_numpy(zero_copy_only=False), FOLDS, salt=0xF01D)
    counts = pd.DataFrame(index=frame.index, columns=COUNT_FEATURES, dtype=np.float64)
    for k in range(FOLDS):
        inside = fold == k
        others = cast(pd.DataFrame, frame.loc[~inside])
        fold_stats = {name: _counts(others, keys) for name, keys in GROUPS.items()}
        counts.loc[inside, :] = _with_counts(cast(pd.DataFrame, frame.loc[inside]), fold_stats, stats.prior).to_numpy()
    return _assemble(frame, counts.astype(np.float64))


def scoring_matrix(table: pa.Table, stats: CountStats) -> pd.DataFrame:
    """Features of validation, test or serving rows, from the whole training window."""
    frame = _frame(table, with_label=False)
    return _assemble(frame, _with_counts(frame, stats.tables, stats.prior))
