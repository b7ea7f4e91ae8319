"""Performance prediction from raw weights.

Features (:mod:`~weightspace.predict.features`): per-tensor weight
statistics, invariant to every spec permutation by construction. Predictors
with ``fit / predict / score / save``, one ``kind -> class`` registry
(:func:`register_predictor`, :func:`make_predictor`;
:mod:`~weightspace.predict.base`): gradient boosting and ridge on the
features (:mod:`~weightspace.predict.feature_models`) and wrappers around the
metanetworks of :mod:`weightspace.nn` (GMN, StatNN, FlatMLP, NFN;
:mod:`~weightspace.predict.metanet_models`); saved without pickle
(:mod:`~weightspace.predict.persistence`). Data (:func:`zoo_dataset`), splits
(random / by seed / out of distribution by a hyperparameter) and metrics
(Kendall τ, Spearman ρ, R² with bootstrap CIs; :mod:`weightspace.common`
holds the split, metrics and statistics shared with :mod:`weightspace.nn`).

Example::

    import zoo
    from weightspace.predict import zoo_dataset, random_split, make_predictor, evaluate_predictions

    ds = zoo_dataset(zoo.Zoo("runs/digits"), target="test_acc")
    tr, va, te = random_split(ds, (0.7, 0.15, 0.15), seed=0)
    gbm = make_predictor("gbm").fit(ds.subset(tr))
    res = evaluate_predictions(ds.y[te], gbm.predict(ds.subset(te)), groups=ds.groups[te])
    res["kendall_tau"]          # MetricCI(value, low, high, ...)
    gbm.save("predictors/gbm")  # load_predictor("predictors/gbm")
"""

from weightspace.predict.data import TARGET_ALIASES, WeightDataset, resolve_target, zoo_dataset
from weightspace.predict.features import (
    SPECTRAL_STATS,
    STATS,
    feature_names,
    layout_difference,
    network_layout,
    spectral_statistics,
    tensor_statistics,
    weight_features,
)
from weightspace.predict.metrics import (
    METRICS,
    MetricCI,
    bootstrap_ci,
    evaluate,
    evaluate_predictions,
    kendall_tau,
    mae,
    r2,
    rmse,
    spearman,
)
from weightspace.predict.base import (
    PREDICTOR_REGISTRY,
    ArchitectureMismatchError,
    BasePredictor,
    PredictorRefitWarning,
    make_predictor,
    register_predictor,
)
from weightspace.predict.feature_models import GBMPredictor, LinearPredictor, MeanPredictor
from weightspace.predict.metanet_models import METANETWORKS, MetaNetPredictor
from weightspace.predict.persistence import load_predictor
from weightspace.predict.predictors import PREDICTOR_KINDS
from weightspace.predict.splits import Split, hyperparameter_split, random_split, seed_split

__all__ = [
    "ArchitectureMismatchError",
    "BasePredictor",
    "GBMPredictor",
    "LinearPredictor",
    "MeanPredictor",
    "MetaNetPredictor",
    "METANETWORKS",
    "METRICS",
    "MetricCI",
    "PREDICTOR_KINDS",
    "PREDICTOR_REGISTRY",
    "PredictorRefitWarning",
    "SPECTRAL_STATS",
    "STATS",
    "Split",
    "TARGET_ALIASES",
    "WeightDataset",
    "bootstrap_ci",
    "evaluate",
    "evaluate_predictions",
    "feature_names",
    "hyperparameter_split",
    "kendall_tau",
    "layout_difference",
    "load_predictor",
    "mae",
    "make_predictor",
    "network_layout",
    "r2",
    "random_split",
    "register_predictor",
    "resolve_target",
    "rmse",
    "seed_split",
    "spearman",
    "spectral_statistics",
    "tensor_statistics",
    "weight_features",
    "zoo_dataset",
]

from weightspace.predict.workflow import FitReport, fit_zoo, lower_is_better, rank_checkpoints  # noqa: E402

__all__ += ["FitReport", "fit_zoo", "lower_is_better", "rank_checkpoints"]
