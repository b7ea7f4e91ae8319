"""The one metrics module: Kendall τ, Spearman ρ, R², RMSE, MAE (checked,
with bootstrap confidence intervals, ``scipy.stats``) for performance
prediction, and the per-batch summaries :func:`regression_metrics` /
:func:`classification_metrics` that :mod:`weightspace.nn.train` reports.
:mod:`weightspace.predict.metrics` re-exports it.

The bootstrap can resample *groups* instead of rows: when a test set holds
several checkpoints of each network, those rows are correlated, and
resampling whole networks (``groups=member_ids``) gives an honest interval.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

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
    "summarize",
    "regression_metrics",
    "classification_metrics",
]


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must have the same length, got {t.size} and {p.size}")
    if t.size < 2:
        raise ValueError(f"need at least 2 samples, got {t.size}")
    if not (np.isfinite(t).all() and np.isfinite(p).all()):
        raise ValueError("y_true and y_pred must be finite")
    return t, p


def _constant(t: np.ndarray, p: np.ndarray) -> bool:
    """Rank correlation is undefined (NaN, documented) when either side is constant."""
    return bool((t == t[0]).all() or (p == p[0]).all())


def _rank_correlation(fn: Callable, a: np.ndarray, b: np.ndarray) -> float:
    """``fn(a, b).statistic`` (a ``scipy.stats`` rank correlation); NaN,
    without a warning, for fewer than 2 samples or a constant side."""
    if a.size < 2 or _constant(a, b):
        return math.nan
    import warnings

    with warnings.catch_warnings():  # non-finite input: NaN, not a warning
        warnings.simplefilter("ignore")
        return float(fn(a, b).statistic)


def kendall_tau(y_true, y_pred) -> float:
    """Kendall's τ-b between targets ``[n]`` and predictions ``[n]``
    (``scipy.stats.kendalltau``; NaN if either is constant)."""
    from scipy.stats import kendalltau

    return _rank_correlation(kendalltau, *_pair(y_true, y_pred))


def spearman(y_true, y_pred) -> float:
    """Spearman's ρ between targets ``[n]`` and predictions ``[n]``
    (``scipy.stats.spearmanr``; NaN if either is constant)."""
    from scipy.stats import spearmanr

    return _rank_correlation(spearmanr, *_pair(y_true, y_pred))


def _r2(t: np.ndarray, p: np.ndarray) -> float:
    ss_tot = float(((t - t.mean()) ** 2).sum())
    if ss_tot == 0:
        return math.nan
    return 1.0 - float(((t - p) ** 2).sum()) / ss_tot


def r2(y_true, y_pred) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot`` (NaN if the
    targets are constant). Negative when worse than predicting the mean."""
    return _r2(*_pair(y_true, y_pred))


def rmse(y_true, y_pred) -> float:
    """Root mean squared error."""
    t, p = _pair(y_true, y_pred)
    return float(np.sqrt(((t - p) ** 2).mean()))


def mae(y_true, y_pred) -> float:
    """Mean absolute error."""
    t, p = _pair(y_true, y_pred)
    return float(np.abs(t - p).mean())


#: name -> ``f(y_true, y_pred) -> float``
METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "kendall_tau": kendall_tau,
    "spearman": spearman,
    "r2": r2,
    "rmse": rmse,
    "mae": mae,
}


@dataclass(frozen=True)
class MetricCI:
    """A metric with its bootstrap confidence interval.

    Attributes:
        value: the metric on the full sample.
        low, high: the ``confidence`` interval (NaN if the bootstrap failed,
            e.g. every resample was degenerate).
        confidence: e.g. 0.95.
        n_resamples: bootstrap resamples.
        n: rows evaluated; ``n_groups``: units resampled (rows or groups).
    """

    value: float
    low: float
    high: float
    confidence: float
    n_resamples: int
    n: int
    n_groups: int

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _metric_fn(metric: str | Callable) -> Callable:
    if callable(metric):
        return metric
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {sorted(METRICS)}")
    return METRICS[metric]


