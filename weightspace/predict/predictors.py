"""Old home of the predictors; re-exports them (import from
:mod:`weightspace.predict` or the modules below instead).

* :mod:`weightspace.predict.base`: :class:`BasePredictor`, plumbing,
  architecture bookkeeping, :func:`register_predictor`, :func:`make_predictor`.
* :mod:`weightspace.predict.persistence`: the saved format, :func:`load_predictor`.
* :mod:`weightspace.predict.feature_models`: GBM, linear, mean.
* :mod:`weightspace.predict.metanet_models`: GMN / StatNN / FlatMLP / NFN.
"""

from weightspace.predict.base import (
    PREDICTOR_REGISTRY,
    ArchitectureMismatchError,
    BasePredictor,
    PredictorRefitWarning,
    make_predictor,
    predictor_classes,
    register_predictor,
)
from weightspace.predict.feature_models import GBMPredictor, LinearPredictor, MeanPredictor
from weightspace.predict.metanet_models import METANETWORKS, MetaNetPredictor
from weightspace.predict.persistence import FORMAT_NAME, FORMAT_VERSION, load_predictor

#: ``class name -> class`` (a view of :data:`PREDICTOR_REGISTRY`, for old imports)
PREDICTORS = predictor_classes()
#: names accepted by :func:`make_predictor` (the registry's kinds)
PREDICTOR_KINDS = tuple(PREDICTOR_REGISTRY)

__all__ = [
    "ArchitectureMismatchError",
    "PredictorRefitWarning",
    "BasePredictor",
    "GBMPredictor",
    "LinearPredictor",
    "MetaNetPredictor",
    "MeanPredictor",
    "PREDICTORS",
    "PREDICTOR_KINDS",
    "PREDICTOR_REGISTRY",
    "METANETWORKS",
    "make_predictor",
    "load_predictor",
    "register_predictor",
    "FORMAT_NAME",
    "FORMAT_VERSION",
]
