"""Metrics for performance prediction: re-exported from
:mod:`weightspace.common.metrics` (the one metrics module, shared with
:mod:`weightspace.nn.train`). ``evaluate`` is a deprecated alias of
:func:`evaluate_predictions`.
"""

from __future__ import annotations

import warnings
from typing import Any

from weightspace.common.metrics import (
    METRICS,
    MetricCI,
    bootstrap_ci,
    classification_metrics,
    evaluate_predictions,
    kendall_tau,
    mae,
    r2,
    regression_metrics,
    rmse,
    spearman,
    summarize,
)

__all__ = [
    "METRICS",
    "MetricCI",
    "kendall_tau",
    "spearman",
    "r2",
    "rmse",
    "mae",
    "bootstrap_ci",
    "evaluate_predictions",
    "evaluate",
    "summarize",
    "regression_metrics",
    "classification_metrics",
]


def evaluate(y_true: Any, y_pred: Any, *args: Any, **kwargs: Any) -> dict[str, MetricCI]:
    """Deprecated alias of :func:`evaluate_predictions` (the name collided with
    ``nn.train.evaluate``, ``merge.evaluate`` and ``zoo.train.evaluate``)."""
    warnings.warn("weightspace.predict.evaluate is deprecated; use weightspace.predict.evaluate_predictions",
                  DeprecationWarning, stacklevel=2)
    return evaluate_predictions(y_true, y_pred, *args, **kwargs)
