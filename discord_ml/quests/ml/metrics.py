"""Ranking quality metrics (numpy only): AUC, log loss, calibration, and the business metric,
expected participation when each request is shown the top-1 of its K candidates by score."""

from __future__ import annotations

import numpy as np


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (rank statistic, ties averaged)."""
    labels = labels.astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    p = np.clip(probabilities, 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def calibration(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> dict[str, object]:
    """Expected calibration error over equal-count bins, with the bins for a reliability plot."""
    order = np.argsort(probabilities)
    chunks = np.array_split(order, bins)
    predicted = np.array([probabilities[c].mean() for c in chunks if len(c)])
    observed = np.array([labels[c].mean() for c in chunks if len(c)])
    weights = np.array([len(c) for c in chunks if len(c)]) / len(labels)
    return {
        "ece": float(np.sum(weights * np.abs(predicted - observed))),
        "mean_predicted": float(probabilities.mean()),
        "mean_observed": float(labels.mean()),
        "bins_predicted": predicted.tolist(),
        "bins_observed": observed.tolist(),
    }


def roc_curve(labels: np.ndarray, scores: np.ndarray, points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at `points` score thresholds."""
    thresholds = np.quantile(scores, np.linspace(1, 0, points))
    positives, negatives = max(labels.sum(), 1), max((1 - labels).sum(), 1)
    tpr = np.array([(scores[labels == 1] >= t).sum() / positives for t in thresholds])
    fpr = np.array([(scores[labels == 0] >= t).sum() / negatives for t in thresholds])
    return np.concatenate([[0.0], fpr, [1.0]]), np.concatenate([[0.0], tpr, [1.0]])


def top1_participation(request_ids: np.ndarray, scores: np.ndarray, p_true: np.ndarray) -> float:
    """Mean true participation probability of the best-scored candidate of each request."""
    order = np.lexsort((-scores, request_ids))  # by request, best score first
    first = np.ones(len(order), dtype=bool)
    first[1:] = request_ids[order][1:] != request_ids[order][:-1]
    return float(p_true[order][first].mean())


def random_participation(request_ids: np.ndarray, p_true: np.ndarray) -> float:
    """Expected participation of a uniformly random candidate per request."""
    _, inverse, counts = np.unique(request_ids, return_inverse=True, return_counts=True)
    return float((np.bincount(inverse, weights=p_true) / counts).mean())
