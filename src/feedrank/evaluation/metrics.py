"""Metrics of predicted probabilities against binary labels. Every function takes arrays and
returns a float, so each can be checked against a hand-computed example."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss as _log_loss
from sklearn.metrics import roc_auc_score


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Sum over equal-width probability bins of (bin share) x |mean label - mean prediction|."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    counts = np.bincount(idx, minlength=bins)
    sum_y = np.bincount(idx, weights=y, minlength=bins)
    sum_p = np.bincount(idx, weights=p, minlength=bins)
    nz = counts > 0
    return float(np.sum(np.abs(sum_y[nz] - sum_p[nz])) / len(y))


def reliability_curve(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Per non-empty bin: mean prediction, observed rate, count."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        if m.any():
            out.append(
                {
                    "predicted": float(p[m].mean()),
                    "observed": float(y[m].mean()),
                    "count": int(m.sum()),
                }
            )
    return out


def classification_metrics(
    y: np.ndarray, p: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    y = np.asarray(y, dtype=int)
    p = np.clip(np.asarray(p, dtype=float), 1e-15, 1 - 1e-15)
    pred = p >= threshold
    tp = float(np.sum(pred & (y == 1)))
    both = len(np.unique(y)) == 2
    return {
        "examples": float(len(y)),
        "positive_rate": float(y.mean()) if len(y) else float("nan"),
        "accuracy": float(np.mean(pred == (y == 1))),
        "precision": tp / pred.sum() if pred.sum() else 0.0,
        "recall": tp / y.sum() if y.sum() else 0.0,
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "log_loss": float(_log_loss(y, p, labels=[0, 1])),
        "ece": expected_calibration_error(y, p),
    }
