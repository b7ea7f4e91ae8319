"""The one kind -> class table of predictors (``register_predictor``) and the
old names the split of ``predictors.py`` must keep importable."""

import numpy as np
import pytest

from weightspace.predict import PREDICTOR_KINDS, PREDICTOR_REGISTRY, BasePredictor, make_predictor, register_predictor
from weightspace.predict.feature_models import GBMPredictor, LinearPredictor, MeanPredictor
from weightspace.predict.metanet_models import METANETWORKS, MetaNetPredictor


def test_registry_is_the_one_table_of_kinds():
    assert PREDICTOR_KINDS == ("gbm", "linear", "mean", "gmn", "statnn", "flatmlp", "nfn")
    assert tuple(PREDICTOR_REGISTRY) == PREDICTOR_KINDS
    assert PREDICTOR_REGISTRY["gbm"] is GBMPredictor and PREDICTOR_REGISTRY["linear"] is LinearPredictor
    assert PREDICTOR_REGISTRY["mean"] is MeanPredictor
    assert all(PREDICTOR_REGISTRY[k] is MetaNetPredictor for k in METANETWORKS)
    for kind in PREDICTOR_KINDS:
        p = make_predictor(kind)
        assert isinstance(p, PREDICTOR_REGISTRY[kind]) and p.kind == kind


def test_old_predictors_module_reexports_the_same_objects():
    from weightspace.predict import predictors as old

    assert old.GBMPredictor is GBMPredictor and old.MetaNetPredictor is MetaNetPredictor
    assert old.PREDICTORS == {c.__name__: c for c in PREDICTOR_REGISTRY.values()}
    assert old.make_predictor is make_predictor
    assert old.load_predictor.__module__ == "weightspace.predict.persistence"
    assert old.FORMAT_NAME == "weightspace-predictor" and old.FORMAT_VERSION == 1


def test_register_predictor_adds_a_kind_and_refuses_a_taken_one(monkeypatch):
    monkeypatch.setattr("weightspace.predict.base.PREDICTOR_REGISTRY", dict(PREDICTOR_REGISTRY))
    from weightspace.predict import base

    @register_predictor("const")
    class ConstPredictor(BasePredictor):
        param_schema: dict = {}

        def fit(self, X, y=None):
            nets, y, ds = base._unpack_fit(X, y)
            return self._fitted(nets, ds)

        def predict(self, X):
            return np.zeros(len(self._networks(X)))

    assert isinstance(base.make_predictor("const"), ConstPredictor)
    assert "const" not in PREDICTOR_REGISTRY  # the module table was patched, not the real one
    with pytest.raises(ValueError, match="already registered"):
        register_predictor("gbm")(ConstPredictor)
    with pytest.raises(ValueError, match="unknown predictor 'nope'"):
        make_predictor("nope")
