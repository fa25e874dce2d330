"""Metrics against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from discord_ml.quests.ml.metrics import auc, calibration, log_loss, random_participation, top1_participation


def test_auc_matches_pairwise_counting_with_ties() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = rng.integers(0, 10, 200).astype(float)  # many ties
    pairs = [(p, n) for p, n in itertools.product(scores[labels == 1], scores[labels == 0])]
    expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert auc(labels, scores) == pytest.approx(expected)


def test_log_loss_and_calibration() -> None:
    labels = np.array([0, 0, 1, 1])
    assert log_loss(labels, np.array([0.5] * 4)) == pytest.approx(np.log(2))
    assert calibration(labels, np.array([0.0, 0.0, 1.0, 1.0]), bins=2)["ece"] == pytest.approx(0.0)


def test_top1_participation_picks_the_best_scored_candidate() -> None:
    request = np.array([1, 1, 1, 2, 2])
    p_true = np.array([0.1, 0.5, 0.2, 0.3, 0.4])
    scores = np.array([0.9, 0.1, 0.0, 0.0, 1.0])  # picks 0.1 for request 1, 0.4 for request 2
    assert top1_participation(request, scores, p_true) == pytest.approx((0.1 + 0.4) / 2)
    assert top1_participation(request, p_true, p_true) == pytest.approx((0.5 + 0.4) / 2)
    assert random_participation(request, p_true) == pytest.approx((0.8 / 3 + 0.35) / 2)
