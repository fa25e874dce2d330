"""The XGBoost baseline's count features: from the training window only, out of fold for training rows,
exact after a round trip through the registry's bytes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from discord_ml.quests.ml.baseline import (
    COUNT_FEATURES,
    FEATURES,
    SMOOTHING,
    CountStats,
    scoring_matrix,
    training_matrix,
)
from discord_ml.quests.ml.features import CATEGORICAL, DENSE

BIG_ID = (1 << 62) + 12345  # 63-bit IDs must survive the round trip exactly


def _table(users: list[int], quests: list[int], labels: list[int]) -> pa.Table:
    n = len(users)
    columns = {"impression_id": pa.array(range(n), pa.int64()), "user_id": pa.array(users, pa.int64()),
               "quest_id": pa.array(quests, pa.int64()), "label": pa.array(labels, pa.float32())}  # fmt: skip
    columns |= {c: pa.array([1] * n, pa.int64()) for c in CATEGORICAL}
    columns |= {c: pa.array([0.5] * n, pa.float32()) for c in DENSE}
    return pa.table(columns)


def test_serving_rows_get_the_whole_windows_smoothed_rates() -> None:
    train = _table([BIG_ID] * 4 + [2] * 4, [10] * 8, [1, 1, 1, 0, 0, 0, 0, 0])
    stats = CountStats.from_bytes(CountStats.fit(train).to_bytes())
    assert stats.prior == 3 / 8
    x = scoring_matrix(_table([BIG_ID, 2, 999], [10, 10, 11], [0, 0, 0]).drop_columns(["label"]), stats)
    assert list(x.columns) == FEATURES
    assert x["user_impressions"].tolist() == [4, 4, 0]
    expected = [(3 + SMOOTHING * 3 / 8) / (4 + SMOOTHING), (0 + SMOOTHING * 3 / 8) / (4 + SMOOTHING), 3 / 8]
    np.testing.assert_allclose(x["user_ctr"].to_numpy(), expected)
    assert x["quest_impressions"].tolist() == [8, 8, 0]  # an unseen quest: no history, the prior rate


def test_a_training_rows_features_never_include_its_own_label() -> None:
    # One user, 400 impressions; clicks only on even impression IDs.
    n = 400
    train = _table([7] * n, [1] * n, [int(i % 2 == 0) for i in range(n)])
    x = training_matrix(train, CountStats.fit(train))
    counts = x[COUNT_FEATURES].to_numpy(dtype=np.float64)
    assert np.isfinite(counts).all()
    # In-sample rates would be exactly 0.5 for everyone; out of fold they come from the other ~300 rows.
    impressions = x["user_impressions"].to_numpy()
    assert ((impressions < n) & (impressions > n // 2)).all()
    # The rate is uninformative about the row's own label (no leakage): same mean for clicks and non-clicks.
    labels, ctr = train["label"].to_numpy(), x["user_ctr"].to_numpy()
    assert abs(ctr[labels == 1].mean() - ctr[labels == 0].mean()) < 0.02
