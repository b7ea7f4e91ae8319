"""Metrics for performance prediction: re-exported from
:mod:`weightspace.common.metrics` (the one metrics module, shared with
:mod:`weightspace.nn.train`). ``evaluate`` is a deprecated alias of
:func:`evaluate_predictions`.
"""

from __future__ import annotations

import warnings
from typing import Any

from weightspace.common import metrics as _common
from weightspace.common.metrics import *  # noqa: F403  (the names of _common.__all__)
from weightspace.common.metrics import MetricCI, evaluate_predictions

__all__ = [*_common.__all__, "evaluate"]


def evaluate(y_true: Any, y_pred: Any, *args: Any, **kwargs: Any) -> dict[str, MetricCI]:
    """Deprecated alias of :func:`evaluate_predictions` (the name collided with
    ``nn.train.evaluate``, ``merge.evaluate`` and ``zoo.train.evaluate``)."""
    warnings.warn("weightspace.predict.evaluate is deprecated; use weightspace.predict.evaluate_predictions",
                  DeprecationWarning, stacklevel=2)
    return evaluate_predictions(y_true, y_pred, *args, **kwargs)
