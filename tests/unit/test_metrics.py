"""Metrics against hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest

from feedrank.evaluation.metrics import (
    classification_metrics,
    expected_calibration_error,
    reliability_curve,
)


def test_ece_by_hand() -> None:
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.05, 0.15, 0.95, 0.85, 0.9])
    # bins: [0,.1): p .05 y 0 -> |0-.05| ; [.1,.2): p .15 y 1 -> .85 ; [.8,.9): p .85 y 0 -> .85 ;
    # [.9,1]: p .95,.9 y 1,1 -> |2 - 1.85| = .15 ; total / 5
    assert expected_calibration_error(y, p) == pytest.approx((0.05 + 0.85 + 0.85 + 0.15) / 5)
    assert expected_calibration_error(np.array([1, 0]), np.array([1.0, 0.0])) == 0.0


def test_reliability_curve_counts() -> None:
    curve = reliability_curve(np.array([0, 1, 1]), np.array([0.1, 0.12, 0.9]))
    assert [c["count"] for c in curve] == [2, 1]
    assert curve[0]["observed"] == pytest.approx(0.5) and curve[0]["predicted"] == pytest.approx(
        0.11
    )


def test_classification_metrics_by_hand() -> None:
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.6, 0.4, 0.1])
    m = classification_metrics(y, p)
    assert m["accuracy"] == pytest.approx(0.5)  # predictions 1,1,0,0
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(0.5)
    assert m["roc_auc"] == pytest.approx(0.75)  # 3 of 4 positive/negative pairs ordered right
    expected_ll = -np.mean(np.log([0.9, 0.4, 0.4, 0.9]))
    assert m["log_loss"] == pytest.approx(expected_ll)