def bootstrap_ci(
    y_true,
    y_pred,
    metric: str | Callable = "kendall_tau",
    *,
    groups: Sequence | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    method: str = "percentile",
    seed: int = 0,
) -> MetricCI:
    """A metric and its bootstrap confidence interval (``scipy.stats.bootstrap``).

    Args:
        y_true, y_pred: ``[n]`` targets and predictions.
        metric: a name in :data:`METRICS` or ``f(y_true, y_pred) -> float``.
        groups: optional ``[n]`` group labels (e.g. member ids); whole
            groups are resampled with replacement. Default: rows.
        n_resamples: bootstrap resamples.
        confidence: confidence level of the interval.
        method: ``"percentile"`` (default), ``"basic"`` or ``"BCa"``
            (BCa costs one extra evaluation per group). With
            ``"percentile"``, resamples whose metric is undefined (NaN, e.g.
            constant targets) are dropped as long as at least half are
            finite; otherwise the interval is NaN.
        seed: resampling seed.

    Returns:
        :class:`MetricCI`.
    """
    from scipy.stats import bootstrap

    fn = _metric_fn(metric)
    t, p = _pair(y_true, y_pred)
    if groups is None:
        rows = [np.array([i]) for i in range(t.size)]
    else:
        g = np.asarray(groups)
        if g.shape[0] != t.size:
            raise ValueError(f"groups has {g.shape[0]} entries for {t.size} samples")
        _, inv = np.unique(g, return_inverse=True)
        rows = [np.flatnonzero(inv == k) for k in range(inv.max() + 1)]
    value = float(fn(t, p))
    G = len(rows)

    def stat(gidx: np.ndarray) -> float:
        idx = np.concatenate([rows[int(i)] for i in gidx])
        with np.errstate(all="ignore"):
            try:
                return float(fn(t[idx], p[idx]))
            except ValueError:
                return math.nan

    low = high = math.nan
    if G >= 2 and n_resamples > 0:
        import warnings

        with warnings.catch_warnings():
            # degenerate resamples (constant targets) give NaN and a warning; the CI is then NaN
            warnings.simplefilter("ignore")
            res = bootstrap(
                (np.arange(G),), stat, n_resamples=int(n_resamples), vectorized=False,
                confidence_level=float(confidence), method=method, rng=np.random.default_rng(int(seed)),
            )
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        dist = np.asarray(res.bootstrap_distribution, dtype=np.float64)
        finite = dist[np.isfinite(dist)]
        if method == "percentile" and finite.size < dist.size and finite.size >= 0.5 * dist.size:
            # a few degenerate resamples (e.g. all-constant targets of a tiny
            # test set) make scipy's interval NaN; drop them, keep the rest
            a = (1.0 - float(confidence)) / 2.0
            low, high = (float(v) for v in np.quantile(finite, [a, 1.0 - a]))
    return MetricCI(value, low, high, float(confidence), int(n_resamples), int(t.size), int(G))


def evaluate_predictions(
    y_true,
    y_pred,
    metrics: Sequence[str] = ("kendall_tau", "spearman", "r2"),
    *,
    groups: Sequence | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    method: str = "percentile",
    seed: int = 0,
) -> dict[str, MetricCI]:
    """Several metrics with bootstrap CIs (see :func:`bootstrap_ci`).

    Returns:
        ``{metric name: MetricCI}``.
    """
    return {
        m: bootstrap_ci(y_true, y_pred, m, groups=groups, n_resamples=n_resamples,
                        confidence=confidence, method=method, seed=seed)
        for m in metrics
    }


def summarize(results: Mapping[str, MetricCI]) -> dict[str, dict]:
    """``{name: MetricCI.to_dict()}`` (JSON-ready)."""
    return {k: v.to_dict() for k, v in results.items()}


def regression_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """MSE, RMSE, MAE, R², Kendall τ and Spearman ρ of the first output
    column of ``pred`` ``[n, d]`` against ``target`` ``[n, d]`` (or ``[n]``).
    Unlike the checked metrics above, never raises: fewer than 2 samples or
    a constant side give NaN correlations."""
    from scipy.stats import kendalltau, spearmanr

    p = np.asarray(pred, dtype=np.float64).reshape(len(pred), -1)[:, 0]
    y = np.asarray(target, dtype=np.float64).reshape(len(target), -1)[:, 0]
    mse = float(np.mean((p - y) ** 2))
    return {"mse": mse, "rmse": math.sqrt(mse), "mae": float(np.mean(np.abs(p - y))), "r2": _r2(y, p),
            "kendall_tau": _rank_correlation(kendalltau, p, y), "spearman": _rank_correlation(spearmanr, p, y),
            "n": int(len(p))}


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy and cross-entropy of ``logits`` ``[n, classes]`` against integer ``labels`` ``[n]``."""
    import torch

    lg = torch.as_tensor(np.asarray(logits, dtype=np.float32))
    lb = torch.as_tensor(np.asarray(labels)).long()
    return {"accuracy": float((lg.argmax(1) == lb).float().mean()),
            "cross_entropy": float(torch.nn.functional.cross_entropy(lg, lb)), "n": int(len(lb))}
